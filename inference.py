"""Surface-defect segmentation with OpenVINO: pixels in, defect count, boxes and a picture out.

Pure logic, no eKuiper: `python inference.py IMAGE` prints the JSON result and
writes the side-by-side picture to build/inference.jpg.
"""
import base64
import json
import logging
import os
import sys
import threading
import time

import cv2
import numpy as np
import openvino as ov
from openvino.preprocess import ColorFormat, PrePostProcessor

from image_input import decode_image
from settings import PLUGIN_DIR, load_settings

log = logging.getLogger(__name__)
DEVICES = ("CPU", "GPU", "NPU", "AUTO")


def choose_device(core, wanted):
    """The configured device if this box has it; otherwise CPU, said once in the log."""
    wanted = (wanted or "CPU").upper()
    family = wanted.split(":")[0].split(".")[0]
    if family not in DEVICES:
        raise ValueError(f"device '{wanted}' is not one of {', '.join(DEVICES)}")
    if family == "AUTO" or any(d.split(".")[0] == family for d in core.available_devices):
        return wanted
    log.warning("OpenVINO device %s is not available here (have %s); using CPU", wanted, core.available_devices)
    return "CPU"


class DefectSegmenter:
    """One compiled segmentation model; `inspect(bgr)` returns the defect report."""

    def __init__(self, model_path, device="CPU", threshold=0.5, color="RGB", min_area=0, jpeg_quality=80,
                 threads=0):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        core = ov.Core()
        model = core.read_model(model_path)
        if len(model.inputs) != 1:
            raise ValueError(f"{model_path} has {len(model.inputs)} inputs; a one-image segmenter is needed")
        shape = model.input().get_partial_shape().to_shape()
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ValueError(f"{model_path} input shape {shape} is not an NCHW or NHWC colour image")
        layout = "NCHW" if shape[1] == 3 else "NHWC"
        self.height, self.width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        # The graph takes our decoded frame as it is (uint8 NHWC BGR) and converts
        # colour order, layout and element type itself, fused into the first layer.
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR)
        ppp.input().model().set_layout(ov.Layout(layout))
        ppp.input().preprocess().convert_color(ColorFormat.RGB if color.upper() == "RGB" else ColorFormat.BGR)
        model = ppp.build()
        self.device = choose_device(core, device)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and self.device == "CPU":
            # The default model is memory-bound pooling on one channel: 1 thread was faster
            # and steadier than 2 on a 2-core box, and leaves a core for kuiperd and decoding.
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, self.device, config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()  # one infer request, one call at a time
        self.threshold = float(threshold)
        self.min_area = float(min_area)
        self.jpeg_quality = int(jpeg_quality)

    @property
    def size(self):
        """(width, height) of the model input."""
        return int(self.width), int(self.height)

    decode_size = size  # the resize to the model input area-averages; no need for more pixels

    def segment(self, model_input, threshold=None):
        """Defect mask (uint8 0/1, model size) for a BGR image already resized to the model size."""
        with self.lock:
            output = self.request.infer([model_input[np.newaxis]])[0]
        return mask_from_output(output, self.threshold if threshold is None else threshold)

    def inspect(self, bgr, threshold=None, original_size=None, with_picture=True):
        """Defect report for a BGR image of any size.

        original_size: (w, h) of the image before a reduced decode, so boxes are
        reported in the pixels of the image the user sent.
        """
        started = time.perf_counter()
        # Area averaging keeps thin scratches when shrinking a lot; bilinear is as good
        # and several times faster below 2x (measured in bench/).
        shrink = max(bgr.shape[1] / self.width, bgr.shape[0] / self.height)
        model_input = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)
        mask = self.segment(model_input, threshold)
        elapsed_ms = (time.perf_counter() - started) * 1000
        width, height = original_size or (bgr.shape[1], bgr.shape[0])
        defects = regions(mask, width / self.width, height / self.height, self.min_area)
        report = {"inference time": round(elapsed_ms, 2), "defect": len(defects), "defects": defects,
                  "width": width, "height": height}
        if with_picture:
            report["base64"] = side_by_side_jpeg(model_input, mask, self.jpeg_quality)
        return report


def mask_from_output(output, threshold):
    """0/1 mask (H, W) from the common segmentation output layouts.

    [1,1,H,W] / [1,H,W] float: probability, thresholded; [1,C,H,W] float: class
    scores, argmax with class 0 = background; [1,H,W] integer: class map.
    """
    output = np.asarray(output)
    if output.ndim == 4 and output.shape[1] == 1:
        output = output[:, 0]
    if output.ndim == 4:
        return (np.argmax(output[0], axis=0) != 0).astype(np.uint8)
    if output.ndim != 3:
        raise ValueError(f"segmentation output of shape {output.shape} is not [1,C,H,W], [1,1,H,W] or [1,H,W]")
    if np.issubdtype(output.dtype, np.integer):
        return (output[0] != 0).astype(np.uint8)
    return (output[0] > threshold).astype(np.uint8)


def regions(mask, scale_x, scale_y, min_area=0):
    """Separate defect regions (outer contours; holes do not count) as boxes in input pixels."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        # Mask pixels inside this contour: holes and other regions in the box do not count,
        # and a 1-pixel-wide scratch has area (contourArea would give it none).
        inside = np.zeros((h, w), np.uint8)
        cv2.drawContours(inside, [contour], -1, 1, cv2.FILLED, offset=(-x, -y))
        area = float(np.count_nonzero(inside & mask[y:y + h, x:x + w])) * scale_x * scale_y
        if area < min_area:
            continue
        found.append({"x": round(x * scale_x), "y": round(y * scale_y), "w": max(1, round(w * scale_x)),
                      "h": max(1, round(h * scale_y)), "area": max(1, round(area))})
    return sorted(found, key=lambda d: (d["y"], d["x"]))


def side_by_side_jpeg(model_input, mask, quality):
    """Base64 JPEG: the input at model size, and the mask in white, side by side."""
    picture = np.hstack([model_input, cv2.cvtColor(mask * 255, cv2.COLOR_GRAY2BGR)])
    ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


def segmenter_from_settings(settings):
    conf = settings["defect"]
    return DefectSegmenter(conf["model"], conf.get("device", "CPU"), conf.get("threshold", 0.5),
                           conf.get("color", "RGB"), conf.get("min_area", 0), conf.get("jpeg_quality", 80),
                           conf.get("threads", 0))


def main(argv):
    logging.basicConfig(level=logging.INFO)
    path = argv[1] if len(argv) > 1 else os.path.join(PLUGIN_DIR, "models", "sample_surface.png")
    settings = load_settings()
    segmenter = segmenter_from_settings(settings)
    with open(path, "rb") as f:
        pixels, size = decode_image(f.read(), settings["input"]["max_pixels"], settings["input"]["max_bytes"],
                                    segmenter.decode_size)
    report = segmenter.inspect(pixels, original_size=size)
    picture = os.path.join(PLUGIN_DIR, "build", "inference.jpg")
    os.makedirs(os.path.dirname(picture), exist_ok=True)
    with open(picture, "wb") as f:
        f.write(base64.b64decode(report["base64"]))
    print(json.dumps({**report, "base64": f"<{len(report['base64'])} chars, written to {picture}>"}))


if __name__ == "__main__":
    main(sys.argv)
