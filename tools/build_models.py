"""`make models`: fill models/ with what the plugin needs, from the fixtures (or their upstream home) and our code.

- the labelling model and its labels: copied from the fixtures folder when there is one
  (`--fixtures`, CI and tests stay offline), else downloaded from their upstream home, the Coral
  `test_data` repository at a pinned commit (tools/fetch_models.py: each file's sha256 checked first);
- models/model.xml + model.bin: the default surface-defect segmenter, an OpenVINO
  IR built here with OpenVINO's graph API (no outside weights);
- models/deeplabv3.xml + .bin: the DeepLab v3 .tflite (fixtures or upstream) converted to IR, so
  the tests prove the IR path on a real learned network;
- models/sample_surface.png: a synthetic surface with 3 defects, the default
  image of `python inference.py`;
- models/sample_cat.jpg: cat.bmp (fixtures or upstream) as a small JPEG, the default image
  of `python label.py` (made here, not committed: fixture images stay out of git);
- models/sample_cat_720p.jpg, models/sample_parrot.jpg: the camera clip's first two scenes
  (tools/video_clip.py, `make demo`): cat.bmp stretched to a 1280x720 frame, as the fixtures'
  cat_720p.jpg is, and parrot.jpg (fixtures or upstream) as it is.

A download that fails (HTTP error, server unreachable, too slow, too large, checksum mismatch)
prints one line naming the file and exits 1; nothing half-written is left in the output folder.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(REPO, "models")
if REPO not in sys.path:  # run by path (`make models`): tools/ is imported from the repo root
    sys.path.insert(0, REPO)
# OpenVINO without its converter, whose import sends a usage event (core/openvino_runtime.py):
# the runtime reads the TFLite model itself, so nothing here needs the converter.
import openvino.opset15 as ops  # noqa: E402

from core.openvino_runtime import ov  # noqa: E402
from tools.fetch_models import (  # noqa: E402
    DOWNLOAD_BUDGET_S,
    SOURCES,
    UPSTREAM_URL,
    DownloadError,
    fetch_sources,
)

LABEL_FILES = ("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt")
DEEPLAB_FILE = "deeplabv3_mnv2_dm05_pascal_quant.tflite"
CAT_FILE = "cat.bmp"
PARROT_FILE = "parrot.jpg"
CAMERA_FRAME = (1280, 720)  # sample_cat_720p.jpg's size, a camera's

# Defect model geometry and sensitivity, in model pixels and texture deviations;
# tuned on synthetic surfaces (tools/synthetic_surface.py), 0 miscounts in 240.
MODEL_SIZE = 384          # square input
BACKGROUND_WINDOW = 61    # local-mean window; defects smaller than this stand out
Z_LOW = 4.0               # a defect pixel departs from its surroundings this much...
Z_PEAK = 6.0              # ...and lies near a pixel that departs this much
PEAK_WINDOW = 11          # "near": within this window
JOIN_WINDOW = 5           # pieces of one scratch closer than this are one defect
SLOPE = 4.0               # steepness of the probability around the thresholds


def _box_blur(x, size):
    """Separable mean filter: two 1-D average pools cost 2*size per pixel, not size**2."""
    pad = size // 2
    x = ops.avg_pool(x, [1, 1], [0, pad], [0, pad], [1, size], exclude_pad=True)
    return ops.avg_pool(x, [1, 1], [pad, 0], [pad, 0], [size, 1], exclude_pad=True)


def _box_max(x, size):
    """Separable max filter (a dilation), 1xN then Nx1: same output as NxN, about half the time."""
    pad = size // 2
    x = ops.max_pool(x, [1, 1], [1, 1], [0, pad], [0, pad], [1, size]).output(0)
    return ops.max_pool(x, [1, 1], [1, 1], [pad, 0], [pad, 0], [size, 1]).output(0)


def _step(x, threshold):
    return ops.sigmoid(ops.multiply(ops.subtract(x, ops.constant(np.float32(threshold))),
                                    ops.constant(np.float32(SLOPE))))


def defect_model(size=MODEL_SIZE):
    """Local-contrast anomaly detector: RGB float [1,3,S,S] in, defect probability [1,1,S,S] out.

    A defect is a patch that departs from its surroundings by many times the
    texture's own typical deviation, dark or bright, spot or scratch.
    """
    image = ops.parameter([1, 3, size, size], np.float32, name="image")
    luma = ops.convolution(image, ops.constant(np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)),
                           [1, 1], [0, 0], [0, 0], [1, 1])
    detail = _box_blur(luma, 3)  # averages out the finest grain so single pixels do not fire
    deviation = ops.subtract(detail, _box_blur(luma, BACKGROUND_WINDOW))
    # Mean absolute deviation over the frame: robust to the few defect pixels; x1.25 ~ sigma.
    texture = ops.add(ops.multiply(ops.reduce_mean(ops.abs(deviation), [2, 3], keep_dims=True),
                                   ops.constant(np.float32(1.25))), ops.constant(np.float32(0.5)))
    z = ops.divide(ops.abs(deviation), texture)
    # Hysteresis in one pass: weak pixels count only near a strong one, so a defect
    # keeps its whole shape while lone texture peaks stay below the line.
    probability = ops.multiply(_step(z, Z_LOW), _step(_box_max(z, PEAK_WINDOW), Z_PEAK))
    probability = _box_max(probability, JOIN_WINDOW)
    probability.get_node().set_friendly_name("defect_probability")
    model = ov.Model([probability], [image], "surface_defect_local_contrast")
    model.output(0).get_tensor().set_names({"defect_probability"})
    return model


def build(paths: dict[str, str], out_dir: str, copy_labels: bool) -> None:
    """Write the models/ files into out_dir.

    Args:
        paths: the SOURCES names mapped to local files (in the fixtures folder, or downloaded).
        out_dir: the output folder.
        copy_labels: copy the label model and labels into out_dir (a download put them there already).
    """
    if copy_labels:
        for name in LABEL_FILES:
            shutil.copyfile(paths[name], os.path.join(out_dir, name))
    ov.save_model(defect_model(), os.path.join(out_dir, "model.xml"))
    deeplab = ov.Core().read_model(paths[DEEPLAB_FILE])
    ov.save_model(deeplab, os.path.join(out_dir, "deeplabv3.xml"))
    import cv2

    from tools.synthetic_surface import surface_image
    cv2.imwrite(os.path.join(out_dir, "sample_surface.png"), surface_image(3, seed=7))
    cat = cv2.imread(paths[CAT_FILE])
    cv2.imwrite(os.path.join(out_dir, "sample_cat.jpg"), cat, [cv2.IMWRITE_JPEG_QUALITY, 85])
    # The fixtures' cat_720p.jpg is this same photo stretched to 16:9 (from a larger original: within
    # 4 grey levels on average of this resize); its top-1 stays 286:Egyptian cat, also once the clip
    # crops it to 4:3.
    cv2.imwrite(os.path.join(out_dir, "sample_cat_720p.jpg"),
                cv2.resize(cat, CAMERA_FRAME, interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 90])
    shutil.copyfile(paths[PARROT_FILE], os.path.join(out_dir, "sample_parrot.jpg"))


def main(argv: list[str]) -> int:
    """`make models`: returns 0, or exits 1 with one line on stderr when a download failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", help="the shared fixtures folder to copy from; without it the sources "
                        "are downloaded")
    parser.add_argument("--url", default=os.environ.get("MODELS_URL") or UPSTREAM_URL,
                        help="where to download from (default: $MODELS_URL, else the pinned Coral test_data commit)")
    parser.add_argument("--out", default=MODELS_DIR, help="output folder (default: the repo's models/)")
    parser.add_argument("--budget-s", type=float, default=DOWNLOAD_BUDGET_S,
                        help=f"time bound of each download, seconds (default: {DOWNLOAD_BUDGET_S})")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.fixtures:
        missing = [src.fixture_path for src in SOURCES.values()
                   if not os.path.isfile(os.path.join(args.fixtures, src.fixture_path))]
        if missing:
            sys.exit(f"models: {', '.join(missing)} not found in the fixtures folder {args.fixtures}")
        build({name: os.path.join(args.fixtures, src.fixture_path) for name, src in SOURCES.items()},
              args.out, copy_labels=True)
    else:
        with tempfile.TemporaryDirectory(prefix=".sources.", dir=args.out) as work_dir:
            try:
                paths = fetch_sources(args.url, LABEL_FILES, args.out, work_dir, args.budget_s)
            except DownloadError as e:
                sys.exit(f"models: {e}")
            build(paths, args.out, copy_labels=False)
    print(f"models: wrote {sorted(os.listdir(args.out))} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
