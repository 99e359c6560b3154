"""The tests' camera clip: tools/video_clip.py's scenes with the fixtures' photos, encoded once per session."""
from pathlib import Path

import pytest

from tests.support.paths import fixture_path
from tools.video_clip import Scene, ScenePhotos, make_clip


def fixture_photos() -> ScenePhotos:
    """The fixtures' cat (a camera-size frame, top-1 286:Egyptian cat) and parrot (top-1 89:macaw).

    Fails the test if the fixtures are missing."""
    return ScenePhotos(cat=Path(fixture_path("images", "cat_720p.jpg")),
                       parrot=Path(fixture_path("images", "parrot.jpg")))


_session_clips: dict[tuple, tuple[Path, list[Scene]]] = {}


def session_clip(tmp_path_factory: pytest.TempPathFactory, fps: int = 10, seconds_per_scene: float = 3.0,
                 size: tuple[int, int] = (640, 480), noise: float = 0.0) -> tuple[Path, list[Scene]]:
    """make_clip with the fixtures' photos, once per pytest session and parameters (a clip takes a
    few seconds to encode). Returns: the clip's path and its scenes."""
    key = (str(tmp_path_factory.getbasetemp()), fps, seconds_per_scene, tuple(size), noise)
    if key not in _session_clips:
        folder = tmp_path_factory.mktemp("clips", numbered=True)
        path = folder / f"clip_{fps}fps_{seconds_per_scene:g}s_{size[0]}x{size[1]}_noise{noise:g}.mp4"
        _session_clips[key] = (path, make_clip(path, fps, seconds_per_scene, size, noise, fixture_photos()))
    return _session_clips[key]
