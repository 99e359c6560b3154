"""A short camera clip (a cat, a parrot, a surface with defects), and live cameras of it on loopback:
HTTP MJPEG (ffmpeg encoding) and RTSP (VLC).

Shared by the video-source, camera-bridge and gRPC video tests, the demos and the benches. The photos
are models/' samples (`make models` writes them, no fixtures folder needed); the tests pass the
fixtures' (tests/support/clips.py):

    scenes = make_clip(Path("clip.mp4"))          # cat, then parrot, then a surface with defects
    scenes = make_clip(path, photos=ScenePhotos(cat=..., parrot=...))  # other photos
    scenes = make_clip(path, noise=2.0)           # ... with fresh sensor noise on every frame
    with http_mjpeg_server(Path("clip.mp4")) as camera:
        camera.url                                # http://127.0.0.1:PORT/cam, the clip looped in real time
        camera.stop(); camera.start()             # the camera dies and comes back (same URL)
    with rtsp_server(Path("clip.mp4")) as camera:   # VLC (Debian vlc-bin): rtsp://127.0.0.1:PORT/cam
        ...

The clip is H.264 (yuv420p, near-lossless CRF) in MP4: what IP cameras and recorders give, readable by
ffmpeg and OpenCV's VideoCapture, streamable over RTSP, and fine enough that `inference` counts the
same defects on its decoded frames as on the source image (tests/integration/test_video_clip.py).
ffmpeg comes from Debian through tools/system_deps.sh; without it every call fails with the reason.
"""
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from tools.free_port import free_port
from tools.harness import REPO_ROOT, ensure_debian_packages
from tools.synthetic_surface import surface_with_truth

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ScenePhotos:
    """The photos of the clip's first two scenes: a cat (top-1 a domestic cat) and a parrot (top-1
    89:macaw)."""
    cat: Path
    parrot: Path


# Written by `make models` (tools/build_models.py), from the fixtures or downloaded.
MODEL_PHOTOS = ScenePhotos(cat=REPO_ROOT / "models" / "sample_cat_720p.jpg",
                           parrot=REPO_ROOT / "models" / "sample_parrot.jpg")
# ImageNet's domestic cats (labels file index:name): 282 tabby, 283 tiger cat, 284 Persian,
# 285 Siamese, 286 Egyptian. A cat frame may swap among them; none of them is a parrot or a surface.
CAT_CLASSES = frozenset(range(282, 287))
# The surface: 3 defects, a seed whose defects inference.py finds exactly on the source image and on
# every decoded frame of the clip (checked by tests/integration/test_video_clip.py).
SURFACE_DEFECTS = 3
SURFACE_SEED = 4103
CLIP_CRF = 10  # x264 constant quality; 0 is lossless, 10 keeps the surface's texture and scratches


@dataclass
class Scene:
    """A stretch of the clip: frames with start_s <= t < end_s (clip time, seconds) show one thing.

    expect: for "cat" and "parrot" the top-1 label of the source image ("286:Egyptian cat",
    "89:macaw"); for "surface" the number of defects. Use accepts() to check a result: a cat frame
    may give any domestic cat class (CAT_CLASSES)."""
    name: str
    start_s: float
    end_s: float
    expect: str | int

    def accepts(self, result: str | int) -> bool:
        """Whether a label (cat, parrot) or a defect count (surface) is right for this scene."""
        if self.name == "cat":
            return isinstance(result, str) and label_index(result) in CAT_CLASSES
        return result == self.expect

    def contains(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


def label_index(label: str) -> int | None:
    """The class index of an `index:name` label, None if it has none."""
    head, _, _ = label.partition(":")
    return int(head) if head.isdigit() else None


def scene_runs(shown: list[str]) -> list[tuple[str, int]]:
    """[("cat", 6), ("parrot", 6), ...]: consecutive results that show the same scene, counted."""
    return [(scene, len(list(frames))) for scene, frames in itertools.groupby(shown)]


def scene_at(scenes: list[Scene], t: float) -> Scene | None:
    """The scene shown at clip time t (looping clips: pass t modulo the clip's length)."""
    return next((s for s in scenes if s.contains(t)), None)


def ensure_ffmpeg() -> str:
    """Path of ffmpeg, installed from Debian through tools/system_deps.sh if missing.

    Raises: harness.HarnessError (it could not be installed, with why)."""
    found = shutil.which("ffmpeg")
    if not found:
        ensure_debian_packages("ffmpeg")
        found = shutil.which("ffmpeg")
    if not found:
        raise FileNotFoundError("the ffmpeg package is installed but no ffmpeg binary was found")
    return found


def fill_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover `size` and crop the middle, as a camera framing the subject would."""
    width, height = size
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    scaled = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))),
                        interpolation=cv2.INTER_AREA)
    y, x = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return scaled[y:y + height, x:x + width]


def read_photo(path: Path) -> np.ndarray:
    """The BGR pixels of `path`. Raises: FileNotFoundError (missing or unreadable, with what writes it)."""
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read {path}: models/' samples are written by `make models`")
    return image


def scene_images(size: tuple[int, int] = (640, 480),
                 photos: ScenePhotos = MODEL_PHOTOS) -> list[tuple[str, np.ndarray, str | int]]:
    """(name, BGR frame, expected result) for each scene, in clip order.

    Raises: FileNotFoundError (a photo is missing)."""
    cat = fill_frame(read_photo(photos.cat), size)
    parrot = fill_frame(read_photo(photos.parrot), size)
    surface, _ = surface_with_truth(SURFACE_DEFECTS, seed=SURFACE_SEED, width=size[0], height=size[1])
    return [("cat", cat, "286:Egyptian cat"), ("parrot", parrot, "89:macaw"), ("surface", surface, SURFACE_DEFECTS)]


def make_clip(path: Path, fps: int = 10, seconds_per_scene: float = 3.0,
              size: tuple[int, int] = (640, 480), noise: float = 0.0,
              photos: ScenePhotos = MODEL_PHOTOS) -> list[Scene]:
    """Write an H.264 MP4 (or MKV, by path's suffix) of the scenes; return where each one is.

    noise: the standard deviation (grey levels) of fresh sensor noise on every frame, so that no two
    frames are the same, as with a real camera. 0: each scene is one still, repeated; its frames
    decode to the same pixels (and the plugin answers a repeated frame from its last call).
    photos: the cat's and the parrot's (models/' samples unless given).
    Raises: ValueError (another suffix), FileNotFoundError (a photo), RuntimeError (ffmpeg failed)."""
    path = Path(path)
    if path.suffix not in (".mp4", ".mkv"):
        raise ValueError(f"make_clip writes H.264 in .mp4 or .mkv, not {path.name}")
    ffmpeg = ensure_ffmpeg()
    frames_per_scene = round(fps * seconds_per_scene)
    images = scene_images(size, photos)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    # Raw BGR frames on stdin: exact pixels, no intermediate files. A keyframe every second and at
    # every scene change lets a live reader start anywhere within a second.
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "pipe:",
           "-c:v", "libx264", "-preset", "medium", "-crf", str(CLIP_CRF), "-pix_fmt", "yuv420p",
           "-g", str(fps), "-force_key_frames", f"expr:eq(mod(n,{frames_per_scene}),0)",
           "-movflags", "+faststart", str(partial)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    rng = np.random.default_rng(0)
    try:
        for _, image, _ in images:
            still = np.ascontiguousarray(image).tobytes()
            for _ in range(frames_per_scene):
                if noise:
                    noisy = image.astype(np.float32) + rng.normal(0, noise, image.shape).astype(np.float32)
                    proc.stdin.write(np.clip(noisy, 0, 255).astype(np.uint8).tobytes())
                else:
                    proc.stdin.write(still)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {err.strip()[-800:]}")
    partial.replace(path)
    scene_s = frames_per_scene / fps
    return [Scene(name, i * scene_s, (i + 1) * scene_s, expect) for i, (name, _, expect) in enumerate(images)]


class _CameraServer(ThreadingHTTPServer):
    allow_reuse_address = True  # start() after stop() binds the same port again
    daemon_threads = True

    def __init__(self, camera: "HttpCamera"):
        self.camera = camera
        super().__init__((HOST, camera.port or 0), _CameraHandler)  # 0 the first time: a free port, no race


class _CameraHandler(BaseHTTPRequestHandler):
    """One client: its own ffmpeg encoding the clip, looped in real time, as multipart JPEG."""
    server: _CameraServer

    def do_GET(self) -> None:
        camera = self.server.camera
        if self.path != "/cam":
            self.send_error(404, "the camera is at /cam")
            return
        proc = camera.spawn_encoder()
        if proc is None:
            self.send_error(503, "the camera is stopping")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            while chunk := proc.stdout.read1(65536):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left
        finally:
            camera.end_encoder(proc)

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would flood the test output


BOUNDARY = "ffmpeg"  # the mpjpeg muxer's default boundary


class HttpCamera:
    """A live HTTP MJPEG camera of a clip on loopback, like an IP camera's /video.mjpg.

    ffmpeg encodes (`ffmpeg -re -stream_loop -1 -i clip -c:v mjpeg -q:v 2 -f mpjpeg pipe:`), one
    process per client, each from the clip's start; a small Python HTTP server relays it. Unlike
    `ffmpeg -f mpjpeg -listen 1 URL`, which serves one client and leaves the port closed until it is
    started again, it accepts any number of clients and reconnects at once, as a camera does.
    stop() is the camera dying: open streams are cut and the port refuses connections; start()
    brings it back on the same URL."""

    def __init__(self, clip: Path, port: int | None = None, quality: int = 2):
        self.clip = Path(clip)
        if not self.clip.is_file():
            raise FileNotFoundError(f"no clip at {self.clip}")
        self.port = port  # None: the port the first start() gets from the system
        self.ffmpeg = ensure_ffmpeg()
        self.quality = quality  # mjpeg -q:v: 2 is the finest; ffmpeg's default bitrate would blur defects
        self.served = 0  # clients served so far
        self._server: _CameraServer | None = None
        self._thread: threading.Thread | None = None
        self._encoders: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        return [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
                "-re", "-stream_loop", "-1", "-i", str(self.clip), "-an",
                "-c:v", "mjpeg", "-q:v", str(self.quality), "-pix_fmt", "yuvj420p",
                "-f", "mpjpeg", "-boundary_tag", BOUNDARY, "pipe:"]

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/cam, once start() has bound the port."""
        if self.port is None:
            raise RuntimeError("the camera has no port before its first start()")
        return f"http://{HOST}:{self.port}/cam"

    def start(self) -> None:
        """Serve (again) on the same URL; returns once the port accepts connections."""
        with self._lock:
            if self._server is not None:
                return
            self._server = _CameraServer(self)
            self.port = self._server.server_address[1]  # the one bound; a restart binds it again
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"http-camera-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The camera dies: streams are cut and connections refused until start()."""
        with self._lock:
            server, self._server = self._server, None
            encoders = list(self._encoders)
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for proc in encoders:
            proc.kill()  # ends the relay loops, which close the clients' connections
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def spawn_encoder(self) -> subprocess.Popen | None:
        with self._lock:
            if self._server is None:
                return None
            proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            self._encoders.add(proc)
            self.served += 1
            return proc

    def end_encoder(self, proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        with self._lock:
            self._encoders.discard(proc)


@contextmanager
def http_mjpeg_server(clip: Path, port: int | None = None) -> Iterator[HttpCamera]:
    """A live HTTP MJPEG camera of `clip` on loopback, stopped when the block ends."""
    camera = HttpCamera(clip, port)
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()


RTSP_PACKAGES = ("vlc-bin", "vlc-plugin-base")  # cvlc and its RTSP/RTP stream output


def ensure_cvlc() -> str:
    """Path of cvlc (VLC without a GUI), installed from Debian through tools/system_deps.sh if missing.

    Raises: harness.HarnessError (it could not be installed, with why)."""
    found = shutil.which("cvlc")
    if found and Path("/usr/lib/x86_64-linux-gnu/vlc/plugins/stream_out/libstream_out_rtp_plugin.so").exists():
        return found
    ensure_debian_packages(*RTSP_PACKAGES)
    found = shutil.which("cvlc")
    if not found:
        raise FileNotFoundError(f"the packages {' '.join(RTSP_PACKAGES)} are installed but no cvlc was found")
    return found


class RtspCamera:
    """A live RTSP camera of a clip on loopback: VLC streams it, looped in real time, as RTP (over UDP)
    announced at rtsp://127.0.0.1:PORT/cam, the way an IP camera's main stream is read.

    Like a camera, it broadcasts: a client joins the loop wherever it is. VLC's RTSP server has no
    RTP-over-TCP (SETUP with interleaved transport answers 461), so clients use UDP, ffmpeg's default.
    Debian's VLC refuses to run as root: as root it runs as `nobody`, from a world-readable copy of the clip."""

    def __init__(self, clip: Path, port: int | None = None):
        self.cvlc = ensure_cvlc()
        self.port = port or free_port()
        self.url = f"rtsp://{HOST}:{self.port}/cam"
        self._workdir = Path(tempfile.mkdtemp(prefix="rtsp-camera-"))
        self._workdir.chmod(0o755)
        self.clip = self._workdir / Path(clip).name
        shutil.copyfile(clip, self.clip)
        self.clip.chmod(0o644)
        self.log_path = self._workdir / "vlc.log"
        self._proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        command = [self.cvlc, "-I", "dummy", "--no-dbus", "--no-audio", "--loop", str(self.clip),
                   "--sout", f"#rtp{{sdp={self.url}}}", "--sout-keep"]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        return command

    def start(self, timeout: float = 20.0) -> None:
        if self._proc is not None:
            return
        env = {**os.environ, "HOME": str(self._workdir)}  # VLC writes its config under HOME
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          env=env, start_new_session=True)
        # VLC listens before its stream is set up (a DESCRIBE then answers 500): ready is a DESCRIBE 200.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if listening(self.port) and self.describes():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"VLC did not serve {self.url}: {self.log_path.read_text(errors='replace')[-800:]}")

    def describes(self) -> bool:
        """Whether the server answers an RTSP DESCRIBE of the stream with 200 OK."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
        try:
            with socket.create_connection((HOST, self.port), timeout=2) as connection:
                connection.sendall(request)
                return connection.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is None:
            return
        os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)


def listening(port: int) -> bool:
    """Whether something listens on TCP `port`, read from /proc/net/tcp: a probe connection would be
    a client (and VLC logs each)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                return True
    return False


@contextmanager
def rtsp_server(clip: Path, port: int | None = None) -> Iterator[RtspCamera]:
    """A live RTSP camera of `clip` on loopback (VLC from Debian), stopped when the block ends."""
    camera = RtspCamera(clip, port)
    try:
        camera.start()
        yield camera
    finally:
        camera.close()
