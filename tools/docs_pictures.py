"""Render the pictures docs/functions.md shows: what `inference` draws on a synthetic surface (our own
generator, tools/synthetic_surface.py) with the default model, as "side-by-side" (the default) and as
"overlay". tests/unit/test_regions.py renders them again and checks the committed ones are what the code draws.

    python tools/docs_pictures.py          # writes docs/pictures/side-by-side.jpg and overlay.jpg
"""
from __future__ import annotations

import base64
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run by path as `python tools/docs_pictures.py`
    sys.path.insert(0, REPO)

import cv2  # noqa: E402

from core.catalog import INFERENCE  # noqa: E402
from core.serving import ServedFunction  # noqa: E402
from core.settings import load_settings  # noqa: E402
from tools.synthetic_surface import surface_with_truth  # noqa: E402

FOLDER = os.path.join(REPO, "docs", "pictures")
PICTURES = ("side-by-side", "overlay")


def render(folder: str = FOLDER) -> dict[str, dict]:
    """Writes <folder>/<picture>.jpg for each picture; returns each answer (its base64 is the file)."""
    settings = load_settings()
    function = ServedFunction(INFERENCE, {**settings, "defect": {**settings["defect"], "threads": 1}})
    model = function.build(function.settings)
    image, _ = surface_with_truth(3, seed=12, width=640, height=360)
    png = cv2.imencode(".png", image)[1].tobytes()
    os.makedirs(folder, exist_ok=True)
    answers = {}
    for picture in PICTURES:
        answers[picture] = function.serve_one(model, png, {"picture": picture})
        with open(os.path.join(folder, f"{picture}.jpg"), "wb") as f:
            f.write(base64.b64decode(answers[picture]["base64"]))
    return answers


if __name__ == "__main__":
    for name, answer in render().items():
        print(f"wrote docs/pictures/{name}.jpg ({answer['defect']} defects)")
