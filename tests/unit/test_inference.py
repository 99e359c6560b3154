"""inference's logic: the default IR model on synthetic surfaces, DeepLab IR on the dog picture."""
import base64

import cv2
import numpy as np
import pytest

from core.image_input import decode_image
from core.results import Region, answer
from inference import DefectSegmenter, choose_device, mask_from_output, regions
from tests.support.detection_score import Match, box_is_on, match_boxes, precision_recall
from tests.support.paths import REPO, fixture_path
from tools.synthetic_surface import surface_image, surface_with_truth

CAMERA_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def truth_match(segmenter, report, drawn):
    """The report's boxes against the boxes the generator drew (one-to-one, see detection_score)."""
    return match_boxes(report["defects"], [d.box for d in drawn], report["width"] / segmenter.width,
                       report["height"] / segmenter.height)


@pytest.mark.parametrize("defects", range(6))
@pytest.mark.parametrize("seed", [11, 22, 33, 44])
def test_counts_drawn_defects_and_boxes_sit_on_them(segmenter, defects, seed):
    image, drawn = surface_with_truth(defects, seed=seed * 100 + defects)
    report = answer(segmenter.inspect(image))
    assert report["defect"] == defects
    assert len(report["defects"]) == defects
    # Each drawn defect is covered by exactly one box, no box lies off a defect, and no box
    # reaches more than 8 model pixels beyond what was drawn.
    assert truth_match(segmenter, report, drawn) == Match(found=defects, stray_boxes=0, missed=0, loose_boxes=0)


def test_the_box_check_refuses_boxes_that_are_not_on_a_defect():
    """The check above must not pass by chance: random boxes of defect size are almost never "on" one."""
    rng = np.random.default_rng(5)
    _, drawn = surface_with_truth(5, seed=77)
    boxes = [(int(rng.integers(0, 600)), int(rng.integers(0, 440)), int(rng.integers(10, 90)),
              int(rng.integers(10, 90))) for _ in range(1000)]
    on = sum(any(box_is_on(box, d.box) for d in drawn) for box in boxes)
    assert on < 20, on  # 14 (1.4 %); the old check (a pixel 40 grey levels off the mean) passed 39 % on a clean surface


@pytest.mark.parametrize("size", CAMERA_SIZES)
def test_counts_and_boxes_at_camera_sizes_through_jpeg(segmenter, size):
    """720p and 1080p JPEGs through the plugin's decode path (reduced decode) and model.

    The model sees every frame squeezed to 384x384, so at these sizes thin, near-vertical
    scratches can come out split or faint: measured (make bench, detection rows), not perfect.
    The floor asserted here is what the README states.
    """
    width, height = CAMERA_SIZES[size]
    matches, counts = [], []
    for seed in (11, 22, 33, 44, 55, 66, 77, 88):
        for defects in range(6):
            image, drawn = surface_with_truth(defects, seed=seed * 100 + defects, width=width, height=height)
            jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            pixels, original = decode_image(jpeg, 40_000_000, 20_000_000, segmenter.decode_size)
            report = answer(segmenter.inspect(pixels, original_size=original))
            assert (report["width"], report["height"]) == (width, height)
            matches.append(truth_match(segmenter, report, drawn))
            counts.append((report["defect"], defects))
    score = precision_recall(matches)
    assert score["precision"] >= 0.93 and score["recall"] >= 0.93, score  # measured 0.95/0.975 (720p), 1.0/0.99 (1080p)
    assert score["tight_boxes"] == 1.0, score
    assert all(abs(found - drawn) <= 1 for found, drawn in counts), counts
    assert sum(found == drawn for found, drawn in counts) >= 0.9 * len(counts), counts


def test_report_has_tutorial_keys_and_boxes_in_input_pixels(segmenter):
    image, drawn = surface_with_truth(3, seed=5, width=1280, height=960)
    report = answer(segmenter.inspect(image))
    assert {"inference time", "defect", "base64", "defects", "width", "height"} <= set(report)
    assert (report["width"], report["height"]) == (1280, 960)
    assert report["inference time"] > 0
    for box in report["defects"]:
        assert 0 <= box["x"] < 1280 and 0 <= box["y"] < 960
        assert box["x"] + box["w"] <= 1280 + 2 and box["y"] + box["h"] <= 960 + 2
        assert box["area"] > 0
    # the boxes sit on the drawn defects, in the pixels of the 1280x960 input
    assert truth_match(segmenter, report, drawn) == Match(found=3, stray_boxes=0, missed=0, loose_boxes=0)


def test_picture_is_input_and_mask_side_by_side(segmenter):
    report = answer(segmenter.inspect(surface_image(2, seed=9)))
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(report["base64"]), np.uint8), cv2.IMREAD_COLOR)
    height, width = picture.shape[:2]
    assert (width, height) == (2 * segmenter.width, segmenter.height)
    mask_half = picture[:, width // 2:, 0]
    assert (mask_half > 128).any() and (mask_half < 128).mean() > 0.9  # a few white defects on black


def test_threshold_argument_changes_the_mask(segmenter):
    image = surface_image(3, seed=3)
    assert answer(segmenter.inspect(image, threshold=0.5))["defect"] == 3
    assert answer(segmenter.inspect(image, threshold=1.0))["defect"] == 0


def test_deeplab_ir_segments_the_dog(settings):
    deeplab = DefectSegmenter(model=f"{REPO}/models/deeplabv3.xml").load()
    image = cv2.imread(fixture_path("images", "dog_segmentation.bmp"))
    trimap = cv2.imread(fixture_path("images", "dog_segmentation_mask.bmp"), cv2.IMREAD_GRAYSCALE)
    mask = deeplab.segment(cv2.resize(image, deeplab.size, interpolation=cv2.INTER_LINEAR))
    mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    dog = trimap == 0
    iou = (mask & dog).sum() / (mask | dog).sum()
    assert iou >= 0.85, iou


@pytest.mark.parametrize("output,expected", [
    (np.array([[[[0.2, 0.9], [0.6, 0.1]]]], np.float32), [[0, 1], [1, 0]]),           # [1,1,H,W] probability
    (np.array([[[0.2, 0.9], [0.6, 0.1]]], np.float32), [[0, 1], [1, 0]]),             # [1,H,W] probability
    (np.array([[[[5, 0], [0, 5]], [[0, 5], [5, 0]]]], np.float32), [[0, 1], [1, 0]]),  # [1,C,H,W] scores
    (np.array([[[0, 12], [3, 0]]], np.int64), [[0, 1], [1, 0]]),                       # [1,H,W] class map
])
def test_output_layouts(output, expected):
    assert mask_from_output(output, 0.5).tolist() == expected


def test_holes_do_not_count_as_regions():
    mask = np.zeros((50, 50), np.uint8)
    cv2.rectangle(mask, (5, 5), (40, 40), 1, -1)
    mask[15:30, 15:30] = 0  # a hole
    mask[2, 45] = 1        # a second, separate region
    found = regions(mask, 2.0, 2.0)
    assert len(found) == 2
    assert found[1] == Region(x=10, y=10, w=72, h=72, area=4 * (36 * 36 - 15 * 15))


def test_area_counts_only_the_regions_own_pixels():
    mask = np.zeros((60, 60), np.uint8)
    cv2.line(mask, (0, 0), (59, 59), 1, 1)  # a diagonal scratch whose box covers the whole mask
    mask[40:45, 5:10] = 1                   # a separate spot inside that box
    found = {(region.w, region.h): region.area for region in regions(mask, 1.0, 1.0)}
    assert found == {(60, 60): 60, (5, 5): 25}


def test_absent_device_falls_back_to_cpu():
    import openvino as ov
    assert choose_device(ov.Core(), "NPU") == ("NPU" if "NPU" in ov.Core().available_devices else "CPU")
    with pytest.raises(ValueError, match="not one of"):
        choose_device(ov.Core(), "TPU")
