"""The files `make models` takes from outside, their upstream home and pinned sha256, and their download.

Stdlib only (no OpenVINO), so a test can exercise the download without importing a model converter.
tools/build_models.py copies these files from the fixtures folder when there is one and calls
fetch_sources otherwise.
"""
import hashlib
import http.client
import os
import socket
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One file `make models` needs: where it sits in the fixtures folder, and its pinned sha256."""

    fixture_path: str   # relative to the fixtures folder
    sha256: str         # of the upstream file at UPSTREAM_URL's commit; the fixtures hold the same bytes


# The manifest. Every file is named as in the Coral test_data repository, the upstream home the
# fixtures' README names (Apache-2.0 models and labels; cat.bmp is Open Images, CC BY 2.0: see the
# fixtures' COPYRIGHT-images.txt, a copy of test_data's COPYRIGHT). A commit, not a branch, so the
# bytes under the URL cannot change; MODELS_URL (env, or build_models.py --url) points elsewhere:
# a mirror, or in tests a local server.
UPSTREAM_URL = "https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
SOURCES = {
    "mobilenet_v2_1.0_224_quant.tflite": Source(
        "models/mobilenet_v2_1.0_224_quant.tflite", "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"),
    "imagenet_labels.txt": Source(
        "models/imagenet_labels.txt", "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1"),
    "deeplabv3_mnv2_dm05_pascal_quant.tflite": Source(
        "models/deeplabv3_mnv2_dm05_pascal_quant.tflite",
        "0470d2a782aa54eeeb99d32e7b6b3fb7722905c7c4f5d26bd957ec861366d48b"),
    "cat.bmp": Source(
        "images/cat.bmp", "34f235786382686111728287fd26d4c24dd8c25de8233469d6eeb301888ce0a9"),
    "parrot.jpg": Source(  # the camera clip's second scene (tools/video_clip.py)
        "images/parrot.jpg", "a8fba9e7e29439fa414c13129aad661f2289ff891231920a7c33641b076f1833"),
}
MAX_DOWNLOAD_BYTES = 16 << 20   # the largest source is 3.6 MB; a server sending more is refused
TIMEOUT_S = 30                  # urllib's timeout: each connect and each read
DOWNLOAD_BUDGET_S = 300         # a whole file, so a server dripping bytes cannot hold `make` forever
CHUNK = 1 << 16


class _Deadline:
    """Shuts a download's connections down when its budget runs out, whatever phase it is blocked in.

    A socket timeout bounds one recv only: a server sending a byte a second keeps every recv short and
    the download alive for ever, in the TLS handshake, the status line and headers, or the body. So a
    timer shuts each connection's socket down at the deadline, which wakes the blocked recv at once.
    The sockets are watched through dups of their descriptors (a shutdown reaches the connection
    through any of them), taken as soon as TCP is connected, before any byte is read.
    """

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(budget_s, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        """Shut sock's connection down at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                self._shut(self._sockets[-1])

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed by the other end
            pass

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener (proxies, redirects as usual) whose every connection this deadline watches."""
        deadline = self

        class WatchedHTTPConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)

        class WatchedHTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(WatchedHTTPConnection, req)

        class WatchedContext(ssl.SSLContext):  # sees the TCP socket before the TLS handshake reads from it
            def wrap_socket(self, sock, *args, **kwargs):
                deadline.watch(sock)
                return super().wrap_socket(sock, *args, **kwargs)

        context = WatchedContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
        context.load_default_certs()
        return urllib.request.build_opener(WatchedHTTPHandler, urllib.request.HTTPSHandler(context=context))

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()


class DownloadError(Exception):
    """A source could not be fetched or did not match its pinned sha256; str() is the one-line reason."""


def sha256_of(path: str) -> str:
    """The hex sha256 of the file at path."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(name: str, base_url: str, dest: str, budget_s: float = DOWNLOAD_BUDGET_S) -> None:
    """Fetch SOURCES[name] from base_url + name into dest, atomically and only if its sha256 matches.

    The bytes go to a temporary file beside dest, are checked against the pinned sha256, and only
    then renamed onto dest; on any failure the temporary file is removed and dest is untouched.

    Args:
        name: a key of SOURCES, also the file's name under base_url.
        base_url: http(s) URL of the folder holding the files (UPSTREAM_URL or a mirror).
        dest: the path to write.
        budget_s: the whole download's time bound, from connecting to the last byte (a DNS lookup
            that hangs is outside it); each connect and each read is also bounded by TIMEOUT_S.
    Raises:
        DownloadError: HTTP error, unreachable server, timeout, not done within budget_s, more than
            MAX_DOWNLOAD_BYTES, or a checksum mismatch; the message is one line naming the file and the URL.
    """
    url = urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", name)
    expected = SOURCES[name].sha256
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=os.path.dirname(dest) or ".")
    try:
        digest = hashlib.sha256()
        too_slow = f"{name}: not received within {budget_s:g} s from {url}"
        with os.fdopen(fd, "wb") as out, _Deadline(budget_s) as deadline:
            try:
                with deadline.opener().open(url, timeout=min(TIMEOUT_S, budget_s)) as response:
                    size = 0
                    # read1: what has arrived (up to CHUNK), so the checks run between small reads too.
                    while chunk := response.read1(CHUNK):
                        size += len(chunk)
                        if size > MAX_DOWNLOAD_BYTES:
                            raise DownloadError(f"{name}: larger than {MAX_DOWNLOAD_BYTES} bytes at {url}")
                        digest.update(chunk)
                        out.write(chunk)
            except urllib.error.HTTPError as e:
                raise DownloadError(f"{name}: HTTP {e.code} {e.reason} from {url}") from None
            except (OSError, http.client.HTTPException) as e:
                # The deadline's shutdown surfaces as whatever the blocked read makes of an early end.
                if deadline.expired:
                    raise DownloadError(too_slow) from None
                if isinstance(e, urllib.error.URLError):
                    raise DownloadError(f"{name}: {url} unreachable ({e.reason})") from None
                # a read that timed out, a connection reset or cut short mid-body, a full disk
                raise DownloadError(f"{name}: download from {url} failed ({e})") from None
            if deadline.expired:  # the shutdown read as the end of a body of unknown length
                raise DownloadError(too_slow)
        got = digest.hexdigest()
        if got != expected:
            raise DownloadError(f"{name}: checksum mismatch, expected sha256 {expected} got {got} (from {url})")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_sources(base_url: str, kept: tuple[str, ...], out_dir: str, work_dir: str,
                  budget_s: float = DOWNLOAD_BUDGET_S) -> dict[str, str]:
    """Download every source (see download) and say where each one is.

    Args:
        base_url: http(s) URL of the folder holding the files.
        kept: the names that go straight into out_dir; a file already there with its pinned
            sha256 is kept as it is, so a rerun fetches it no more.
        out_dir: the output folder.
        work_dir: where the other sources go (inputs of the build only).
        budget_s: each file's time bound (see download).
    Returns:
        SOURCES' names mapped to their local paths.
    Raises:
        DownloadError: a URL that is not http(s), or the first source that failed (see download).
    """
    if urllib.parse.urlparse(base_url).scheme not in ("http", "https"):
        raise DownloadError(f"models URL {base_url!r} is not an http(s) URL")
    paths = {}
    for name in SOURCES:
        path = os.path.join(out_dir if name in kept else work_dir, name)
        if not (os.path.isfile(path) and sha256_of(path) == SOURCES[name].sha256):
            print(f"models: downloading {name} from {base_url}", flush=True)
            download(name, base_url, path, budget_s)
        paths[name] = path
    return paths
