"""Surface-defect segmentation with OpenVINO: pixels in, defect count, boxes and a picture out.

Pure logic, no eKuiper: `python inference.py [IMAGE or FOLDER ...]` prints one JSON line per
image; `--out` writes the side-by-side picture (`--help` for the options).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np

from core import command_line
from core.errors import ConfigError, first_line
from core.image_input import decode_image
from core.model_names import MODEL_SUFFIXES, metadata_beside
from core.regions import region_box
from core.results import Inspection, Region, answer
from core.settings import DEVICES, PLUGIN_DIR, check_value, defaults, device_family, is_number, load_settings

if TYPE_CHECKING:
    from core.openvino_runtime import ov

log = logging.getLogger(__name__)
DEFAULTS = defaults("defect")
SAMPLE_IMAGE = os.path.join(PLUGIN_DIR, "models", "sample_surface.png")  # made by `make models`


def choose_device(core: ov.Core, wanted: str) -> str:
    """The configured device if this box has it; otherwise CPU, said once in the log."""
    wanted = (wanted or "CPU").upper()
    family = device_family(wanted)
    if family not in DEVICES:
        raise ValueError(f"device '{wanted}' is not one of {', '.join(DEVICES)}")
    if family == "AUTO" or any(d.split(".")[0] == family for d in core.available_devices):
        return wanted
    if wanted not in _FALLBACKS_LOGGED:  # a model is built more than once (threads measured, reloads)
        _FALLBACKS_LOGGED.add(wanted)
        log.warning("OpenVINO device %s is not available here (have %s); using CPU", wanted, core.available_devices)
    return "CPU"


_FALLBACKS_LOGGED: set = set()


# Output names of an anomalib export (anomalib 1.x and 2.x, `anomalib export --export_type openvino`).
ANOMALIB_OUTPUTS = {"pred_score", "pred_label", "anomaly_map", "pred_mask"}


class ChosenOutputs(NamedTuple):
    """Indices of the model outputs the plugin reads; None where the model has no such output."""
    mask: int          # the defect map the regions come from
    anomaly_map: int | None  # thresholded instead of `mask` when a call passes a threshold
    score: int | None  # image-level anomaly score (anomalib's pred_score)
    label: int | None  # image-level verdict (anomalib's pred_label)
    anomalib: bool     # the outputs are an anomalib export's


def choose_outputs(model: ov.Model, output: str | None = None) -> ChosenOutputs:
    """Which output holds the defect map, picked by name: `output` if configured; else pred_mask;
    else anomaly_map (thresholded); else the only output. A model's first output may be a score."""
    index = {}
    for i, port in enumerate(model.outputs):
        for name in port.get_names():
            index.setdefault(name, i)
    listed = ", ".join(sorted(index)) or "none named"
    if output:
        if output not in index:
            raise ValueError(f"defect.output '{output}' is not an output of the model (it has: {listed})")
        mask, anomaly_map = index[output], None
    elif "pred_mask" in index:
        mask, anomaly_map = index["pred_mask"], index.get("anomaly_map")
    elif "anomaly_map" in index:
        mask = anomaly_map = index["anomaly_map"]
    elif len(model.outputs) == 1:
        mask, anomaly_map = 0, None
    else:
        raise ValueError(f"the model has {len(model.outputs)} outputs ({listed}); "
                         "name the one with the defect map in defect.output")
    return ChosenOutputs(mask, anomaly_map, index.get("pred_score"), index.get("pred_label"),
                         bool(ANOMALIB_OUTPUTS & set(index)))


def input_layout_and_size(model: ov.Model, input_size: Any = None) -> tuple[str, tuple[int, int]]:
    """("NCHW" or "NHWC", (width, height)) of the image input.

    Dynamic height and width take `input_size`, else the size the model implies."""
    shape = model.input().get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise ValueError(f"input shape {shape} is not an NCHW or NHWC colour image")
    dims = [d.get_length() if d.is_static else None for d in shape]
    if dims[1] == 3:
        layout, height, width = "NCHW", dims[2], dims[3]
    elif dims[3] == 3:
        layout, height, width = "NHWC", dims[1], dims[2]
    else:
        raise ValueError(f"input shape {shape} is not an NCHW or NHWC colour image (3 channels)")
    configured = parse_size(input_size)
    if height is not None and width is not None:
        if configured and configured != (width, height):
            raise ValueError(f"the model's input is fixed at {width}x{height}; "
                             f"defect.input_size {configured[0]}x{configured[1]} cannot apply")
        return layout, (width, height)
    size = configured or implied_size(model)
    if size is None:
        raise ValueError(f"input shape {shape} has a dynamic height and width and nothing in the model "
                         "implies a size: set defect.input_size to [width, height]")
    # A half-dynamic input ([?,3,256,?]) keeps its fixed side.
    return layout, (width or size[0], height or size[1])


def parse_size(value: Any) -> tuple[int, int] | None:
    """defect.input_size (null, a number: square, or [width, height]) -> (width, height), by the
    config schema's rule, for callers that pass a constructor an unchecked value."""
    size = check_value("defect", "input_size", list(value) if isinstance(value, tuple) else value)
    return None if size is None else (size[0], size[1])


def implied_size(model: ov.Model) -> tuple[int, int] | None:
    """(width, height) the model itself implies for a dynamic input: OpenVINO Model API metadata
    (rt_info model_info image_shape "H W", or orig_height/orig_width), else the largest fixed
    spatial size among its 3-D and 4-D outputs (anomalib: anomaly_map [?,1,256,256])."""
    def info(key):
        if model.has_rt_info(["model_info", key]):
            return [int(v) for v in re.findall(r"\d+", model.get_rt_info(["model_info", key]).astype(str))]
        return []
    shape = info("image_shape")
    if len(shape) >= 2:
        return shape[1], shape[0]
    height, width = info("orig_height"), info("orig_width")
    if height and width:
        return width[0], height[0]
    sizes = []
    for port in model.outputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() in (3, 4) and shape[-1].is_static and shape[-2].is_static:
            sizes.append((shape[-1].get_length(), shape[-2].get_length()))
    sizes = [s for s in sizes if min(s) > 1]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def input_scale_for(model: ov.Model, outputs: ChosenOutputs, input_scale: float | None = None) -> float:
    """The value the model's input expects for a full-intensity pixel: 255 (pixels as they are) or 1.

    Integer inputs take pixels as they are. A float input takes `input_scale` if set; else
    anomalib exports (which normalise inside the graph from RGB in [0, 1]) get 1, others 255."""
    element = model.input().get_element_type()
    if not element.is_real():
        if input_scale not in (None, 255):
            raise ValueError(f"defect.input_scale {input_scale} needs a float input; the model's is {element}")
        return 255
    if input_scale is None:
        return 1 if outputs.anomalib else 255
    return float(check_value("defect", "input_scale", input_scale))  # the schema's rule, for direct callers


class DefectSegmenter:
    """A segmentation model: built from the `defect` config section's keywords, then `load()`ed;
    `inspect(bgr)` gives the defect report."""

    def __init__(self, *, model: str = DEFAULTS["model"], device: str = DEFAULTS["device"],
                 threshold: float = DEFAULTS["threshold"], color: str = DEFAULTS["color"],
                 min_area: float = DEFAULTS["min_area"], jpeg_quality: int = DEFAULTS["jpeg_quality"],
                 threads: int = DEFAULTS["threads"], input_size: Any = DEFAULTS["input_size"],
                 input_scale: float | None = DEFAULTS["input_scale"], output: str | None = DEFAULTS["output"]):
        """Keywords as core.settings validates them (defaults: the config schema's); nothing is read yet.

        Args:
            model: OpenVINO IR .xml (its .bin beside it), .onnx or .tflite.
            device: the OpenVINO device (CPU if this box lacks it).
            threshold: the defect probability a pixel needs when a call gives none.
            color: the colour order the model takes, RGB or BGR.
            min_area: regions smaller than this (pixels of the image sent) are dropped.
            jpeg_quality: of the side-by-side picture.
            threads: OpenVINO CPU threads (0: OpenVINO's choice).
            input_size: (width, height) for a model whose input height and width are dynamic
                (default: what its metadata or outputs imply).
            input_scale: the value a float input expects for a full-intensity pixel, 255 or 1
                (default: 1 for anomalib exports, else 255).
            output: the name of the output that holds the defect map (default: see `choose_outputs`).
        """
        self.model_path, self.device_wanted, self.color = model, device, color
        self.threshold, self.min_area, self.jpeg_quality, self.threads = threshold, min_area, jpeg_quality, threads
        self.input_size, self.input_scale, self.output = input_size, input_scale, output
        self.metadata: AnomalibMetadata | None = None  # an anomalib 1.x export's, found by `prepare`

    def prepare(self, core: ov.Core | None = None) -> ov.Model:
        """The model read and edited for our frames (static size, pre-processing in the graph), not compiled.

        Raises:
            FileNotFoundError: no model file.
            ValueError: a model the plugin cannot serve (inputs, outputs, size), said in one line.
        """
        # OpenVINO loads with the first model, not with this module: a process imports the
        # function declarations (core/catalog.py) long before, and answers kuiperd meanwhile.
        from core.openvino_runtime import ColorFormat, PrePostProcessor, new_core, ov
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        model = (core or new_core()).read_model(self.model_path)
        if len(model.inputs) != 1:
            raise ValueError(f"{self.model_path} has {len(model.inputs)} inputs; a one-image segmenter is needed")
        self.outputs = choose_outputs(model, self.output)
        # An anomalib 1.x export: one raw anomaly map, its thresholds and normalisation in metadata.json
        # beside it (anomalib 2 exports post-process in the graph and name their outputs).
        self.metadata = None if self.outputs.anomalib or len(model.outputs) != 1 else \
            AnomalibMetadata.beside(self.model_path)
        if self.metadata:
            self.outputs = self.outputs._replace(anomaly_map=self.outputs.mask, anomalib=True)
        rank = model.outputs[self.outputs.mask].get_partial_shape().rank
        if rank.is_static and rank.get_length() not in (3, 4):
            # A classifier's [1, classes] output: no map to find regions in (told at load, not per frame).
            raise ValueError(f"its output {model.outputs[self.outputs.mask].get_partial_shape()} is no segmentation "
                             "map ([1,C,H,W], [1,1,H,W] or [1,H,W])")
        layout, (self.width, self.height) = input_layout_and_size(model, self.input_size)
        if model.input().get_partial_shape().is_dynamic:
            # One frame at a fixed size: a static graph, and our resize is faster than the graph's
            # (anomalib's export resizes inside; measured 27 vs 27-40 ms VGA to 720p).
            model.reshape([1, 3, self.height, self.width] if layout == "NCHW" else [1, self.height, self.width, 3])
        scale = input_scale_for(model, self.outputs, self.input_scale)
        # The graph takes our decoded frame as it is (uint8 NHWC BGR) and converts
        # colour order, layout, element type and scale itself, fused into the first layer.
        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR)
        ppp.input().model().set_layout(ov.Layout(layout))
        steps = ppp.input().preprocess()
        steps.convert_color(ColorFormat.RGB if self.color.upper() == "RGB" else ColorFormat.BGR)
        if scale != 255:
            steps.convert_element_type(ov.Type.f32).scale(255.0 / scale)
        return ppp.build()

    def load(self, streams: int = 1) -> DefectSegmenter:
        """Reads, edits (`prepare`) and compiles the model; returns self.

        Args:
            streams: calls the model runs at once, from any threads (OpenVINO's throughput streams,
                `threads` each); 1: one call at a time at the latency hint.

        Raises:
            What `prepare` and OpenVINO raise.
        """
        from core.openvino_runtime import Inference, new_core
        core = new_core()
        model = self.prepare(core)
        self.device = choose_device(core, self.device_wanted)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads and self.device == "CPU":
            # The default model is memory-bound pooling on one channel: 1 thread was faster
            # and steadier than 2 on a 2-core box, and leaves a core for kuiperd and decoding.
            config["INFERENCE_NUM_THREADS"] = self.threads
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
            if self.device == "CPU":
                config["INFERENCE_NUM_THREADS"] = streams * (self.threads or 1)
        self.compiled = core.compile_model(model, self.device, config)
        self.inference = Inference(self.compiled, streams)
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return int(self.width), int(self.height)

    decode_size = size  # the resize to the model input area-averages; no need for more pixels

    def segment(self, model_input: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Defect mask (uint8 0/1, output size) for a BGR image already resized to the model size."""
        return self.predict(model_input, threshold)[0]

    def predict(self, model_input: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, dict]:
        """(mask, image-level fields) for a BGR image already resized to the model size.

        The fields are those the model has: `score` (anomalib's pred_score) and `anomalous`
        (its pred_label). Without a threshold argument the mask and the verdict are the model's
        own (pred_mask, pred_label); with one, they are anomaly_map and pred_score above it.
        """
        mask, fields, _ = self.read(self.inference([model_input[np.newaxis]]), threshold)
        return mask, fields

    def read(self, results: Any, threshold: float | None) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """(mask, image-level fields, anomaly map or None) from one inference's outputs (see `predict`)."""
        chosen = self.outputs
        if self.metadata:
            return self.metadata.read(squeezed_map(results[chosen.mask]), threshold)
        fields = {}
        score = None if chosen.score is None else float(np.asarray(results[chosen.score]).reshape(-1)[0])
        if score is not None:
            fields["score"] = round(score, 4)
        if threshold is not None and chosen.anomaly_map is not None:
            mask = mask_from_output(results[chosen.anomaly_map], threshold)
        else:
            mask = mask_from_output(results[chosen.mask], self.threshold if threshold is None else threshold)
        if threshold is not None and score is not None:
            fields["anomalous"] = score > threshold
        elif chosen.label is not None:
            fields["anomalous"] = bool(np.asarray(results[chosen.label]).reshape(-1)[0])
        heat = None if chosen.anomaly_map is None else squeezed_map(results[chosen.anomaly_map])
        return mask, fields, heat

    def inspect(self, bgr: np.ndarray, threshold: float | None = None, original_size: tuple[int, int] | None = None,
                picture: str = "side-by-side") -> Inspection:
        """Defect report for a BGR image of any size.

        Args:
            bgr: the image (or the region of it the call asked for), decoded.
            threshold: the defect probability a pixel needs (None: the model's own mask, or defect.threshold).
            original_size: (w, h) of the image before a reduced decode, so boxes are
                reported in the pixels of the image the user sent.
            picture: "side-by-side" (the input at model size beside the mask), "overlay" (`overlay_jpeg`)
                or "none".
        """
        started = time.perf_counter()
        # Area averaging keeps thin scratches when shrinking a lot; bilinear is as good
        # and several times faster below 2x (measured in bench/).
        shrink = max(bgr.shape[1] / self.width, bgr.shape[0] / self.height)
        model_input = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)
        mask, fields, heat = self.read(self.inference([model_input[np.newaxis]]), threshold)
        elapsed_ms = (time.perf_counter() - started) * 1000
        width, height = original_size or (bgr.shape[1], bgr.shape[0])
        # The mask may be smaller than the input (anomalib: 256x256 whatever input_size is).
        defects = regions(mask, width / mask.shape[1], height / mask.shape[0], self.min_area)
        if picture == "overlay":
            drawn = overlay_jpeg(bgr, [scaled(r, bgr.shape[1] / width, bgr.shape[0] / height) for r in defects],
                                 heat, self.jpeg_quality)
        elif picture == "side-by-side":
            drawn = side_by_side_jpeg(model_input, mask, self.jpeg_quality)
        else:
            drawn = None
        return Inspection(inference_time=round(elapsed_ms, 2), defect=len(defects), defects=defects,
                          width=width, height=height, base64=drawn, **fields)


METADATA_BYTES = 1_000_000  # anomalib writes a few hundred bytes; an upload of more is no metadata


class AnomalibMetadata(NamedTuple):
    """What an anomalib 1.x export's metadata.json holds, read as anomalib's OpenVINOInferencer reads it:
    thresholds on the raw outputs, and the min-max normalisation that maps each threshold to 0.5."""

    pixel_threshold: float
    image_threshold: float
    map_range: tuple[float, float] | None  # anomaly_maps.min, .max
    score_range: tuple[float, float] | None  # pred_scores.min, .max

    @classmethod
    def beside(cls, model_path: str) -> AnomalibMetadata | None:
        """The metadata.json in the model's folder, or None if there is none.

        Raises:
            ValueError: a metadata.json that is no anomalib metadata (too large, not JSON, no thresholds).
        """
        path = metadata_beside(model_path)
        if path is None or not os.path.isfile(path):
            return None
        if os.path.getsize(path) > METADATA_BYTES:
            raise ValueError(f"{path} is over {METADATA_BYTES} bytes: no anomalib metadata")
        try:
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
            number = lambda key: float(found[key]) if is_number(found.get(key)) else None  # noqa: E731
            pixel, image = number("pixel_threshold"), number("image_threshold")
            if pixel is None or image is None:
                raise ValueError("it has no numeric pixel_threshold and image_threshold")
            ranges = [(number(f"{name}.min"), number(f"{name}.max")) for name in ("anomaly_maps", "pred_scores")]
            ranges = [r if None not in r and math.isfinite(r[1] - r[0]) and r[1] > r[0] else None for r in ranges]
        except (ValueError, AttributeError, RecursionError, OverflowError) as e:
            raise ValueError(f"{path} is no anomalib metadata: {first_line(e)}") from None
        return cls(pixel, image, *ranges)

    def read(self, raw: np.ndarray, threshold: float | None) -> tuple[np.ndarray, dict, np.ndarray]:
        """(mask, {"score", "anomalous"}, normalised map) from the raw anomaly map, as DefectSegmenter.read:
        without a threshold the raw map and score against the metadata's thresholds, with one the
        normalised map and score above it."""
        heat = normalized(raw, self.pixel_threshold, self.map_range)
        top = float(raw.max())
        score = float(normalized(np.float32(top), self.image_threshold, self.score_range))
        if threshold is None:
            mask, anomalous = raw >= self.pixel_threshold, top >= self.image_threshold
        else:
            mask, anomalous = heat > threshold, score > threshold
        return mask.astype(np.uint8), {"score": round(score, 4), "anomalous": bool(anomalous)}, heat


def normalized(values: np.ndarray, threshold: float, value_range: tuple[float, float] | None) -> np.ndarray:
    """anomalib's min-max normalisation: the threshold at 0.5, the range over 1, clipped to 0..1 (no range:
    the values as they are)."""
    if value_range is None:
        return values
    low, high = value_range
    return np.clip((values - threshold) / (high - low) + 0.5, 0, 1)


def placed(report: Inspection, box: tuple[int, int, int, int], size: tuple[int, int]) -> Inspection:
    """A report on the region `box` (x, y, w, h) of an image of `size` as a report on the whole image:
    its boxes moved into the image's pixels, its width and height the image's."""
    x, y = box[:2]
    moved = [dataclasses.replace(r, x=r.x + x, y=r.y + y) for r in report.defects]
    return dataclasses.replace(report, defects=moved, width=size[0], height=size[1])


def squeezed_map(output: Any) -> np.ndarray:
    """An anomaly map output ([1,1,H,W] or [1,H,W]) as a float (H, W) array."""
    output = np.asarray(output, dtype=np.float32)
    return output.reshape(output.shape[-2:])


def scaled(region: Region, scale_x: float, scale_y: float) -> Region:
    """A region's box in the pixels of a picture `scale` times the image's size."""
    return dataclasses.replace(region, x=round(region.x * scale_x), y=round(region.y * scale_y),
                               w=max(1, round(region.w * scale_x)), h=max(1, round(region.h * scale_y)))


PICTURES = ("side-by-side", "overlay", "none")  # what `inspect(picture=...)` draws; the first by default
OVERLAY_LONGEST_SIDE = 1280  # a larger frame is shown smaller: the picture travels in every answer
BOX_COLOUR = (0, 0, 255)  # BGR: red outlines


def overlay_jpeg(bgr: np.ndarray, boxes: list[Region], heat: np.ndarray | None, quality: int) -> str:
    """Base64 JPEG: the frame at its own aspect ratio, the anomaly map (if any) as a translucent heat map,
    each defect's box outlined in red, and the count written in the top left corner.

    Args:
        bgr: the frame as decoded.
        boxes: the defects' boxes in the pixels of `bgr`.
        heat: the model's anomaly map (any size; values from 0, normal, to 1 and above, anomalous) or None.
    """
    scale = min(1.0, OVERLAY_LONGEST_SIDE / max(bgr.shape[:2]))
    picture = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else bgr.copy()
    height, width = picture.shape[:2]
    if heat is not None:
        level = np.clip(cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
        colours = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
        weight = (0.15 + 0.45 * level)[..., np.newaxis]  # hotter is more opaque; normal stays visible
        picture = (picture * (1 - weight) + colours * weight).astype(np.uint8)
    thickness = max(2, round(max(width, height) / 320))
    for box in boxes:
        x, y = round(box.x * scale), round(box.y * scale)
        right, bottom = x + max(1, round(box.w * scale)) - 1, y + max(1, round(box.h * scale)) - 1
        cv2.rectangle(picture, (x, y), (right, bottom), BOX_COLOUR, thickness)
    text = f"{len(boxes)} defect{'' if len(boxes) == 1 else 's'}"
    font_scale = max(0.5, max(width, height) / 900)
    (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    cv2.rectangle(picture, (0, 0), (text_width + 12, text_height + baseline + 12), (0, 0, 0), cv2.FILLED)
    cv2.putText(picture, text, (6, text_height + 6), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


def mask_from_output(output: Any, threshold: float) -> np.ndarray:
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
    if np.issubdtype(output.dtype, np.integer) or output.dtype == bool:  # class map, or a mask (pred_mask)
        return (output[0] != 0).astype(np.uint8)
    return (output[0] > threshold).astype(np.uint8)


def regions(mask: np.ndarray, scale_x: float, scale_y: float, min_area: float = 0) -> list[Region]:
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
        found.append(Region(x=round(x * scale_x), y=round(y * scale_y), w=max(1, round(w * scale_x)),
                            h=max(1, round(h * scale_y)), area=max(1, round(area))))
    return sorted(found, key=lambda region: (region.y, region.x))


def side_by_side_jpeg(model_input: np.ndarray, mask: np.ndarray, quality: int) -> str:
    """Base64 JPEG: the input at model size, and the mask in white, side by side."""
    if mask.shape != model_input.shape[:2]:
        mask = cv2.resize(mask, (model_input.shape[1], model_input.shape[0]), interpolation=cv2.INTER_NEAREST)
    picture = np.hstack([model_input, cv2.cvtColor(mask * 255, cv2.COLOR_GRAY2BGR)])
    ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


def picture_path(out: str, image: str, several: bool) -> str:
    """--out names the picture's file, or with several images (or a folder) the folder for them."""
    if several or os.path.isdir(out) or out.endswith(os.sep):
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, os.path.splitext(os.path.basename(image))[0] + ".jpg")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = command_line.OneLineArgumentParser(
        prog="inference.py", description="Find surface defects with the plugin's OpenVINO model: one JSON line per "
        "image, {\"image\", \"ms\", \"result\"}, where result is what inference(image, options) returns "
        "(its base64 picture shortened; --out writes it).",
        epilog="Unset options come from the plugin's config (config.json, DEFECT_CONFIG, DEFECT_MODEL, "
        "DEFECT_DEVICE, DEFECT_COLOR). Exit status: 0 all served, 1 an image failed (one line on stderr each), "
        "2 nothing could run.")
    command_line.add_images_argument(parser, SAMPLE_IMAGE)
    parser.add_argument("-t", "--threshold", type=command_line.config_type("defect", "threshold"), metavar="P",
                        help="defect probability from 0 to 1, as inference's second argument "
                             "(default: none, so defect.threshold or an anomalib model's own mask)")
    parser.add_argument("-m", "--model", help="OpenVINO IR .xml, .onnx or .tflite (default: defect.model)")
    parser.add_argument("-d", "--device", type=command_line.config_type("defect", "device"),
                        help=f"{', '.join(DEVICES)} (default: defect.device)")
    parser.add_argument("--threads", type=command_line.config_type("defect", "threads"), metavar="N",
                        help="OpenVINO CPU threads, 0: OpenVINO's choice (default: defect.threads)")
    command_line.add_name_arguments(parser, "inference", "--model")
    parser.add_argument("--picture", choices=PICTURES, default=PICTURES[0],
                        help="side-by-side: input at model size | mask; overlay: the frame with the defects "
                             "outlined, the anomaly map (where the model has one) and the count; none "
                             "(default: side-by-side)")
    parser.add_argument("-o", "--out", metavar="PATH",
                        help="write the picture to this JPEG; with several images, into this folder as "
                             "<image name>.jpg")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")  # the device fallback line
    if args.model_name and args.model:
        command_line.fail(parser.prog, "give --model or --model-name, not both")
    try:
        settings = command_line.with_overrides(load_settings(), "defect", model=command_line.absolute(args.model),
                                               device=args.device, threads=args.threads)
    except ConfigError as e:
        command_line.fail(parser.prog, str(e))
    if args.model_name:
        files = command_line.named_model(parser.prog, args.model_name, settings, MODEL_SUFFIXES, exports=True)
        settings = {**settings, "defect": {**settings["defect"], "model": files.model}}
    if args.out and args.picture == "none":
        command_line.fail(parser.prog, "--out writes the picture: give --picture side-by-side or overlay")
    try:
        segmenter = DefectSegmenter(**settings["defect"]).load()
    except Exception as e:  # whatever OpenVINO raises: one line, as the plugin answers
        command_line.fail(parser.prog, f"defect model could not be loaded: {first_line(e)}")
    limits = settings["input"]
    several = len(args.images) > 1 or any(os.path.isdir(path) for path in args.images)

    def serve(path: str, data: bytes) -> dict:
        pixels, size = decode_image(data, limits["max_pixels"], limits["max_bytes"], segmenter.decode_size, args.roi)
        if args.roi is None:
            report = answer(segmenter.inspect(pixels, args.threshold, size, args.picture))
        else:
            box = region_box(args.roi, size)
            report = answer(placed(segmenter.inspect(pixels, args.threshold, box[2:], args.picture), box, size))
        if "base64" not in report:
            return report
        note = f"<{len(report['base64'])} chars"
        if args.out:
            picture = picture_path(args.out, path, several)
            with open(picture, "wb") as f:
                f.write(base64.b64decode(report["base64"]))
            note += f", written to {picture}"
        return {**report, "base64": note + ">"}

    return command_line.serve_images(parser.prog, args.images, SAMPLE_IMAGE, serve)


if __name__ == "__main__":
    sys.exit(main())
