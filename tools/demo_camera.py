"""`make demo`, camera part: a short clip through kuiperd, frames in, labels and defect masks out,
drawn as one picture a person can check at a glance: build/camera_contact_sheet.png.

Each path from a camera into kuiperd is one function that returns the frames as the rule saw them
with its answers (a `LabelledFrame` each); `write_contact_sheet` draws one row per path. Paths:
- `via_video_source`: eKuiper's own video source (kuiperd built with -tags full) reading a live
  HTTP MJPEG camera that serves the clip (tools/video_clip.py).
- `via_bridge`: the camera bridge (camera/camera.py) reading the clip file at its own speed into
  an MQTT topic that a BINARY stream reads: the path for a kuiperd without the video source.

Starts mosquitto and kuiperd on free loopback ports, installs build/defect.zip, runs each path,
writes the sheet, removes what it created and stops what it started.
"""
from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run by path: the repo root first, for tools.*
from tools import harness  # noqa: E402
from tools.camera_bridge_process import BridgeProcess  # noqa: E402
from tools.video_clip import Scene, http_mjpeg_server, make_clip, scene_at  # noqa: E402

REPO = HERE.parent  # tools/ sits in the repo root
SHEET = REPO / "build" / "camera_contact_sheet.png"
CLIP = REPO / "build" / "camera_clip.mp4"
INTERVAL_MS = 1000  # one frame a second: 3 cats, 3 parrots, 3 surfaces from the 9 s clip
# The frame as the rule saw it, its top label, and the defect model's count and picture (input | mask).
CAMERA_SQL = ("SELECT self AS frame, labelImage(self)[0]->label AS label, inference(self)->defect AS defect, "
              "inference(self)->base64 AS mask FROM {stream}")
TILE = (320, 240)


@dataclass
class LabelledFrame:
    """One frame out of a rule: the JPEG it got, what the models said, and what the clip showed."""
    jpeg: bytes
    label: str
    defect: int
    mask_jpeg: bytes  # inference's picture: the frame at model size | its defect mask (white)
    scene: Scene | None  # what the clip showed at that frame (None when unknown)

    @property
    def right(self) -> bool:
        if self.scene is None:
            return True
        return self.scene.accepts(self.defect if self.scene.name == "surface" else self.label)


def frames_from_rule(client: harness.KuiperClient, mqtt_url: str, stream: str, rule: str, count: int,
                     timeout: float = 90, after_running: Callable[[], object] | None = None) -> list[dict]:
    """Run CAMERA_SQL over `stream` until `count` results arrived on MQTT; return them, in order.
    after_running: called once the rule runs (starts a source that must not send earlier)."""
    host, port = mqtt_url.removeprefix("tcp://").split(":")
    collector = harness.MqttCollector(host, int(port), f"demo/{rule}")
    try:
        action = {"mqtt": {"server": mqtt_url, "topic": f"demo/{rule}", "qos": 1, "sendSingle": True}}
        client.create_rule(rule, CAMERA_SQL.format(stream=stream), [action])
        client.wait_rule_running(rule)
        if after_running is not None:
            after_running()
        messages = collector.wait_for(count, timeout)[:count]
    finally:
        collector.close()
        client.delete_rule(rule)
    return [json.loads(m.payload) for m in messages]


def labelled(results: list[dict], scenes: list[Scene], interval_s: float) -> list[LabelledFrame]:
    """Results of a stream that starts at the clip's start, one frame per interval."""
    return [LabelledFrame(base64.b64decode(r["frame"]), r["label"], r["defect"], base64.b64decode(r["mask"]),
                          scene_at(scenes, i * interval_s)) for i, r in enumerate(results)]


def via_video_source(client: harness.KuiperClient, mqtt_url: str, clip: Path,
                     scenes: list[Scene]) -> list[LabelledFrame]:
    """eKuiper's video source on a live HTTP MJPEG camera (ffmpeg serving the clip)."""
    frames = round(scenes[-1].end_s * 1000 / INTERVAL_MS)
    with http_mjpeg_server(clip) as camera:
        client.request("PUT", "/metadata/sources/video/confKeys/democam", {
            "url": camera.url, "interval": INTERVAL_MS,
            # MJPEG over HTTP has no timestamps: stamp frames on arrival so interval is wall time
            "inputArgs": {"use_wallclock_as_timestamps": "1"}})
        client.create_stream('CREATE STREAM democam () WITH (TYPE="video", CONF_KEY="democam", FORMAT="BINARY")')
        try:
            results = frames_from_rule(client, mqtt_url, "democam", "demo_video_source", frames)
        finally:
            client.delete_stream("democam")
            client.request("DELETE", "/metadata/sources/video/confKeys/democam")
    return labelled(results, scenes, INTERVAL_MS / 1000)


def via_bridge(client: harness.KuiperClient, mqtt_url: str, clip: Path,
               scenes: list[Scene]) -> list[LabelledFrame]:
    """The camera bridge on the clip file, played at its own speed (--realtime), one frame per
    interval, as JPEG bytes into a BINARY stream over MQTT."""
    frames = round(scenes[-1].end_s * 1000 / INTERVAL_MS)
    topic = "demo/bridge_frames"
    client.create_stream(f'CREATE STREAM demobridge () WITH (DATASOURCE="{topic}", FORMAT="BINARY")')
    with tempfile.TemporaryDirectory(prefix="defect-demo-bridge-") as work:
        bridge = BridgeProcess(str(clip), mqtt_url.removeprefix("tcp://"), topic, "--fps", f"{1000 / INTERVAL_MS:g}",
                               "--realtime", "--loop", log_path=Path(work) / "bridge.log")

        def start_bridge() -> None:
            time.sleep(1)  # the rule's MQTT source subscribes right after it connects: let it finish
            bridge.start()
        try:
            results = frames_from_rule(client, mqtt_url, "demobridge", "demo_bridge", frames,
                                       after_running=start_bridge)
            if bridge.stop() != 0:
                raise RuntimeError(f"the camera bridge failed:\n{bridge.log()}")
        finally:
            bridge.__exit__()
            client.delete_stream("demobridge")
    return labelled(results, scenes, INTERVAL_MS / 1000)


# The paths drawn, one row each: (row title, function).
PATHS: list[tuple[str, Callable[[harness.KuiperClient, str, Path, list[Scene]], list[LabelledFrame]]]] = [
    ("eKuiper video source (kuiperd -tags full, ffmpeg) <- HTTP MJPEG camera", via_video_source),
    ("camera bridge (camera/camera.py) -> MQTT -> BINARY stream, any kuiperd <- the clip file", via_bridge),
]


def _decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _tile(frame: LabelledFrame) -> np.ndarray:
    """The frame with its answer; a surface frame also gets its defect mask beside it."""
    picture = cv2.resize(_decode(frame.jpeg), TILE, interpolation=cv2.INTER_AREA)
    surface = frame.scene.name == "surface" if frame.scene is not None else frame.defect > 0
    if surface:
        text = f"{frame.defect} defects"
        side = _decode(frame.mask_jpeg)
        mask = side[:, side.shape[1] // 2:]  # right half: the mask
        mask = cv2.resize(mask, (TILE[1], TILE[1]), interpolation=cv2.INTER_NEAREST)
        picture = np.hstack([picture, mask])
    else:
        text = frame.label
    colour = (60, 200, 60) if frame.right else (40, 40, 230)
    caption = np.zeros((26, picture.shape[1], 3), np.uint8)  # above the frame, hiding none of it
    cv2.putText(caption, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 1, cv2.LINE_AA)
    picture = np.vstack([caption, picture])
    cv2.rectangle(picture, (0, 0), (picture.shape[1] - 1, picture.shape[0] - 1), colour, 2)
    return picture


def _line(tiles: list[np.ndarray], gap: int) -> np.ndarray:
    width = sum(t.shape[1] for t in tiles) + gap * (len(tiles) + 1)
    line = np.full((max(t.shape[0] for t in tiles) + gap, width, 3), 255, np.uint8)
    x = gap
    for tile in tiles:
        line[:tile.shape[0], x:x + tile.shape[1]] = tile
        x += tile.shape[1] + gap
    return line


def _text_line(text: str, width: int) -> np.ndarray:
    line = np.full((34, width, 3), 255, np.uint8)
    cv2.putText(line, text, (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (0, 0, 0), 1, cv2.LINE_AA)
    return line


def write_contact_sheet(rows: list[tuple[str, list[LabelledFrame]]], path: Path = SHEET) -> Path:
    """A block per path: its title, then its frames, one line per scene of the clip, each frame with
    its answer (green when it is what the clip showed, red when not); surface frames with their
    defect mask beside them."""
    gap = 6
    blocks = []
    for title, frames in rows:
        groups: list[list[LabelledFrame]] = []
        for frame in frames:  # consecutive frames of one scene share a line (4 a line if unknown)
            same = groups and groups[-1][-1].scene is not None and groups[-1][-1].scene == frame.scene
            if same or (groups and frame.scene is None and groups[-1][-1].scene is None and len(groups[-1]) < 4):
                groups[-1].append(frame)
            else:
                groups.append([frame])
        lines = [_line([_tile(f) for f in group], gap) for group in groups]
        right = sum(f.right for f in frames)
        blocks.append((f"{title}: {right}/{len(frames)} as the clip shows", lines))
    width = max(line.shape[1] for _, lines in blocks for line in lines)
    parts = []
    for title, lines in blocks:
        parts.append(_text_line(title, width))
        parts += [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(parts))
    return path


def run(client: harness.KuiperClient, mqtt_url: str) -> list[tuple[str, list[LabelledFrame]]]:
    scenes = make_clip(CLIP, noise=2.0)
    client.install_portable_plugin("defect", (REPO / "build" / "defect.zip").resolve().as_uri())
    try:
        rows = []
        for title, path_function in PATHS:
            frames = path_function(client, mqtt_url, CLIP, scenes)
            rows.append((title, frames))
            print(f"{title}:")
            for i, frame in enumerate(frames):
                answer = f"{frame.defect} defects" if frame.scene and frame.scene.name == "surface" else frame.label
                print(f"  {i * INTERVAL_MS / 1000:4.1f} s {frame.scene.name if frame.scene else '?':8} -> {answer}"
                      f"{'' if frame.right else '   (not what the clip shows)'}")
    finally:
        client.delete_portable_plugin("defect")
    print(f"wrote {write_contact_sheet(rows).relative_to(REPO)}")
    return rows


def main() -> None:
    with harness.broker_and_kuiperd("defect-demo-camera-", " (-tags full)") as (broker, kuiperd):
        run(kuiperd.client, broker.url)


if __name__ == "__main__":
    main()
