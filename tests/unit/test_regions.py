"""A call's region of interest and its pictures: `{"roi": [x, y, w, h]}` runs the model on that part only and
reports boxes in the whole image's pixels; `{"picture": "overlay" | "none"}` (core/regions.py,
core/image_input.py, inference.py, core/serving.py)."""
import base64
import os

import cv2
import numpy as np
import pytest

from core.catalog import INFERENCE, LABEL_IMAGE
from core.errors import InputError
from core.image_input import decode_image
from core.regions import Roi, region_box
from core.serving import ServedFunction
from tests.support.detection_score import Match, match_boxes
from tests.support.paths import REPO
from tools.synthetic_surface import surface_with_truth

LIMITS = {"max_pixels": 40_000_000, "max_bytes": 20_000_000}


@pytest.mark.parametrize("given, size, box", [
    ([10, 20, 100, 50], (640, 480), (10, 20, 100, 50)),
    ("10,20,100,50", (640, 480), (10, 20, 100, 50)),
    ([0.5, 0, 0.5, 1], (640, 480), (320, 0, 320, 480)),
    ([0, 0, 1, 1], (641, 479), (0, 0, 641, 479)),
    ([600, 440, 40, 40], (640, 480), (600, 440, 40, 40)),
])
def test_a_region_in_pixels_or_fractions_is_whole_pixels_of_the_image(given, size, box):
    assert region_box(Roi.parse(given), size) == box


@pytest.mark.parametrize("given", [[1, 2, 3], [0, 0, 0, 10], [-1, 0, 10, 10], [0, 0, "a", 1], "x,y,w,h",
                                   [0, 0, float("nan"), 1], [1e308, 0, 1e308, 1], [10**400, 0, 1, 1],
                                   [True, 0, 1, 1], {"x": 1}, "1," * 10_000])
def test_a_malformed_region_is_one_line(given):
    with pytest.raises(InputError, match=r"^roi must be \[x, y, w, h\]") as caught:
        Roi.parse(given)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


@pytest.mark.parametrize("given", [[600, 0, 41, 10], [0, 470, 10, 11], [0.6, 0, 0.5, 1], [639, 0, 1, 1]])
def test_a_region_outside_the_image_is_refused_in_one_line(given):
    with pytest.raises(InputError, match=r"^roi \[.*\] is outside the 640x480 image"):
        region_box(Roi.parse(given), (640, 480))


def test_the_decoded_region_is_the_region_of_the_whole_decode():
    image = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    pixels, size = decode_image(png, **LIMITS, roi=Roi.parse([100, 50, 300, 200]))
    assert size == (640, 480) and np.array_equal(pixels, image[50:250, 100:400])
    with pytest.raises(InputError, match="outside"):  # refused before any pixel is decoded
        decode_image(png, **LIMITS, roi=Roi.parse([400, 0, 300, 10]))


def test_a_large_jpeg_region_is_decoded_large_enough_for_the_model():
    """A reduced decode would give the region fewer pixels than the model takes: the reduction follows
    the region, not the whole frame."""
    image = np.full((2160, 3840, 3), 128, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    whole, _ = decode_image(jpeg, **LIMITS, fit=(384, 384))
    region, size = decode_image(jpeg, **LIMITS, fit=(384, 384), roi=Roi.parse([0, 0, 960, 540]))
    assert size == (3840, 2160) and whole.shape[:2] == (540, 960)  # 1/4 of the whole frame
    assert region.shape[0] >= 384 and region.shape[1] >= 384, region.shape


def served_inference(settings):
    function = ServedFunction(INFERENCE, {**settings, "defect": {**settings["defect"], "threads": 1}})
    return function, function.build(function.settings)


def split_between_defects(drawn, width):
    """A column that crosses no drawn defect, near the middle."""
    for column in sorted(range(width // 4, 3 * width // 4), key=lambda c: abs(c - width // 2)):
        if not any(d.box[0] - 4 <= column <= d.box[0] + d.box[2] + 4 for d in drawn):
            return column
    raise AssertionError("no column between the defects")


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_boxes_of_a_region_are_in_the_whole_images_pixels(settings, seed):
    function, model = served_inference(settings)
    image, drawn = surface_with_truth(5, seed=seed, width=1280, height=960)
    split = split_between_defects(drawn, 1280)
    right = [d.box for d in drawn if d.box[0] > split]
    assert right, (seed, split)  # the region holds defects: the match below checks boxes, not an empty list
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    for roi in ([split, 0, 1280 - split, 960], [split / 1280, 0, 1 - split / 1280, 1]):
        report = function.serve_one(model, jpeg, {"roi": roi})
        assert (report["width"], report["height"]) == (1280, 960)
        assert all(box["x"] >= split for box in report["defects"]), report["defects"]
        scale_x, scale_y = (1280 - split) / model.width, 960 / model.height
        assert match_boxes(report["defects"], right, scale_x, scale_y) == \
            Match(found=len(right), stray_boxes=0, missed=0, loose_boxes=0), (roi, report["defects"], right)
        assert report["defect"] == len(right)


def test_labelling_a_region_labels_what_is_in_it(settings):
    """The cat fills the left of a frame made of the cat and a grey right half: its region is labelled
    as the whole cat picture is; the grey half is not a cat."""
    function = ServedFunction(LABEL_IMAGE, {**settings, "label": {**settings["label"], "runtime": "litert",
                                                                    "threads": 1}})
    model = function.build(function.settings)
    cat = cv2.imread(LABEL_IMAGE.sample)
    frame = np.hstack([cat, np.full_like(cat, 128)])
    png = cv2.imencode(".png", frame)[1].tobytes()
    alone = function.serve_one(model, cv2.imencode(".png", cat)[1].tobytes(), None)
    region = function.serve_one(model, png, {"roi": [0, 0, 0.5, 1]})
    other = function.serve_one(model, png, {"roi": [0.5, 0, 0.5, 1]})
    assert region == alone
    assert "cat" in region[0]["label"] and "cat" not in other[0]["label"]


def decoded_picture(report):
    return cv2.imdecode(np.frombuffer(base64.b64decode(report["base64"]), np.uint8), cv2.IMREAD_COLOR)


def red(pixels):
    pixels = pixels.astype(int)
    return (pixels[..., 2] > 150) & (pixels[..., 1] < 100) & (pixels[..., 0] < 100)


def test_the_overlay_outlines_each_defect_in_red_at_the_frames_aspect_ratio(settings):
    function, model = served_inference(settings)
    image, drawn = surface_with_truth(3, seed=12, width=960, height=540)
    png = cv2.imencode(".png", image)[1].tobytes()
    report = function.serve_one(model, png, {"picture": "overlay"})
    picture = decoded_picture(report)
    assert picture.shape[:2] == (540, 960)  # the frame's own size, not the model's square
    assert report["defect"] == 3
    for box in report["defects"]:
        x, y, w, h = box["x"], box["y"], box["w"], box["h"]
        outline = np.concatenate([picture[y, x:x + w], picture[y + h - 1, x:x + w],
                                  picture[y:y + h, x], picture[y:y + h, x + w - 1]])
        assert red(outline).mean() > 0.8, box
    # Away from the boxes and the count, the frame is as sent (the default model has no anomaly map).
    outside = np.ones(picture.shape[:2], bool)
    for box in report["defects"]:
        outside[max(0, box["y"] - 4):box["y"] + box["h"] + 4, max(0, box["x"] - 4):box["x"] + box["w"] + 4] = False
    outside[:60, :200] = False
    assert np.abs(picture.astype(int) - image.astype(int))[outside].mean() < 3
    assert not red(picture)[outside].any()
    corner = picture[:20, :60]  # the count: white text on black
    assert (corner.max(axis=2) < 40).mean() > 0.5 and (corner.min(axis=2) > 200).any()


def test_the_side_by_side_picture_stays_the_default_and_none_leaves_it_out(settings):
    function, model = served_inference(settings)
    image, _ = surface_with_truth(2, seed=9)
    png = cv2.imencode(".png", image)[1].tobytes()
    default = function.serve_one(model, png, None)
    assert decoded_picture(default).shape[:2] == (model.height, 2 * model.width)
    assert function.serve_one(model, png, {"picture": "side-by-side"})["base64"] == default["base64"]
    without = function.serve_one(model, png, {"picture": "none", "threshold": 0.5})
    assert "base64" not in without and without["defects"] == default["defects"]
    with pytest.raises(InputError, match="^picture must be one of side-by-side, overlay, none"):
        function.serve_one(model, png, {"picture": "heat"})
    with pytest.raises(InputError, match="^the options object takes k, model, explain, roi; got 'picture'"):
        ServedFunction(LABEL_IMAGE, settings).check_option({"picture": "overlay"}, None)


def test_the_pictures_the_docs_show_are_what_the_function_draws(tmp_path):
    """docs/functions.md shows both pictures (tools/docs_pictures.py): drawn again, they match the committed
    files (JPEG and a CPU's rounding aside) and docs/functions.md links both."""
    from tools.docs_pictures import FOLDER, PICTURES, render
    answers = render(str(tmp_path))
    for picture in PICTURES:
        drawn = cv2.imread(str(tmp_path / f"{picture}.jpg"))
        committed = cv2.imread(os.path.join(FOLDER, f"{picture}.jpg"))
        assert committed is not None and drawn.shape == committed.shape, picture
        assert np.abs(drawn.astype(int) - committed.astype(int)).mean() < 2, picture
        assert answers[picture]["defect"] == 3
    with open(os.path.join(REPO, "docs", "functions.md"), encoding="utf-8") as f:
        page = f.read()
    assert all(f"(pictures/{picture}.jpg)" in page for picture in PICTURES)
