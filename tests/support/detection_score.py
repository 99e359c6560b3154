"""Scoring reported defect boxes against where defects really are (tests and `make bench`).

Truth comes from outside the model: for synthetic surfaces, the boxes
tools/synthetic_surface.py drew; for the held-out fixture surfaces
(shared/fixtures/images/surfaces, never used to tune the default model), the
pixels that depart from the plain surface, checked against the defect count in
each file's name.
"""
import glob
import os
import re
from typing import NamedTuple

import cv2
import numpy as np

# A reported box may reach this many model pixels beyond the drawn defect: the default
# model's 3-pixel smoothing and 5-pixel join window widen a region by 2 to 4 (measured 6 at most).
MARGIN_MODEL_PIXELS = 8
# The held-out surfaces are plain (grey levels within 7 of the median); their defects depart by about 110.
HELD_OUT_DEPARTURE = 20
HELD_OUT_NAME = re.compile(r"^(?:bad_\d+_(\d+)|good_\d+)\.png$")


class Match(NamedTuple):
    """Outcome of one image: true defects found once, boxes on no defect, true defects without a box,
    and found defects whose box reaches beyond the margin (found, but the box is loose)."""
    found: int
    stray_boxes: int
    missed: int
    loose_boxes: int

    @property
    def exact(self) -> bool:
        return self.stray_boxes == 0 and self.missed == 0


def intersection(a, b) -> int:
    """Shared area of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def box_is_on(box, truth) -> bool:
    """The box is centred inside the true defect's box and covers at least half of it."""
    x, y, w, h = truth
    centre_x, centre_y = box[0] + box[2] / 2, box[1] + box[3] / 2
    return x <= centre_x <= x + w and y <= centre_y <= y + h and intersection(box, truth) >= 0.5 * w * h


def box_is_tight(box, truth, margin_x: float, margin_y: float) -> bool:
    """The box reaches no further than the margin beyond the true defect's box."""
    x, y, w, h = truth
    return (box[0] >= x - margin_x and box[1] >= y - margin_y and
            box[0] + box[2] <= x + w + margin_x and box[1] + box[3] <= y + h + margin_y)


def match_boxes(reported: list, truths: list, scale_x: float, scale_y: float) -> Match:
    """One-to-one: a true defect counts as found when exactly one box is on it and that box is on it alone.

    reported: the plugin's defects ({"x","y","w","h",...}) or (x, y, w, h) tuples; truths: (x, y, w, h).
    scale_x, scale_y: image pixels per model pixel (sets the tightness margin).
    """
    boxes = [(d["x"], d["y"], d["w"], d["h"]) if isinstance(d, dict) else tuple(d) for d in reported]
    margin_x, margin_y = MARGIN_MODEL_PIXELS * scale_x, MARGIN_MODEL_PIXELS * scale_y
    on = [[box_is_on(box, truth) for truth in truths] for box in boxes]
    found = loose = 0
    for t, truth in enumerate(truths):
        on_it = [b for b, row in enumerate(on) if row[t]]
        if len(on_it) == 1 and sum(on[on_it[0]]) == 1:
            found += 1
            loose += not box_is_tight(boxes[on_it[0]], truth, margin_x, margin_y)
    return Match(found=found, stray_boxes=len(boxes) - found, missed=len(truths) - found, loose_boxes=loose)


def held_out_surfaces(fixtures: str) -> list:
    """[(name, BGR image, [true boxes])] of the held-out surfaces; truth from pixels, checked against the name."""
    paths = sorted(glob.glob(os.path.join(fixtures, "images", "surfaces", "*", "*.png")))
    if not paths:
        raise FileNotFoundError(f"no held-out surfaces under {fixtures}/images/surfaces")
    surfaces = []
    for path in paths:
        name = os.path.basename(path)
        parsed = HELD_OUT_NAME.match(name)
        if not parsed:
            raise ValueError(f"{path}: expected bad_NN_K.png or good_NN.png")
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.int16)
        departs = (np.abs(gray - np.median(gray)) > HELD_OUT_DEPARTURE).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(departs, connectivity=8)
        truths = [tuple(int(v) for v in row[:4]) for row in stats[1:]]
        expected = int(parsed.group(1) or 0)
        if len(truths) != expected:
            raise ValueError(f"{name}: {len(truths)} regions depart from the surface, the name says {expected}")
        surfaces.append((name, image, truths))
    return surfaces


def scale_boxes(truths: list, fx: float, fy: float) -> list:
    """Boxes of an image resized by (fx, fy): the outer pixel edges scale."""
    return [(int(np.floor(x * fx)), int(np.floor(y * fy)), int(np.ceil((x + w) * fx)) - int(np.floor(x * fx)),
             int(np.ceil((y + h) * fy)) - int(np.floor(y * fy))) for x, y, w, h in truths]


def precision_recall(matches: list) -> dict:
    """Box-level precision and recall, and images with an exact answer, over a list of Match."""
    found = sum(m.found for m in matches)
    reported = found + sum(m.stray_boxes for m in matches)
    drawn = found + sum(m.missed for m in matches)
    return {"images": len(matches), "defects": drawn, "boxes": reported, "found": found,
            "precision": round(found / reported, 4) if reported else None,
            "recall": round(found / drawn, 4) if drawn else None,
            "exact_images": sum(m.exact for m in matches),
            "tight_boxes": round(1 - sum(m.loose_boxes for m in matches) / found, 4) if found else None}
