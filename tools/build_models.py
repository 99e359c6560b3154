"""`make models`: fill models/ with what the plugin needs, from the fixtures and from our own code.

- the labelling model and its labels, copied from the fixtures;
- models/model.xml + model.bin: the default surface-defect segmenter, an OpenVINO
  IR built here with OpenVINO's graph API (no outside weights);
- models/deeplabv3.xml + .bin: the fixture DeepLab v3 .tflite converted to IR, so
  the tests prove the IR path on a real learned network;
- models/sample_surface.png: a synthetic surface with 3 defects, the default
  image of `python inference.py`;
- models/sample_cat.jpg: the fixtures' cat.bmp as a small JPEG, the default image
  of `python label.py` (made here, not committed: fixture images stay out of git).
"""
import argparse
import os
import shutil
import sys

import numpy as np
import openvino as ov
import openvino.opset15 as ops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(REPO, "models")
if REPO not in sys.path:  # run by path (`make models`): tools/ is imported from the repo root
    sys.path.insert(0, REPO)
LABEL_FILES = ("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt")

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


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixtures", required=True, help="path to shared/fixtures")
    args = parser.parse_args(argv)
    fixture_models = os.path.join(args.fixtures, "models")
    for name in LABEL_FILES:
        shutil.copyfile(os.path.join(fixture_models, name), os.path.join(MODELS_DIR, name))
    ov.save_model(defect_model(), os.path.join(MODELS_DIR, "model.xml"))
    deeplab = ov.convert_model(os.path.join(fixture_models, "deeplabv3_mnv2_dm05_pascal_quant.tflite"))
    ov.save_model(deeplab, os.path.join(MODELS_DIR, "deeplabv3.xml"))
    import cv2

    from tools.synthetic_surface import surface_image
    cv2.imwrite(os.path.join(MODELS_DIR, "sample_surface.png"), surface_image(3, seed=7))
    cat = cv2.imread(os.path.join(args.fixtures, "images", "cat.bmp"))
    cv2.imwrite(os.path.join(MODELS_DIR, "sample_cat.jpg"), cat, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"models: wrote {sorted(os.listdir(MODELS_DIR))}")


if __name__ == "__main__":
    main(sys.argv[1:])
