"""A region of interest: what a call's `roi` says, and the whole pixels it stands for in an image.

Pure arithmetic (no decoding), below core.image_input, which crops to it, and core.functions, which
parses it from a call's options.
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple

from core.errors import InputError, shown

MAX_SIDE = 1_000_000  # no side of an image is longer: a larger number is no region (1e308 + 1e308 is inf)


class Roi(NamedTuple):
    """A region of interest as a call gives it: pixels of the image sent, or fractions of its size
    when all four are at most 1 (`[0.5, 0, 0.5, 1]`: the right half)."""

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def parse(cls, value: Any) -> Roi:
        """The region from a call's `[x, y, w, h]` (a JSON array, or its text "x,y,w,h").

        Raises:
            InputError: not four non-negative numbers with a width and height above 0; one line.
        """
        numbers = value
        if isinstance(value, str) and len(value) <= 200:
            text = value.strip().removeprefix("[").removesuffix("]")
            try:
                numbers = [float(part) for part in text.split(",")]
            except ValueError:
                pass
        # Bounded before any arithmetic: an int of 400 digits overflows a float (math.isfinite raises).
        valid = isinstance(numbers, (list, tuple)) and len(numbers) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and -MAX_SIDE <= v <= MAX_SIDE for v in numbers)
        if not valid or min(numbers) < 0 or numbers[2] <= 0 or numbers[3] <= 0:
            raise InputError("roi must be [x, y, w, h]: pixels of the image sent, or fractions of its size "
                             f"(all four at most 1), with w and h above 0; got {shown(value, json.dumps)}")
        return cls(*(float(v) for v in numbers))

    @property
    def fractions(self) -> bool:
        return max(self) <= 1


def region_box(roi: Roi, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) in whole pixels of an image of `size` (width, height), at least 2x2.

    Raises:
        InputError: the region reaches outside the image; one line.
    """
    width, height = size
    if roi.fractions:
        x, y = round(roi.x * width), round(roi.y * height)
        right, bottom = round((roi.x + roi.w) * width), round((roi.y + roi.h) * height)
    else:
        x, y, right, bottom = round(roi.x), round(roi.y), round(roi.x + roi.w), round(roi.y + roi.h)
    if right > width or bottom > height or right - x < 2 or bottom - y < 2:
        shown_roi = f"[{', '.join(format(v, 'g') for v in roi)}]"
        raise InputError(f"roi {shown_roi} is outside the {width}x{height} image or under 2x2 pixels of it")
    return x, y, right - x, bottom - y
