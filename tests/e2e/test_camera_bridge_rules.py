"""Issue 10 part 2: the camera bridge (camera/camera.py) feeding both tutorials' rules in a real kuiperd.

The shared clip (tools/video_clip.py: cat, parrot, a surface with 3 defects) goes through the bridge
and mosquitto, as a file (every frame, in order) and as a live HTTP MJPEG camera served by ffmpeg,
into a BINARY stream with the TFLite tutorial's rule and a JSON stream with the OpenVINO tutorial's.
"""
from __future__ import annotations

import base64
import itertools
import json

import pytest

from tests.support.clips import session_clip
from tests.support.scenarios import decode_b64_gray, mask_regions
from tools.camera_bridge_process import BridgeProcess
from tools.video_clip import CAT_CLASSES, http_mjpeg_server, label_index, rtsp_server, scene_runs

FPS = 5  # the clip's and the bridge's: 2 s a scene, 10 frames each


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return session_clip(tmp_path_factory, fps=FPS, seconds_per_scene=2.0)


@pytest.fixture
def bridge(mosquitto, tmp_path):
    made = []

    def make(source, topic, *options):
        process = BridgeProcess(str(source), f"{mosquitto.host}:{mosquitto.port}", topic, "--fps", str(FPS),
                                *options, log_path=tmp_path / f"bridge{len(made)}.log")
        made.append(process)
        return process.start()
    yield make
    for process in made:
        process.__exit__()


def scene_of(label: str) -> str:
    if label_index(label) in CAT_CLASSES:
        return "cat"
    return "parrot" if label == "89:macaw" else "other"


def label_rule(kuiperd, kuiper, mosquitto, mqtt_sub, unique):
    """The TFLite tutorial's stream and rule on fresh names; returns (topic the bridge feeds, results)."""
    topic, stream, rule = unique("cam"), unique("tfdemo"), unique("tflite")
    out = mqtt_sub(unique("labels"))
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{topic}", FORMAT="BINARY")')
    kuiper.create_rule(rule, f"SELECT labelImage(self)[0]->label AS label FROM {stream}",
                       [kuiperd.mqtt_action(out.topic, sendSingle=True)])
    kuiper.wait_rule_running(rule)
    mosquitto.wait_subscribed(topic)
    return topic, out


def test_a_file_through_the_bridge_labels_every_frame_in_clip_order(
        clip, bridge, kuiperd, kuiper, defect_plugin, mosquitto, mqtt_sub, unique):
    path, scenes = clip
    topic, out = label_rule(kuiperd, kuiper, mosquitto, mqtt_sub, unique)
    process = bridge(path, topic)
    assert process.wait(120) == 0, process.log()
    labels = [json.loads(m.payload)["label"] for m in out.wait_for(30, timeout=120)]
    # One rule serves frames one at a time, in the order they came: result i is frame i.
    assert [scene_of(label) for label in labels] == ["cat"] * 10 + ["parrot"] * 10 + ["other"] * 10, labels
    assert labels[10:20] == [scenes[1].expect] * 10  # "89:macaw"


def test_a_live_http_camera_through_the_bridge_labels_its_scenes_in_turn(
        camera_clip, bridge, kuiperd, kuiper, defect_plugin, mosquitto, mqtt_sub, unique):
    """The shared 10 fps clip (3 s a scene) looped live; the bridge sends 5 of its frames a second."""
    path, _ = camera_clip
    topic, out = label_rule(kuiperd, kuiper, mosquitto, mqtt_sub, unique)
    with http_mjpeg_server(path) as camera:
        process = bridge(camera.url, topic)
        # One and a half loops of the clip: every scene, and each change, at least once.
        messages = out.wait_for(70, timeout=120)
        assert process.stop() == 0, process.log()
    shown = [scene_of(json.loads(m.payload)["label"]) for m in messages]
    runs = scene_runs(shown)
    names = [scene for scene, _ in runs]
    following = {"cat": "parrot", "parrot": "other", "other": "cat"}
    assert all(b == following[a] for a, b in itertools.pairwise(names)), runs
    assert {"cat", "parrot", "other"} <= set(names), runs
    # A scene lasts 3 s, about 15 frames at 5 fps: whole runs (not the window's first and last) are long,
    # so the labels change where the clip changes and nowhere else.
    inner = [length for _, length in runs[1:-1]]
    assert inner and min(inner) >= 8, runs


def test_an_rtsp_camera_through_the_bridge_gives_its_scenes_labels(
        camera_clip, bridge, kuiperd, kuiper, defect_plugin, mosquitto, mqtt_sub, unique):
    """RTSP (VLC from Debian, RTP over UDP). VLC ends the session each time its loop starts again (about
    every 9 s): the bridge reopens it, which the rule never sees."""
    path, _ = camera_clip
    topic, out = label_rule(kuiperd, kuiper, mosquitto, mqtt_sub, unique)
    with rtsp_server(path) as camera:
        process = bridge(camera.url, topic)
        messages = out.wait_for(60, timeout=120)
        assert process.stop() == 0, process.log()
    shown = [scene_of(json.loads(m.payload)["label"]) for m in messages]
    assert {"cat", "parrot", "other"} <= set(shown), shown
    # Each reopened session joins VLC's loop wherever it is, so a scene may be cut short; but a whole
    # parrot scene (3 s, about 15 frames at 5 fps) is labelled 89:macaw from start to end.
    runs = scene_runs(shown)
    assert max(length for scene, length in runs if scene == "parrot") >= 12, runs


def test_json_frames_through_the_bridge_count_the_surfaces_defects(
        clip, bridge, kuiperd, kuiper, defect_plugin, mosquitto, mqtt_sub, unique):
    """The OpenVINO tutorial's rule, as written, on the bridge's {"image", "ts", "camera"} payloads,
    beside a rule that reads the count and the bridge's other fields."""
    path, scenes = clip
    topic, stream = unique("cam"), unique("openvino_demo")
    marked, counted = mqtt_sub(unique("defect")), mqtt_sub(unique("counts"))
    kuiper.create_stream(f'CREATE STREAM {stream} () WITH (DATASOURCE="{topic}", FORMAT="JSON")')
    tutorial, counts = unique("openvino"), unique("counts")
    kuiper.create_rule(tutorial, f"SELECT image AS origin, inference(image)->base64 AS afterProcess FROM {stream} "
                       "WHERE inference(image)->defect >= 0", [kuiperd.mqtt_action(marked.topic, sendSingle=True)])
    kuiper.create_rule(counts, f"SELECT camera, ts, inference(image)->defect AS defect FROM {stream}",
                       [kuiperd.mqtt_action(counted.topic, sendSingle=True)])
    kuiper.wait_rule_running(tutorial)
    kuiper.wait_rule_running(counts)
    mosquitto.wait_subscribed(topic, clients=2)

    process = bridge(path, topic, "--json-field", "image", "--camera-name", "line-1")
    assert process.wait(120) == 0, process.log()
    rows = [json.loads(m.payload) for m in counted.wait_for(30, timeout=180)]
    pictures = [json.loads(m.payload) for m in marked.wait_for(30, timeout=180)]

    assert all(row["camera"] == "line-1" for row in rows)
    assert [row["ts"] for row in rows] == sorted(row["ts"] for row in rows)
    surface = scenes[2]
    assert [row["defect"] for row in rows[20:]] == [surface.expect] * 10  # 3, on every surface frame
    # The tutorial's picture: the frame beside its mask, one white region per defect.
    for row in pictures[20:]:
        assert base64.b64decode(row["origin"], validate=True)[:3] == b"\xff\xd8\xff"
        assert mask_regions(decode_b64_gray(row["afterProcess"])) == surface.expect
