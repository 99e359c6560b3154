"""Synthetic textured surfaces with a known number of defects (spots and scratches).

Used by the tests, the benchmarks and `make models` (which writes a sample for
`python inference.py`). `python tools/synthetic_surface.py --defects 3 out.png`
`surface_with_truth` also returns where each defect was drawn, so boxes can be
checked against the truth rather than against the image's own pixels.
"""
import argparse
from typing import NamedTuple

import cv2
import numpy as np


def textured_surface(rng, width=640, height=480):
    """Brushed-metal-like grain: blurred noise, a slow illumination gradient, fine sensor noise."""
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.5)
    grain *= 10 / grain.std()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 25 * (xx / width - 0.5) + 15 * np.sin(yy / height * np.pi)
    surface = 128 + grain + light + rng.normal(0, 2, (height, width))
    return surface


class DrawnDefect(NamedTuple):
    """One drawn defect: its kind, centre and the box of every pixel it changed (x, y, w, h)."""
    kind: str  # "spot" or "scratch"
    centre: tuple
    box: tuple


def draw_defects(rng, surface, count, drawn=None):
    """Draw `count` well-separated defects; returns their centres (and appends a DrawnDefect each to `drawn`)."""
    height, width = surface.shape
    centres = []
    for _ in range(10000):
        if len(centres) == count:
            return centres
        cx, cy = int(rng.integers(50, width - 50)), int(rng.integers(50, height - 50))
        if any((cx - x) ** 2 + (cy - y) ** 2 < 110 ** 2 for x, y in centres):
            continue
        centres.append((cx, cy))
        delta = float(rng.choice([-1, 1]) * rng.uniform(60, 90))  # dark or bright
        layer = np.zeros_like(surface)
        kind = "spot" if rng.random() < 0.5 else "scratch"
        if kind == "spot":
            axes = (int(rng.integers(6, 16)), int(rng.integers(6, 16)))
            cv2.ellipse(layer, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, delta, -1, cv2.LINE_AA)
        else:  # scratch
            angle = rng.uniform(0, np.pi)
            half = rng.uniform(30, 45)
            dx, dy = int(half * np.cos(angle)), int(half * np.sin(angle))
            cv2.line(layer, (cx - dx, cy - dy), (cx + dx, cy + dy), delta, int(rng.integers(4, 7)), cv2.LINE_AA)
        surface += layer
        if drawn is not None:  # the truth costs no random draws: images stay the same per seed
            box = cv2.boundingRect((layer != 0).astype(np.uint8))
            drawn.append(DrawnDefect(kind, (cx, cy), tuple(int(v) for v in box)))
    if len(centres) < count:
        raise ValueError(f"cannot place {count} separate defects on {width}x{height}")
    return centres


def surface_image(defects, seed=0, width=640, height=480):
    """BGR uint8 image of a textured surface with exactly `defects` defects."""
    return surface_with_truth(defects, seed, width, height)[0]


def surface_with_truth(defects: int, seed: int = 0, width: int = 640,
                       height: int = 480) -> tuple[np.ndarray, list[DrawnDefect]]:
    """surface_image(...) (the same pixels for the same arguments) and the defects drawn on it."""
    rng = np.random.default_rng(seed)
    surface = textured_surface(rng, width, height)
    drawn = []
    draw_defects(rng, surface, defects, drawn)
    gray = np.clip(surface, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), drawn


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output")
    parser.add_argument("--defects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.imwrite(args.output, surface_image(args.defects, args.seed))


if __name__ == "__main__":
    main()
