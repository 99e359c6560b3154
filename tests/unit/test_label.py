"""labelImage's logic on the real MobileNet models and the real cat pictures."""
import os

import pytest

import label
from core.image_input import decode_image
from core.results import answer
from core.settings import load_settings
from label import ImageLabeler
from tests.support.answers import PHOTOS, label_differences
from tests.support.paths import fixture_path


def label_file(labeler, settings, *parts):
    with open(fixture_path(*parts), "rb") as f:
        pixels, _ = decode_image(f.read(), settings["input"]["max_pixels"], settings["input"]["max_bytes"],
                                 labeler.decode_size)
    return answer(labeler.label(pixels))


@pytest.mark.parametrize("image", ["cat.bmp", "cat_720p.jpg", "cat_1080p.jpg"])
def test_cats_are_egyptian_cats(labeler, settings, image):
    result = label_file(labeler, settings, "images", image)
    assert result[0]["label"] == "286:Egyptian cat"
    assert result[0]["confidence"] > 0.7  # the fixtures README measures about 0.84-0.87


def test_result_shape_is_the_tutorials(labeler, settings):
    result = label_file(labeler, settings, "images", "cat.bmp")
    assert len(result) == 5
    assert all(set(r) == {"confidence", "label"} for r in result)
    confidences = [r["confidence"] for r in result]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0 <= c <= 1 for c in confidences)
    assert all(r["label"].split(":", 1)[0].isdigit() for r in result)


@pytest.mark.parametrize("image,expected", [("grace_hopper.bmp", "653:military uniform"),
                                            ("hot_dog.jpg", "935:hotdog, hot dog, red hot"),
                                            ("parrot.jpg", "89:macaw"), ("bird.bmp", "20:chickadee")])
def test_other_pictures_get_their_own_labels(labeler, settings, image, expected):
    assert label_file(labeler, settings, "images", image)[0]["label"] == expected


def test_another_model_through_config(settings):
    env = {"LABEL_MODEL": fixture_path("models", "mobilenet_v1_0.25_128_quant.tflite")}
    small = ImageLabeler(**load_settings(environ=env)["label"]).load()
    assert small.size == (128, 128)
    result = label_file(small, settings, "images", "cat.bmp")
    assert len(result) == 5
    assert result[0]["label"] in {"286:Egyptian cat", "282:tabby, tabby cat", "283:tiger cat",
                                  "285:Siamese cat, Siamese"}


def test_k_limits_the_answer(labeler, settings):
    with open(fixture_path("images", "cat.bmp"), "rb") as f:
        pixels, _ = decode_image(f.read(), 10**8, 10**8)
    assert len(answer(labeler.label(pixels, 1))) == 1
    assert len(answer(labeler.label(pixels, 10))) == 10


def test_labels_must_match_the_model(settings):
    with pytest.raises(ValueError, match="labels but the model has"):
        ImageLabeler(model=settings["label"]["model"],
                     labels=fixture_path("models", "pascal_voc_segmentation_labels.txt")).load()


def test_broken_model_fails_to_load(settings):
    with pytest.raises(RuntimeError):
        ImageLabeler(model=fixture_path("models", "model_invoking_error.tflite"),
                     labels=settings["label"]["labels"]).load()


def test_missing_model_says_which_file(settings):
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        ImageLabeler(model=os.path.join("models", "nowhere.tflite"), labels=settings["label"]["labels"]).load()


def test_openvino_runtime_gives_litert_answers(settings):
    """label.runtime openvino (OpenVINO reading the same .tflite) against LiteRT on every photo."""
    litert = ImageLabeler(**{**settings["label"], "runtime": "litert"}).load()
    openvino = ImageLabeler(**{**settings["label"], "runtime": "openvino"}).load()
    assert (litert.runtime, openvino.runtime) == ("litert", "openvino")
    assert type(litert.runner).__name__ == "LiteRTRunner" and type(openvino.runner).__name__ == "OpenVINORunner"
    assert (openvino.runner.output_scale, openvino.runner.output_zero) == \
        (litert.runner.output_scale, litert.runner.output_zero)
    differences = {image: label_differences(label_file(litert, settings, "images", image),
                                            label_file(openvino, settings, "images", image))
                   for image in PHOTOS}
    assert not any(differences.values()), differences


def test_auto_runtime_measures_both_on_x86_64_and_is_openvino_elsewhere(monkeypatch):
    for machine, runtime, measured in (("x86_64", "litert", ("litert", "openvino")),
                                       ("AMD64", "litert", ("litert", "openvino")),
                                       ("aarch64", "openvino", ("openvino",)), ("armv7l", "openvino", ("openvino",))):
        monkeypatch.setattr(label.platform, "machine", lambda machine=machine: machine)
        assert label.resolve_runtime("auto") == runtime  # the command line, which measures nothing
        assert label.candidate_runtimes("auto") == measured  # the plugin and the service
    for runtime in ("litert", "openvino"):
        assert label.resolve_runtime(runtime) == runtime and label.candidate_runtimes(runtime) == (runtime,)
