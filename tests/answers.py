"""Two runs' answers compared as the platform promise says: same top-1, confidences within 0.02,
same defect counts, boxes within a pixel. Shared by tests/test_label.py (LiteRT against OpenVINO)
and tests/platforms/ (a chroot's answers against this box's)."""
CONFIDENCE_TOLERANCE = 0.02
BOX_TOLERANCE_PX = 1

# The fixtures' photos (images/) and defect surfaces (images/surfaces/bad, 1 to 3 defects each).
PHOTOS = ["bird.bmp", "cat.bmp", "cat_1080p.jpg", "cat_720p.jpg", "dog_segmentation.bmp", "grace_hopper.bmp",
          "hot_dog.jpg", "owl.jpg", "parrot.jpg"]
SURFACES = ["bad_00_1.png", "bad_01_2.png", "bad_02_3.png", "bad_05_3.png", "bad_08_3.png"]


def label_differences(expected: list[dict], got: list[dict], tolerance: float = CONFIDENCE_TOLERANCE) -> list[str]:
    """What differs between two labelImage answers (empty: the same answer)."""
    if not got or got[0]["label"] != expected[0]["label"]:
        return [f"top-1 {got[:1]} instead of {expected[0]}"]
    confidences = {r["label"]: r["confidence"] for r in got}
    return [f"{r['label']}: confidence {confidences.get(r['label'])} instead of {r['confidence']}"
            for r in expected
            if abs(confidences.get(r["label"], 0.0) - r["confidence"]) > tolerance]


def defect_differences(expected: dict, got: dict) -> list[str]:
    """What differs between two inference answers (empty: the same count, boxes within a pixel)."""
    if got["defect"] != expected["defect"] or len(got["defects"]) != len(expected["defects"]):
        return [f"{got['defect']} defects instead of {expected['defect']}"]
    return [f"box {b} instead of {a}" for a, b in zip(expected["defects"], got["defects"], strict=True)
            if any(abs(a[k] - b[k]) > BOX_TOLERANCE_PX for k in ("x", "y", "w", "h"))]
