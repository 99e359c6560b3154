"""`make bench`, the rows the README's claims quote: defect detection against the truth, the input limits,
the cost of the JPEG completeness check. bench/run.py runs these; on their own:

    .venv/bin/python -m bench.proof [--quick] [--fixtures ../shared/fixtures]

Detection: every image goes through inference() as the plugin runs it (base64 in,
decode, model, boxes), and its boxes are matched one-to-one against the truth
(tests/support/detection_score.py): the held-out fixture surfaces (never used to tune the
default model; truth from their pixels, checked against the count in each name),
as they are and stretched to camera sizes as JPEG, and synthetic surfaces drawn
at each size (tools/synthetic_surface.py: the generator the default model was
tuned on, so its rows are not independent evidence).
"""
import argparse
import base64
import dataclasses
import os
import timeit

import cv2
import numpy as np

from bench.timing import timed
from core.catalog import INFERENCE, LABEL_IMAGE
from core.functions import CallOptions
from core.image_input import _jpeg_walk
from core.settings import load_settings
from label_func import ModelFunction
from tests.support.detection_score import held_out_surfaces, match_boxes, precision_recall, scale_boxes
from tools.synthetic_surface import surface_with_truth

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

SIZES = {"VGA": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
SYNTHETIC_SEED = 100_000  # far from the seeds the tests use
JPEG_QUALITY = 90
LIMIT_JPEG_SIZE = (7296, 5472)  # 39.9 Mpx: the largest 4:3 frame under the 40 Mpx max_pixels default
LIMIT_PNG_SIZE = (2800, 2000)   # noise does not compress: about 17 MB, under the 20 MB max_bytes default


class InferenceWithoutPicture(ModelFunction):
    """inference() as the plugin runs it, minus the side-by-side picture the scoring does not read."""

    def __init__(self, settings: dict):
        super().__init__(INFERENCE, settings)

    def run(self, model, pixels, size, options=None, box=None):
        return super().run(model, pixels, size, dataclasses.replace(options or CallOptions(), picture="none"), box)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jpeg(bgr, quality=JPEG_QUALITY) -> bytes:
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _score(function, model_size, encoded: bytes, truths, width, height):
    report = function.exec([b64(encoded)], None)
    return match_boxes(report["defects"], truths, width / model_size[0], height / model_size[1])


def measure_detection(function, fixtures: str, per_size: int) -> list:
    """Rows of precision/recall per image set and size."""
    model = function.ready_model()
    rows = []
    held_out = held_out_surfaces(fixtures)
    cases = {"as is (256x256 PNG)": None, **{f"{name} (stretched, JPEG)": size for name, size in SIZES.items()}}
    for label, size in cases.items():
        matches = []
        for _, image, truths in held_out:
            if size is None:
                matches.append(_score(function, model.size, cv2.imencode(".png", image)[1].tobytes(), truths,
                                      image.shape[1], image.shape[0]))
            else:
                big = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
                fx, fy = size[0] / image.shape[1], size[1] / image.shape[0]
                matches.append(_score(function, model.size, jpeg(big), scale_boxes(truths, fx, fy), *size))
        rows.append({"set": "held-out surfaces", "size": label, **precision_recall(matches)})
    for name, (width, height) in SIZES.items():
        matches = []
        for i in range(per_size):
            image, drawn = surface_with_truth(i % 6, seed=SYNTHETIC_SEED + i, width=width, height=height)
            matches.append(_score(function, model.size, jpeg(image), [d.box for d in drawn], width, height))
        rows.append({"set": "synthetic, 0-5 defects (tuning generator)", "size": f"{name} JPEG",
                     **precision_recall(matches)})
    return rows


def limit_inputs(png: bool = True) -> list:
    """(name, pixels, encoded bytes) at the input caps' defaults: a 40 Mpx JPEG, a 40 Mpx PNG (PNG has no
    reduced decode: the worst case the pixel cap lets through) and a 17 MB PNG of noise (the byte cap's)."""
    rng = np.random.default_rng(0)
    with open(os.path.join(REPO, "models", "sample_surface.png"), "rb") as f:
        base = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(base, LIMIT_JPEG_SIZE, interpolation=cv2.INTER_LINEAR)
    size, pixels = f"{LIMIT_JPEG_SIZE[0]}x{LIMIT_JPEG_SIZE[1]}", LIMIT_JPEG_SIZE[0] * LIMIT_JPEG_SIZE[1]
    textured = np.clip(big.astype(np.int16) + rng.integers(-6, 7, big.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    inputs = [(f"JPEG {size}", pixels, jpeg(textured))]
    if png:
        noise = rng.integers(0, 256, (LIMIT_PNG_SIZE[1], LIMIT_PNG_SIZE[0], 3), dtype=np.uint8)
        inputs += [(f"PNG {size}", pixels, cv2.imencode(".png", big)[1].tobytes()),
                   (f"PNG {LIMIT_PNG_SIZE[0]}x{LIMIT_PNG_SIZE[1]} noise", noise.shape[0] * noise.shape[1],
                    cv2.imencode(".png", noise)[1].tobytes())]
    return inputs


def measure_limits(functions: dict, n: int, warmup: int) -> list:
    """Whole calls (base64 in, result out) on the largest inputs the default caps let through."""
    rows = []
    for name, pixels, data in limit_inputs():
        value = b64(data)
        for symbol, function in functions.items():
            function.exec([value], None)  # accepted: the caps let it through
            stats = timed(lambda: _uncached(function, value), n, warmup)
            rows.append({"input": name, "mpx": round(pixels / 1e6, 1), "mb": round(len(data) / 1e6, 1),
                         "function": symbol, **stats})
    return rows


def _uncached(function, value):
    function.last_args = None  # the plugin answers a repeated frame from memory; time the real work
    return function.exec([value], None)


def measure_jpeg_check(fixtures: str) -> list:
    """Microseconds the completeness check (a marker walk) costs, per call, best of 5 rounds."""
    with open(os.path.join(fixtures, "images", "cat_1080p.jpg"), "rb") as f:
        camera = f.read()
    large = limit_inputs(png=False)[0][2]
    cases = {"1080p camera JPEG (212 KB)": camera, "same + trailer 10x its size": camera + b"\0" * (10 * len(camera)),
             "same, cut in the middle": camera[:len(camera) // 2],
             f"40 Mpx JPEG ({len(large) / 1e6:.1f} MB)": large, "40 Mpx JPEG, cut at the end": large[:-100]}
    rows = []
    for name, data in cases.items():
        number = 200 if len(data) < 5_000_000 else 10
        best = min(timeit.repeat(lambda: _jpeg_walk(data).complete, number=number, repeat=5)) / number
        rows.append({"input": name, "complete": _jpeg_walk(data).complete, "us": round(best * 1e6, 1)})
    return rows


def markdown_tables(r: dict) -> str:
    """The README-ready tables of these rows."""
    out = ["| defects found (boxes matched one-to-one to the truth) | size | images | defects | boxes | precision "
           "| recall | images exactly right | boxes within 8 model px |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["detection"]:
        out.append(f"| {row['set']} | {row['size']} | {row['images']} | {row['defects']} | {row['boxes']} | "
                   f"{row['precision']} | {row['recall']} | {row['exact_images']} | {row['tight_boxes']} |")
    out += ["", "| input at the caps' defaults | Mpx | MB | function | call median ms | p95 |",
            "| --- | --- | --- | --- | --- | --- |"]
    for row in r["limits"]:
        out.append(f"| {row['input']} | {row['mpx']} | {row['mb']} | {row['function']} | {row['median_ms']} | "
                   f"{row['p95_ms']} |")
    out += ["", "| JPEG completeness check | complete | us a call |", "| --- | --- | --- |"]
    for row in r["jpeg_check"]:
        out.append(f"| {row['input']} | {row['complete']} | {row['us']} |")
    return "\n".join(out)


def measure_all(fixtures: str, quick: bool) -> dict:
    settings = load_settings()
    functions = {"labelImage": ModelFunction(LABEL_IMAGE, settings), "inference": InferenceWithoutPicture(settings)}
    for function in functions.values():
        function.start_loading()
    n, warmup = (3, 1) if quick else (10, 2)
    return {"detection": measure_detection(functions["inference"], fixtures, 30 if quick else 150),
            "limits": measure_limits(functions, n, warmup),
            "jpeg_check": measure_jpeg_check(fixtures)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and calls; numbers not for quoting")
    parser.add_argument("--fixtures", default=os.environ.get("DEFECT_FIXTURES",
                                                             os.path.join(REPO, "..", "shared", "fixtures")))
    args = parser.parse_args()
    print(markdown_tables(measure_all(args.fixtures, args.quick)))


if __name__ == "__main__":
    main()
