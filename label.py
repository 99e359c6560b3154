"""Image labelling with a TFLite classifier (MobileNet): pixels in, top-k labels out.

The `.tflite` runs on LiteRT, or on OpenVINO, which reads the same file (label.runtime).

Pure logic, no eKuiper: `python label.py [IMAGE or FOLDER ...]` prints one JSON line per image,
as TensorFlow Lite's label_image.py does (`--help` for the options).
"""
from __future__ import annotations

import os
import platform
import sys
import threading
from typing import Any

import cv2
import numpy as np

from core import command_line
from core.errors import ConfigError, first_line
from core.image_input import decode_image
from core.results import Label, answer
from core.settings import PLUGIN_DIR, defaults, load_settings
from core.tuning import usable_cores

DEFAULTS = defaults("label")
# Made by `make models` from the fixtures' cat.bmp, shipped in the zip.
SAMPLE_IMAGE = os.path.join(PLUGIN_DIR, "models", "sample_cat.jpg")


RUNTIMES = ("litert", "openvino")


def resolve_runtime(runtime: str) -> str:
    """label.runtime for a model built without a measurement (the command line): `auto` is LiteRT on
    x86_64 and OpenVINO elsewhere. The plugin and the service measure `auto` (`candidate_runtimes`)."""
    if runtime != "auto":
        return runtime
    return "litert" if platform.machine().lower() in ("x86_64", "amd64") else "openvino"


def candidate_runtimes(runtime: str) -> tuple[str, ...]:
    """The runtimes a load measures for label.runtime: both for `auto` on x86_64; OpenVINO alone on other
    machines (the one runtime proven on arm64: under qemu LiteRT segfaults in allocate_tensors, which
    would kill the process measuring it); a named runtime alone."""
    if runtime != "auto":
        return (runtime,)
    return RUNTIMES if platform.machine().lower() in ("x86_64", "amd64") else ("openvino",)


def make_interpreter(model_path: str, threads: int = 0) -> Any:
    """LiteRT (ai-edge-litert) is the maintained runtime; tflite_runtime is the fallback.
    threads 0: every core."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file not found: {model_path}")
    # From memory, not model_path (which LiteRT maps): a file replaced in place (kuiperd's upload
    # truncates and rewrites it) must not change, or fault, the interpreter that serves.
    with open(model_path, "rb") as f:
        content = f.read()
    return Interpreter(model_content=content, num_threads=threads or usable_cores())


class LiteRTRunner:
    """LiteRT's interpreter on the classifier: run(tensor) -> the raw first output row, one call at a time."""

    def __init__(self, model_path: str, threads: int = 0, streams: int = 1):
        if streams != 1:
            raise ValueError("LiteRT runs one inference at a time: streams need label.runtime openvino")
        self.lock = threading.Lock()  # one interpreter, one invocation at a time
        self.interpreter = make_interpreter(model_path, threads)
        self.interpreter.allocate_tensors()
        model_input = self.interpreter.get_input_details()[0]
        model_output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(n) for n in model_input["shape"])
        self.input_is_float = model_input["dtype"] == np.float32
        self.input_index = model_input["index"]
        self.output_index = model_output["index"]
        self.classes = int(model_output["shape"][-1])
        self.output_scale, self.output_zero = model_output["quantization"]

    def run(self, tensor: np.ndarray) -> np.ndarray:
        with self.lock:
            self.interpreter.set_tensor(self.input_index, tensor)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index)[0]  # a copy


class OpenVINORunner:
    """OpenVINO's TFLite frontend on the same `.tflite`, fed the same tensor as LiteRT.

    A quantised output comes out of the graph as FakeQuantize -> Convert(u8); the
    FakeQuantize's ranges are the TFLite output's scale and zero point. With streams > 1 the
    compiled model runs that many calls at once (throughput streams, `threads` each), from any threads."""

    def __init__(self, model_path: str, threads: int = 0, streams: int = 1):
        # Only this runtime needs OpenVINO; a LiteRT start stays as light as before.
        from core.openvino_runtime import Inference, new_core, ov
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        core = new_core()
        model = core.read_model(model_path)
        self.input_shape = tuple(int(n) for n in model.input().get_shape())
        self.input_is_float = model.input().get_element_type() == ov.Type.f32
        self.classes = int(model.output().get_shape()[-1])
        self.output_scale, self.output_zero = 0.0, 0
        if model.output().get_element_type() != ov.Type.f32:
            quantize = model.get_results()[0].input_value(0).get_node().input_value(0).get_node()
            if quantize.get_type_name() == "FakeQuantize":
                in_low, in_high, out_low, out_high = (
                    float(quantize.input_value(i).get_node().get_data().reshape(-1)[0]) for i in range(1, 5))
                self.output_scale = (in_high - in_low) / (out_high - out_low)
                self.output_zero = round(out_low - in_low / self.output_scale)
        # f32: at OpenVINO's default precision (bf16 where the CPU has it) grace_hopper.bmp's top
        # confidence was 0.035 off LiteRT's; at f32 every fixture image is within 4/256 of it.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or usable_cores(),
                  "INFERENCE_PRECISION_HINT": "f32"}
        if streams > 1:
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams,
                          INFERENCE_NUM_THREADS=streams * (threads or 1))
        self.compiled = core.compile_model(model, "CPU", config)
        self.inference = Inference(self.compiled, streams)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self.inference([tensor])[0][0]


def read_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class ImageLabeler:
    """A TFLite classifier: built from the `label` config section's keywords, then `load()`ed;
    `label(bgr, k)` gives the top k labels."""

    def __init__(self, *, model: str = DEFAULTS["model"], labels: str = DEFAULTS["labels"],
                 top_k: int = DEFAULTS["top_k"], threads: int = DEFAULTS["threads"],
                 runtime: str = DEFAULTS["runtime"]):
        """Keywords as core.settings validates them (defaults: the config schema's); nothing is read yet.

        Args:
            model: the .tflite file.
            labels: the labels file, one a line, as many as the model has classes.
            top_k: labels `label` returns when it is given no k.
            threads: the runtime's threads (0: every core).
            runtime: litert, openvino, or auto (`resolve_runtime`; the plugin measures it: `candidate_runtimes`).
        """
        self.model_path, self.labels_path = model, labels
        self.top_k, self.threads = top_k, threads
        self.runtime = resolve_runtime(runtime)
        self.runner: LiteRTRunner | OpenVINORunner | None = None
        self.labels: list[str] = []

    def load(self, streams: int = 1) -> ImageLabeler:
        """Reads the model and its labels and readies the runtime; returns self.

        Args:
            streams: calls the model runs at once, from any threads (more than 1: OpenVINO only).

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: the labels do not match the model's classes; streams on LiteRT.
        """
        runner = (OpenVINORunner if self.runtime == "openvino" else LiteRTRunner)(
            self.model_path, self.threads, streams)
        labels = read_labels(self.labels_path)
        if len(labels) != runner.classes:
            raise ValueError(f"{self.labels_path} has {len(labels)} labels but the model has {runner.classes} classes")
        _, self.height, self.width, _ = runner.input_shape
        self.runner, self.labels = runner, labels
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return int(self.width), int(self.height)

    @property
    def decode_size(self) -> tuple[int, int]:
        """The least size to decode a frame at: twice the input, so the bilinear resize
        still sees every detail (measured: decoding 1080p at 1/4 drops the cat from 0.87 to 0.75)."""
        return 2 * int(self.width), 2 * int(self.height)

    def scores(self, bgr: np.ndarray) -> np.ndarray:
        """Class confidences in [0, 1] for a BGR image of any size."""
        runner = self.runner
        # Plain bilinear resize: the reference results (fixtures README) were measured so.
        rgb = cv2.cvtColor(cv2.resize(bgr, self.size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        tensor = rgb[np.newaxis]
        if runner.input_is_float:  # float MobileNets expect [-1, 1]
            tensor = (tensor.astype(np.float32) - 127.5) / 127.5
        raw = runner.run(tensor)
        if runner.output_scale:  # quantised output: dequantise with the model's own parameters
            return (raw.astype(np.float32) - runner.output_zero) * runner.output_scale
        return raw.astype(np.float32)

    def label(self, bgr: np.ndarray, k: int | None = None) -> list[Label]:
        """The top k (default top_k) labels, best first, for a BGR image of any size."""
        k = min(k or self.top_k, len(self.labels))
        scores = self.scores(bgr)
        best = np.argsort(-scores, kind="stable")[:k]
        return [Label(confidence=round(float(scores[i]), 4), label=f"{i}:{self.labels[i]}") for i in best]


def main(argv: list[str] | None = None) -> int:
    parser = command_line.OneLineArgumentParser(
        prog="label.py", description="Label images with the plugin's TFLite classifier: one JSON line per image, "
        "{\"image\", \"ms\", \"result\"}, where result is what labelImage(image, k) returns.",
        epilog="Unset options come from the plugin's config (config.json, DEFECT_CONFIG, LABEL_MODEL, LABEL_LABELS). "
        "Exit status: 0 all served, 1 an image failed (one line on stderr each), 2 nothing could run.")
    command_line.add_images_argument(parser, SAMPLE_IMAGE)
    parser.add_argument("-k", "--top-k", type=command_line.config_type("label", "top_k"), metavar="K",
                        help="labels per image, best first (default: label.top_k)")
    parser.add_argument("-m", "--model", help="TFLite classifier (default: label.model)")
    parser.add_argument("-l", "--labels", help="labels file, one a line (default: label.labels)")
    parser.add_argument("--threads", type=command_line.config_type("label", "threads"), metavar="N",
                        help="runtime threads, 0: every core (default: label.threads)")
    command_line.add_name_arguments(parser, "labelImage", "--model and --labels")
    args = parser.parse_args(argv)
    if args.model_name and (args.model or args.labels):
        command_line.fail(parser.prog, "give --model-name, or --model and --labels, not both")
    try:
        settings = command_line.with_overrides(load_settings(), "label", model=command_line.absolute(args.model),
                                               labels=command_line.absolute(args.labels), threads=args.threads)
    except ConfigError as e:
        command_line.fail(parser.prog, str(e))
    if args.model_name:
        files = command_line.named_model(parser.prog, args.model_name, settings, (".tflite",), labelled=True)
        settings = {**settings, "label": {**settings["label"], "model": files.model, "labels": files.labels}}
    try:
        labeler = ImageLabeler(**settings["label"]).load()
    except Exception as e:  # whatever the runtime raises: one line, as the plugin answers
        command_line.fail(parser.prog, f"label model could not be loaded: {first_line(e)}")
    limits = settings["input"]

    def serve(path: str, data: bytes) -> list[dict]:
        pixels, _ = decode_image(data, limits["max_pixels"], limits["max_bytes"], labeler.decode_size, args.roi)
        return answer(labeler.label(pixels, args.top_k))

    return command_line.serve_images(parser.prog, args.images, SAMPLE_IMAGE, serve)


if __name__ == "__main__":
    sys.exit(main())
