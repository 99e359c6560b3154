"""Image labelling with a TFLite classifier (MobileNet): pixels in, top-k labels out.

The `.tflite` runs on LiteRT, or on OpenVINO, which reads the same file (label.runtime; `auto`
measures both at load and keeps the faster, `labeler_from_settings`).

Pure logic, no eKuiper: `python label.py [IMAGE or FOLDER ...]` prints one JSON line per image,
as TensorFlow Lite's label_image.py does (`--help` for the options).
"""
import functools
import logging
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

import command_line
from errors import ConfigError, first_line
from image_input import decode_image
from settings import PLUGIN_DIR, Settings, defaults, load_settings
from thread_tuning import Measured, fastest, fastest_threads, thread_choices, threads_said, usable_cores

log = logging.getLogger(__name__)
DEFAULTS = defaults("label")
# Made by `make models` from the fixtures' cat.bmp, shipped in the zip.
SAMPLE_IMAGE = os.path.join(PLUGIN_DIR, "models", "sample_cat.jpg")
RUNTIMES = ("openvino", "litert")  # what label.runtime `auto` measures on x86_64, in this order
# The runtime `auto` kept per (model file, its mtime, threads), measured once per process: the
# window functions' copies (one per core, batch_func.py) and the service's take it without loading
# the other runtime again; a changed model file is measured afresh.
_runtime_kept: dict[tuple[str, int | None, int], str] = {}


def make_interpreter(model_path: str, threads: int = 0) -> Any:
    """LiteRT (ai-edge-litert) is the maintained runtime; tflite_runtime is the fallback.
    threads 0: every core."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file not found: {model_path}")
    return Interpreter(model_path=model_path, num_threads=threads or usable_cores())


class LiteRTRunner:
    """LiteRT's interpreter on the classifier: run(tensor) -> the raw first output row."""

    def __init__(self, model_path: str, threads: int = 0):
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
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)[0]


class OpenVINORunner:
    """OpenVINO's TFLite frontend on the same `.tflite`, fed the same tensor as LiteRT.

    A quantised output comes out of the graph as FakeQuantize -> Convert(u8); the
    FakeQuantize's ranges are the TFLite output's scale and zero point."""

    def __init__(self, model_path: str, threads: int = 0, read: Callable[[str], tuple[Any, Any]] | None = None):
        """read: model_path -> (ov.Core, ov.Model), by default read_for_openvino; candidates built
        together share a cached one, since reading the `.tflite` takes about as long as compiling it."""
        from openvino_runtime import ov  # only this runtime needs it; LiteRT's start stays as light as before
        core, model = (read or read_for_openvino)(model_path)
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
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self.request.infer([tensor])[self.compiled.output(0)][0]


def read_for_openvino(model_path: str) -> tuple[Any, Any]:
    """(a new ov.Core, the model read by it). Raises FileNotFoundError if there is no such file."""
    from openvino_runtime import ov
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file not found: {model_path}")
    core = ov.Core()
    return core, core.read_model(model_path)


def read_labels(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class ImageLabeler:
    """One loaded classifier; `label(bgr)` returns [{"confidence", "label": "286:Egyptian cat"}, ...]."""

    def __init__(self, model_path: str, labels_path: str, top_k: int = DEFAULTS["top_k"], threads: int = 0, *,
                 runtime: str, openvino_read: Callable[[str], tuple[Any, Any]] | None = None,
                 labels_read: Callable[[str], list[str]] = read_labels):
        """runtime: `litert` or `openvino` (`auto` is measured by labeler_from_settings); threads 0: every core;
        openvino_read: OpenVINORunner's `read`; labels_read: reads the labels file (candidates built
        together share one, so the file is read once: it may be a pipe).
        Raises FileNotFoundError, ValueError (labels that do not fit), or what the runtime raises."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = runtime
        self.threads = threads or usable_cores()
        self.runner = (OpenVINORunner(model_path, threads, openvino_read) if runtime == "openvino"
                       else LiteRTRunner(model_path, threads))
        _, self.height, self.width, _ = self.runner.input_shape
        self.input_is_float = self.runner.input_is_float
        self.output_scale, self.output_zero = self.runner.output_scale, self.runner.output_zero
        self.labels = labels_read(labels_path)
        classes = self.runner.classes
        if len(self.labels) != classes:
            raise ValueError(f"{labels_path} has {len(self.labels)} labels but the model has {classes} classes")
        self.top_k = top_k
        self.lock = threading.Lock()  # one interpreter (infer request), one invocation at a time
        self.settled = threading.Event()  # set once the runtime is final (labeler_from_settings' measure_later)
        self.settled.set()

    def adopt(self, other: "ImageLabeler") -> None:
        """Serve with `other`'s runtime from the next call on; `other` was built from the same files
        (same input size, labels and output quantisation). The runtime this one had is let go."""
        with self.lock:
            self.runner, self.runtime, self.threads = other.runner, other.runtime, other.threads

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
        # Plain bilinear resize: the reference results (fixtures README) were measured so.
        rgb = cv2.cvtColor(cv2.resize(bgr, self.size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        tensor = rgb[np.newaxis]
        if self.input_is_float:  # float MobileNets expect [-1, 1]
            tensor = (tensor.astype(np.float32) - 127.5) / 127.5
        with self.lock:
            raw = self.runner.run(tensor)
        if self.output_scale:  # quantised output: dequantise with the model's own parameters
            return (raw.astype(np.float32) - self.output_zero) * self.output_scale
        return raw.astype(np.float32)

    def label(self, bgr: np.ndarray, k: int | None = None) -> list[dict]:
        """The top k (default top_k) labels, best first, for a BGR image of any size."""
        k = min(k or self.top_k, len(self.labels))
        scores = self.scores(bgr)
        best = np.argsort(-scores, kind="stable")[:k]
        return [{"confidence": round(float(scores[i]), 4), "label": f"{i}:{self.labels[i]}"} for i in best]


def probe(labeler: ImageLabeler) -> list[dict]:
    """One representative call for timing: a textured frame at the size frames are decoded to."""
    width, height = labeler.decode_size
    return labeler.label(np.random.default_rng(0).integers(96, 160, (height, width, 3), dtype=np.uint8))


def auto_runtimes() -> tuple[tuple[str, ...], str]:
    """The runtimes `auto` measures here, and why any is left out ("" when none is).

    Both on x86_64. Elsewhere OpenVINO only: on arm64 under qemu LiteRT dies with a segmentation
    fault in allocate_tensors (README, Platforms), which no load can catch, and no real ARM board
    was at hand to show it runs; `litert` set explicitly still loads it."""
    machine = platform.machine()
    if machine.lower() in ("x86_64", "amd64"):
        return RUNTIMES, ""
    return ("openvino",), f"litert not tried on {machine} (set label.runtime to litert to use it)"


def labeler_from_settings(settings: Settings, what: str = "labelImage", measure_threads: bool = False,
                          measure_later: Callable[[Callable[[], None]], None] | None = None) -> ImageLabeler:
    """The labeller that validated settings (settings.load_settings) describe.

    label.runtime `auto` builds both runtimes (auto_runtimes), times them in alternating rounds on
    a representative frame (thread_tuning.fastest), keeps the faster, frees the other and logs one
    line with every figure (measured_line); a runtime that fails to load is left out and the line
    says why. That happens once per process per model file and thread count: a later call (a window
    function's copy) builds the kept runtime only. An explicit `litert` or `openvino` loads that runtime only.

    Args:
        settings: validated settings.
        what: the function name the log line starts with.
        measure_threads: label.threads 0 means 1 thread against every core, measured in the same
            rounds as the runtimes (the plugin's load); otherwise 0 means every core.
        measure_later: given, `auto` returns LiteRT at once (at label.threads, 0: every core), so
            frames are served within a fraction of what loading OpenVINO takes, and hands
            measure_later a job that measures both runtimes as above and switches the labeller to
            the fastest (ImageLabeler.adopt; `settled` is set when done); measure_later runs it once
            the other models have loaded. If LiteRT fails to load, everything is measured now.
    Raises:
        What ImageLabeler raises, when no candidate could be built (thread_tuning.fastest).
    """
    conf = settings["label"]
    # The candidates read each file once (the OpenVINO read takes about a second; the labels may
    # come from a pipe); dropped on return.
    read, labels = functools.cache(read_for_openvino), functools.cache(read_labels)

    def build(runtime: str, threads: int) -> Callable[[], ImageLabeler]:
        return lambda: ImageLabeler(conf["model"], conf["labels"], conf["top_k"], threads, runtime=runtime,
                                    openvino_read=read, labels_read=labels)

    measure = measure_threads and not conf["threads"]
    if conf["runtime"] != "auto":
        if measure:
            return fastest_threads(lambda n: build(conf["runtime"], n)(), probe, what)
        return build(conf["runtime"], conf["threads"])()
    runtimes, left_out = auto_runtimes()
    model_key = (conf["model"], _mtime(conf["model"]))
    if measure_later and len(runtimes) > 1:
        quick = _serving_first(settings, what, measure_threads, measure_later)
        if quick:
            return quick
    builds, decided_now = {}, False
    for n in thread_choices() if measure else (conf["threads"] or usable_cores(),):
        kept = _runtime_kept.get((*model_key, n))
        decided_now |= not kept
        for runtime in (kept,) if kept else runtimes:
            builds[runtime, n] = build(runtime, n)
    measured = fastest(builds, probe)
    for n in {n for _, n in builds}:
        timed = {r: ms for (r, t), ms in measured.ms.items() if t == n}
        if timed or measured.kept[1] == n:
            _runtime_kept[(*model_key, n)] = min(timed, key=timed.get) if timed else measured.kept[0]
    if decided_now:  # a window copy that takes the kept runtime says nothing
        log.info(measured_line(what, measured, len({n for _, n in builds}) > 1, left_out))
    return measured.model


def _serving_first(settings: Settings, what: str, measure_threads: bool,
                   measure_later: Callable[[Callable[[], None]], None]) -> ImageLabeler | None:
    """LiteRT to serve while both runtimes are measured later, or None if LiteRT cannot load."""
    try:
        quick = labeler_from_settings({**settings, "label": {**settings["label"], "runtime": "litert"}}, what)
    except Exception as e:  # whatever LiteRT raises: measure now, the line says why it was left out
        log.info("%s: LiteRT could not load to serve first (%s); measuring the runtimes now", what, first_line(e))
        return None
    quick.settled.clear()

    def measure_and_switch() -> None:
        try:
            quick.adopt(labeler_from_settings(settings, what, measure_threads))
        except Exception as e:  # LiteRT, already serving, stays
            log.error("%s: runtime auto could not be measured, LiteRT stays: %s", what, first_line(e))
        finally:
            quick.settled.set()

    measure_later(measure_and_switch)
    return quick


def measured_line(what: str, measured: Measured, measured_threads: bool, left_out: str = "") -> str:
    """The one log line of label.runtime auto: every figure, grouped by thread count (the kept count
    first), what could not load and why, and the choice, e.g. `labelImage: runtime auto: openvino
    24.1 ms, litert 34.6 ms per frame at 1 thread; keeping openvino; ...`. With threads measured too
    it starts `labelImage: 2 threads, measured at load; ` (as thread_tuning's line; bench/throughput.py
    reads it)."""
    runtime, threads = measured.kept
    counts = sorted({n for _, n in measured.ms} | {threads}, key=lambda n: (n != threads, n))
    parts = []
    for n in counts:
        figures = [f"{r} {measured.ms[r, n]:.1f} ms" for r in RUNTIMES if (r, n) in measured.ms]
        parts.append(f"{', '.join(figures)} per frame at {threads_said(n)}" if figures
                     else f"{runtime} at {threads_said(n)} (nothing to compare)")
    failed = {r: why for (r, _), why in measured.failed.items()}  # one reason a runtime, not one a thread count
    parts += [f"{r} could not be loaded: {why}" for r, why in failed.items()] + [left_out] * bool(left_out)
    head = f"{what}: {threads_said(threads)}, measured at load; " if measured_threads else f"{what}: "
    keeping = f"{runtime} at {threads_said(threads)}" if measured_threads else runtime
    return f"{head}runtime auto: {'; '.join(parts)}; keeping {keeping}; set label.runtime in config to override"


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


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
    args = parser.parse_args(argv)
    try:
        settings = command_line.with_overrides(load_settings(), "label", model=command_line.absolute(args.model),
                                               labels=command_line.absolute(args.labels), threads=args.threads)
    except ConfigError as e:
        command_line.fail(parser.prog, str(e))
    try:
        labeler = labeler_from_settings(settings)
    except Exception as e:  # whatever the runtime raises: one line, as the plugin answers
        command_line.fail(parser.prog, f"label model could not be loaded: {first_line(e)}")
    limits = settings["input"]

    def serve(path: str, data: bytes) -> list[dict]:
        pixels, _ = decode_image(data, limits["max_pixels"], limits["max_bytes"], labeler.decode_size)
        return labeler.label(pixels, args.top_k)

    return command_line.serve_images(parser.prog, args.images, SAMPLE_IMAGE, serve)


if __name__ == "__main__":
    sys.exit(main())
