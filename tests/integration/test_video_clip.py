"""The shared camera clip (tools/video_clip.py) shows what its scenes say, through every reader the
camera tests use: OpenCV, ffmpeg's JPEG pipe (as eKuiper's video source reads) and the live HTTP server."""
import subprocess
import time

import cv2
import numpy as np
import pytest

from core.results import answer
from tools.video_clip import ensure_ffmpeg, http_mjpeg_server, scene_at

FPS = 10  # the camera_clip fixture's


def result_for(scene, frame, labeler, segmenter):
    if scene.name == "surface":
        return answer(segmenter.inspect(frame))["defect"]
    return answer(labeler.label(frame, 1))[0]["label"]


def wrong_frames(frames, scenes, labeler, segmenter):
    wrong = []
    for index, frame in enumerate(frames):
        scene = scene_at(scenes, index / FPS)
        result = result_for(scene, frame, labeler, segmenter)
        if not scene.accepts(result):
            wrong.append((index, scene.name, result))
    return wrong


def test_scenes_cover_the_clip_in_order(camera_clip):
    _, scenes = camera_clip
    assert [s.name for s in scenes] == ["cat", "parrot", "surface"]
    assert [(s.start_s, s.end_s) for s in scenes] == [(0, 3), (3, 6), (6, 9)]
    assert scenes[1].expect == "89:macaw" and scenes[2].expect == 3
    assert scenes[0].accepts("282:tabby, tabby cat") and not scenes[0].accepts("89:macaw")


def test_every_frame_read_with_opencv_shows_its_scene(camera_clip, labeler, segmenter):
    path, scenes = camera_clip
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 90 and frames[0].shape == (480, 640, 3)
    assert wrong_frames(frames, scenes, labeler, segmenter) == []


def test_every_frame_of_ffmpegs_jpeg_pipe_shows_its_scene(camera_clip, labeler, segmenter):
    """What the video source runs: ffmpeg -i URL -f image2pipe -vcodec mjpeg -q:v 2 pipe:."""
    path, scenes = camera_clip
    out = subprocess.run([ensure_ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "image2pipe",
                          "-vcodec", "mjpeg", "-q:v", "2", "pipe:"], capture_output=True, check=True).stdout
    jpegs = [b"\xff\xd8" + part for part in out.split(b"\xff\xd8")[1:]]
    frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    assert len(frames) == 90
    assert wrong_frames(frames, scenes, labeler, segmenter) == []


def read_frames(url, count, timeout=20.0):
    capture = cv2.VideoCapture(url)
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_http_camera_streams_the_clip_and_comes_back_after_it_dies(camera_clip, labeler, segmenter):
    path, scenes = camera_clip
    with http_mjpeg_server(path) as camera:
        frames = read_frames(camera.url, 40)  # from the clip's start: cat, then the parrot
        assert len(frames) == 40
        labels = [answer(labeler.label(frame, 1))[0]["label"] for frame in frames]
        change = labels.index("89:macaw")
        # a live reader may lose a frame or two; the change still lands where the clip changes
        assert 28 <= change <= 30, labels
        assert all(scenes[0].accepts(label) for label in labels[:change]), labels
        assert all(label == "89:macaw" for label in labels[change:]), labels
        assert len(read_frames(camera.url, 3)) == 3  # a second client, after the first left
        camera.stop()
        dead = cv2.VideoCapture(camera.url)
        assert not dead.isOpened()
        dead.release()
        camera.start()
        assert len(read_frames(camera.url, 3)) == 3


def test_a_clip_with_another_suffix_is_refused(tmp_path):
    from tools.video_clip import make_clip
    with pytest.raises(ValueError, match="H.264 in .mp4 or .mkv"):
        make_clip(tmp_path / "clip.avi")


def test_rtsp_camera_streams_the_clip(camera_clip, labeler, segmenter):
    from tools.video_clip import rtsp_server
    path, scenes = camera_clip
    with rtsp_server(path) as camera:
        frames = read_frames(camera.url, 20)
    assert len(frames) == 20
    # a broadcast: the reader joins the loop wherever it is, so each frame shows one of the scenes
    assert all(any(scene.accepts(result_for(scene, frame, labeler, segmenter)) for scene in scenes)
               for frame in frames)
