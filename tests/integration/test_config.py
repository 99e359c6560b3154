"""Every configuration key and variable docs/configuration.md documents, tested for its effect.

Unit level: settings.load_settings and the model classes (and the function
wrappers, which build the models). Process level: the unpacked plugin zip started
as kuiperd starts it (tests/support/nng_host.PluginHost) with the variables in its
environment, for the claims about what the plugin process does.
"""
import base64
import io
import json
import os
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from core import settings as settings_module
from core.catalog import INFERENCE, LABEL_IMAGE
from core.image_input import InputError
from core.results import answer
from core.settings import PLUGIN_DIR, load_settings
from inference import DefectSegmenter
from label import ImageLabeler
from label_func import ModelFunction
from tests.support.nng_host import PluginHost
from tests.support.onnx_defect_model import write_defect_model_onnx
from tests.support.paths import REPO, fixture_path, read_b64
from tests.support.plugin_settings import DEFAULTS, cat, with_keys
from tools.synthetic_surface import surface_image, surface_with_truth

DEEPLAB_TFLITE = "deeplabv3_mnv2_dm05_pascal_quant.tflite"


def defect_model(**defect: object) -> DefectSegmenter:
    """The defect model with these `defect` keys over the defaults, loaded."""
    return DefectSegmenter(**with_keys(defect=defect)["defect"]).load()


def write_json(path, value):
    path.write_text(json.dumps(value))
    return str(path)


def colour_spots():
    """A flat surface with two coloured spots, each invisible to one channel order.

    The default model looks at luma 0.299 R + 0.587 G + 0.114 B. The left spot changes R by
    +60 and B by -157, which that luma does not see (0.299*60 = 0.114*157), but with R and B
    swapped it moves luma by 40; the right spot is the mirror image. So the spot found tells
    which channel order the model was fed.
    """
    rng = np.random.default_rng(1)
    image = np.clip(170 + rng.normal(0, 2, (480, 640, 3)), 0, 255)
    cv2.circle(image, (160, 240), 14, (170 - 157, 170, 170 + 60), -1)  # OpenCV order: B, G, R
    cv2.circle(image, (480, 240), 14, (170 + 60, 170, 170 - 157), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def box_centre_x(report):
    (box,) = report["defects"]
    return box["x"] + box["w"] / 2


def quantization_of(jpeg_bytes):
    with Image.open(io.BytesIO(jpeg_bytes)) as img:
        return {k: list(v) for k, v in img.quantization.items()}


def quantization_at(quality):
    return quantization_of(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8),
                                        [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())


# --- loading: config.json, the DEFECT_CONFIG overlay, the environment, paths ---

def test_config_json_holds_every_documented_key():
    documented = {"label": {"model", "labels", "top_k", "threads"},
                  "defect": {"model", "device", "threshold", "color", "threads", "min_area", "jpeg_quality"},
                  "input": {"max_bytes", "max_pixels"}}
    with open(os.path.join(REPO, "config.json")) as f:
        config = json.load(f)
    for section, keys in documented.items():
        assert keys <= set(config[section]), (section, keys - set(config[section]))


def test_overlay_changes_only_the_keys_it_lists(tmp_path):
    overlay = write_json(tmp_path / "site.json", {"label": {"top_k": 3}, "defect": {"min_area": 50, "model": "m.onnx"},
                                                  "input": {"max_pixels": 1000}})
    for loaded in (load_settings(environ={"DEFECT_CONFIG": overlay}), load_settings(overlay, environ={})):
        assert loaded["label"]["top_k"] == 3 and loaded["defect"]["min_area"] == 50
        assert loaded["input"]["max_pixels"] == 1000
        assert loaded["defect"]["model"] == os.path.join(PLUGIN_DIR, "m.onnx")  # relative to the plugin dir
        for section, values in DEFAULTS.items():  # everything it does not list keeps config.json's value
            for key, value in values.items():
                if (section, key) not in {("label", "top_k"), ("defect", "min_area"), ("defect", "model"),
                                          ("input", "max_pixels")}:
                    assert loaded[section][key] == value, (section, key)


def test_environment_overrides_file_and_overlay(tmp_path):
    overlay = write_json(tmp_path / "site.json", {"defect": {"color": "RGB", "device": "CPU"}})
    environ = {"DEFECT_CONFIG": overlay, "LABEL_MODEL": "/abs/label.tflite", "LABEL_LABELS": "labels/x.txt",
               "DEFECT_MODEL": "models/other.xml", "DEFECT_DEVICE": "AUTO", "DEFECT_COLOR": "BGR"}
    loaded = load_settings(environ=environ)
    assert loaded["label"]["model"] == "/abs/label.tflite"  # absolute paths stay as they are
    assert loaded["label"]["labels"] == os.path.join(PLUGIN_DIR, "labels/x.txt")
    assert loaded["defect"]["model"] == os.path.join(PLUGIN_DIR, "models/other.xml")
    assert (loaded["defect"]["device"], loaded["defect"]["color"]) == ("AUTO", "BGR")
    assert set(settings_module.ENV_OVERRIDES) == {"LABEL_MODEL", "LABEL_LABELS", "DEFECT_MODEL", "DEFECT_DEVICE",
                                                  "DEFECT_COLOR"}  # exactly docs/configuration.md's list


# --- label.* ---

def test_label_top_k_sets_the_default_count_and_k_still_wins():
    labeler = ImageLabeler(**with_keys(label={"top_k": 3, "threads": 1})["label"]).load()
    assert len(answer(labeler.label(cat()))) == 3
    assert len(answer(labeler.label(cat(), 7))) == 7


COUNT_LITERT_THREADS = """
import json
from core.catalog import LABEL_IMAGE
from core.serving import ServedFunction
from tests.support.plugin_settings import cat, thread_count, with_keys
function = ServedFunction(LABEL_IMAGE, with_keys(label={{"threads": {threads}, "runtime": "litert"}}))
before = thread_count()
model = function.load_model()
top = model.label(cat())[0].label
print(json.dumps({{"added": thread_count() - before, "top": top}}))
"""


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_label_threads_is_the_number_of_litert_threads(threads):
    """LiteRT's XNNPACK pool runs threads - 1 workers beside the calling thread: count them,
    in a fresh process so no other test's threads come or go meanwhile."""
    import subprocess
    code = COUNT_LITERT_THREADS.format(threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": REPO})  # label_func and tests.support from the repo root
    assert out.returncode == 0, out.stderr[-2000:]
    counted = json.loads(out.stdout.strip().splitlines()[-1])
    assert counted == {"added": threads - 1, "top": "286:Egyptian cat"}


def test_label_model_and_labels_are_what_is_loaded(tmp_path):
    labels = tmp_path / "labels.txt"
    with open(DEFAULTS["label"]["labels"]) as f:
        labels.write_text(f.read().upper())
    small = fixture_path("models", "mobilenet_v1_0.25_128_quant.tflite")
    other = ImageLabeler(**with_keys(label={"model": small, "labels": str(labels), "threads": 1})["label"]).load()
    assert other.size == (128, 128)  # MobileNet v1 0.25 at 128, not the default v2 at 224
    assert "286:EGYPTIAN CAT" in [r["label"] for r in answer(other.label(cat()))[:2]]


def test_labels_that_do_not_match_the_model_are_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("background\ncat\n")
    with pytest.raises(ValueError, match="has 2 labels but the model has 1001 classes"):
        ImageLabeler(**with_keys(label={"labels": str(short), "threads": 1})["label"]).load()


# --- defect.* ---

@pytest.mark.parametrize("threads", [1, 2])
def test_defect_threads_is_openvinos_inference_num_threads(threads):
    model = ModelFunction(INFERENCE, with_keys(defect={"threads": threads})).load_model()
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == threads
    assert answer(model.inspect(surface_image(2, seed=3)))["defect"] == 2


def test_defect_threshold_is_the_default_threshold():
    image = surface_image(3, seed=3)
    assert answer(defect_model(threshold=0.5, threads=1).inspect(image))["defect"] == 3
    assert answer(defect_model(threshold=1.0, threads=1).inspect(image))["defect"] == 0


def test_defect_min_area_drops_smaller_regions():
    image, _ = surface_with_truth(5, seed=2233)
    everything = answer(defect_model(threads=1).inspect(image))["defects"]
    areas = sorted(d["area"] for d in everything)
    assert areas == [617, 642, 642, 654, 1192]  # four spots and a scratch
    for cut, left in ((630, 4), (900, 1)):
        kept = answer(defect_model(min_area=cut, threads=1).inspect(image))["defects"]
        assert kept == [d for d in everything if d["area"] >= cut] and len(kept) == left


@pytest.mark.parametrize("quality", [30, 95])
def test_defect_jpeg_quality_is_the_pictures_quality(quality):
    segmenter = defect_model(jpeg_quality=quality, threads=1)
    picture = base64.b64decode(answer(segmenter.inspect(surface_image(2, seed=9)))["base64"])
    assert quantization_of(picture) == quantization_at(quality)


@pytest.mark.parametrize("color,spot_x", [("RGB", 480), ("BGR", 160)])
def test_defect_color_is_the_channel_order_the_model_gets(color, spot_x):
    report = answer(defect_model(color=color, threads=1).inspect(colour_spots()))
    assert report["defect"] == 1 and abs(box_centre_x(report) - spot_x) < 20, report["defects"]


def test_defect_device_auto_runs_on_what_the_box_has():
    segmenter = DefectSegmenter(**load_settings(environ={"DEFECT_DEVICE": "AUTO"})["defect"]).load()
    assert segmenter.device == "AUTO"
    assert segmenter.compiled.get_property("EXECUTION_DEVICES") == ["CPU"]  # no GPU or NPU here
    assert answer(segmenter.inspect(surface_image(3, seed=7)))["defect"] == 3


def test_defect_model_onnx_finds_what_the_ir_finds(tmp_path):
    onnx_path = write_defect_model_onnx(str(tmp_path / "defect.onnx"))
    from_onnx = defect_model(model=onnx_path, threads=1)
    from_ir = defect_model(threads=1)
    for defects in range(6):
        image, drawn = surface_with_truth(defects, seed=6100 + defects)
        model_input = cv2.resize(image, from_ir.size, interpolation=cv2.INTER_AREA)
        assert np.array_equal(from_onnx.segment(model_input), from_ir.segment(model_input))
        assert answer(from_onnx.inspect(image))["defect"] == defects


def test_defect_model_tflite_segments_the_dog():
    deeplab = defect_model(model=fixture_path("models", DEEPLAB_TFLITE), threads=1)
    assert deeplab.size == (513, 513)
    image = cv2.imread(fixture_path("images", "dog_segmentation.bmp"))
    dog = cv2.imread(fixture_path("images", "dog_segmentation_mask.bmp"), cv2.IMREAD_GRAYSCALE) == 0
    mask = deeplab.segment(cv2.resize(image, deeplab.size, interpolation=cv2.INTER_LINEAR))
    mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert (mask & dog).sum() / (mask | dog).sum() >= 0.85


# --- input.* ---

def test_input_caps_come_from_config():
    function = ModelFunction(LABEL_IMAGE, with_keys(label={"threads": 1},
                                                    input={"max_pixels": 300_000, "max_bytes": 600_000}))
    function.start_loading()
    assert function.loaded.wait(120) and function.error is None, function.error  # a call before: "still loading"
    assert function.exec([read_b64("images", "cat.bmp")], None)[0]["label"] == "286:Egyptian cat"  # 524 KB, 175 kpx
    with pytest.raises(InputError, match=r"1280x720 = 921600 pixels, over the limit of 300000 \(input.max_pixels\)"):
        function.exec([read_b64("images", "cat_720p.jpg")], None)
    with pytest.raises(InputError, match=r"over the limit of 600000 \(input.max_bytes\)"):
        function.exec([read_b64("images", "grace_hopper.bmp")], None)  # 922 KB


# --- the same through the plugin process, configured by its environment ---

@pytest.fixture
def configured_plugin(plugin_dir, tmp_path):
    hosts = []

    def start(**env):
        host = PluginHost(plugin_dir, python=sys.executable, env={**os.environ, **env})
        hosts.append(host)
        # The worker loads its models after the handshake: a call before that is answered "still
        # loading" (after 3 s), so the tests wait until the log says both are loaded.
        host.wait_until_loaded()
        return host

    yield start
    for host in hosts:
        print(host.close()[-2000:])


def picture_of(reply):
    return base64.b64decode(reply["result"]["base64"])


def test_plugin_takes_defect_config_label_labels_and_a_tflite_defect_model(configured_plugin, tmp_path):
    labels = tmp_path / "labels.txt"
    with open(DEFAULTS["label"]["labels"]) as f:
        labels.write_text(f.read().upper())
    overlay = write_json(tmp_path / "site.json", {"label": {"top_k": 3}, "defect": {"jpeg_quality": 30},
                                                  "input": {"max_pixels": 300_000, "max_bytes": 600_000}})
    host = configured_plugin(DEFECT_CONFIG=overlay, LABEL_LABELS=str(labels),
                             DEFECT_MODEL=fixture_path("models", DEEPLAB_TFLITE))
    reply = host.exec("labelImage", read_b64("images", "cat.bmp"))
    assert reply["state"] is True, reply
    assert [r["label"] for r in reply["result"]][:1] == ["286:EGYPTIAN CAT"] and len(reply["result"]) == 3
    assert len(host.exec("labelImage", read_b64("images", "cat.bmp"), 2)["result"]) == 2

    reply = host.exec("inference", read_b64("images", "dog_segmentation.bmp"))
    assert reply["state"] is True, reply
    dog = cv2.imread(fixture_path("images", "dog_segmentation_mask.bmp"), cv2.IMREAD_GRAYSCALE) == 0
    ys, xs = np.nonzero(dog)
    biggest = max(reply["result"]["defects"], key=lambda d: d["area"])
    assert abs(biggest["x"] - xs.min()) < 15 and abs(biggest["x"] + biggest["w"] - xs.max()) < 15
    assert abs(biggest["y"] - ys.min()) < 15 and abs(biggest["y"] + biggest["h"] - ys.max()) < 15
    picture = picture_of(reply)
    assert cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR).shape == (513, 1026, 3)  # DeepLab's size
    assert quantization_of(picture) == quantization_at(30)

    over_pixels = host.exec("labelImage", read_b64("images", "cat_720p.jpg"))
    assert over_pixels["state"] is False and "(input.max_pixels)" in over_pixels["result"], over_pixels
    over_bytes = host.exec("inference", read_b64("images", "grace_hopper.bmp"))
    assert over_bytes["state"] is False and "over the limit of 600000 (input.max_bytes)" in over_bytes["result"]


def test_plugin_takes_defect_color_and_an_onnx_defect_model(configured_plugin, tmp_path):
    onnx_path = write_defect_model_onnx(str(tmp_path / "defect256.onnx"), size=256)  # 256: visible in the picture
    frame = base64.b64encode(cv2.imencode(".png", colour_spots())[1].tobytes()).decode()
    host = configured_plugin(DEFECT_COLOR="BGR", DEFECT_MODEL=onnx_path)
    reply = host.exec("inference", frame)
    assert reply["state"] is True, reply
    assert reply["result"]["defect"] == 1 and abs(box_centre_x(reply["result"]) - 160) < 20, reply["result"]
    assert cv2.imdecode(np.frombuffer(picture_of(reply), np.uint8), cv2.IMREAD_COLOR).shape == (256, 512, 3)
    assert len(host.exec("labelImage", read_b64("images", "cat.bmp"))["result"]) == 5  # no overlay: config.json
