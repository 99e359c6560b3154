"""`python label.py` and `python inference.py` as command lines, run as subprocesses.

Inside the unpacked zip (as installed in kuiperd's plugins/portable/defect/): --help,
no argument (the samples the zip ships), a bad path, a non-image, a folder, options,
a bad config; one JSON line per image served, one stderr line per image that is not.
"""
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.support.paths import REPO, fixture_path

CAT_LABEL = "286:Egyptian cat"
# The plugin's config comes from its dir and these variables; a developer's own must not leak in.
CONFIG_VARS = ("DEFECT_CONFIG", "LABEL_MODEL", "LABEL_LABELS", "DEFECT_MODEL", "DEFECT_DEVICE", "DEFECT_COLOR")


def run(plugin_dir, script, *args, env=None, cwd=None):
    environ = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    completed = subprocess.run([sys.executable, os.path.join(plugin_dir, script), *args], cwd=cwd or plugin_dir,
                               env={**environ, **(env or {})}, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    # Our own lines only: LiteRT and OpenVINO write INFO lines of their own to stderr.
    errors = [line for line in completed.stderr.splitlines() if line.startswith(f"{script}:")]
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed.returncode, lines, errors


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with two images and a text file, a text file posing as an image, an empty folder."""
    root = tmp_path_factory.mktemp("cli")
    folder = root / "frames"
    folder.mkdir()
    shutil.copy(fixture_path("images", "cat.bmp"), folder / "a_cat.bmp")
    shutil.copy(fixture_path("images", "surfaces", "bad", "bad_01_2.png"), folder / "b_surface.png")
    (folder / "notes.txt").write_text("not an image, and not named like one: a folder skips it")
    (root / "notimage.png").write_text("hello")
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize("script,options", [
    ("label.py", ["-k K, --top-k K", "-m MODEL, --model MODEL", "-l LABELS, --labels LABELS", "--threads N",
                  "--model-name NAME", "--roi X,Y,W,H"]),
    ("inference.py", ["-t P, --threshold P", "-m MODEL, --model MODEL", "-d DEVICE, --device DEVICE",
                      "-o PATH, --out PATH", "--threads N", "--model-name NAME", "--roi X,Y,W,H",
                      "--picture {side-by-side,overlay,none}"]),
])
def test_help_lists_the_options_and_loads_no_model(plugin_dir, script, options):
    completed = subprocess.run([sys.executable, script, "--help"], cwd=plugin_dir, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"usage: {script} [-h]")
    for option in options:
        assert option in completed.stdout, option
    assert "IMAGE" in completed.stdout and "Exit status" in completed.stdout


def test_label_without_an_argument_labels_the_sample_the_zip_ships(plugin_dir):
    status, lines, errors = run(plugin_dir, "label.py")
    assert (status, errors) == (0, [])
    (line,) = lines
    assert line["image"] == os.path.join(plugin_dir, "models", "sample_cat.jpg")
    assert line["result"][0]["label"] == CAT_LABEL and len(line["result"]) == 5
    assert line["ms"] > 0


def test_inference_without_an_argument_inspects_the_sample_the_zip_ships(plugin_dir):
    status, lines, errors = run(plugin_dir, "inference.py")
    assert (status, errors) == (0, [])
    (line,) = lines
    assert line["image"] == os.path.join(plugin_dir, "models", "sample_surface.png")
    assert line["result"]["defect"] == 3 and (line["result"]["width"], line["result"]["height"]) == (640, 480)
    assert line["result"]["base64"].startswith("<") and "chars" in line["result"]["base64"]  # shortened


def test_the_sample_cat_is_made_from_the_fixture_not_copied(plugin_dir):
    """models/ is git-ignored and built by `make models`: the sample is a small JPEG made from cat.bmp."""
    with open(os.path.join(plugin_dir, "models", "sample_cat.jpg"), "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size) == ("JPEG", (512, 341))
    assert len(data) < 100_000


@pytest.mark.parametrize("script", ["label.py", "inference.py"])
def test_a_bad_path_and_a_non_image_get_one_line_each_and_the_rest_is_served(plugin_dir, images, script):
    missing, notimage = str(images / "nowhere.png"), str(images / "notimage.png")
    good = fixture_path("images", "cat_720p.jpg")
    status, lines, errors = run(plugin_dir, script, missing, good, notimage)
    assert status == 1
    assert [line["image"] for line in lines] == [good]
    assert errors == [f"{script}: {missing}: No such file or directory",
                      f"{script}: {notimage}: not an image: the 5 bytes are no JPEG, PNG, BMP, TIFF, WebP or GIF"]


@pytest.mark.parametrize("script", ["label.py", "inference.py"])
def test_a_folder_serves_its_images_in_name_order(plugin_dir, images, script):
    status, lines, errors = run(plugin_dir, script, str(images / "frames"))
    assert (status, errors) == (0, [])
    assert [os.path.basename(line["image"]) for line in lines] == ["a_cat.bmp", "b_surface.png"]
    if script == "label.py":
        assert lines[0]["result"][0]["label"] == CAT_LABEL
    else:
        assert lines[1]["result"]["defect"] == 2  # the file name's count


def test_an_empty_folder_is_one_line_and_status_1(plugin_dir, images):
    status, lines, errors = run(plugin_dir, "label.py", str(images / "empty"))
    assert (status, lines) == (1, [])
    assert errors == [f"label.py: {images / 'empty'}: a folder without .jpg, .jpeg, .png, .bmp, .tif, .tiff, "
                      ".webp, .gif files"]


def test_label_k_and_another_model(plugin_dir):
    status, lines, _ = run(plugin_dir, "label.py", "-k", "2", fixture_path("images", "cat.bmp"))
    assert status == 0 and len(lines[0]["result"]) == 2
    small = fixture_path("models", "mobilenet_v1_0.25_128_quant.tflite")
    status, lines, _ = run(plugin_dir, "label.py", "--model", small, "--top-k", "1", fixture_path("images", "cat.bmp"))
    assert status == 0 and len(lines[0]["result"]) == 1
    assert lines[0]["result"][0]["label"] in {CAT_LABEL, "282:tabby, tabby cat", "283:tiger cat"}


def test_labels_that_do_not_fit_the_model_stop_it_in_one_line(plugin_dir):
    voc = fixture_path("models", "pascal_voc_segmentation_labels.txt")
    status, lines, errors = run(plugin_dir, "label.py", "--labels", voc)
    assert (status, lines) == (2, [])
    assert len(errors) == 1 and errors[0].startswith("label.py: label model could not be loaded: ValueError: ")
    assert "labels but the model has 1001 classes" in errors[0]


def test_inference_threshold_and_out(plugin_dir, tmp_path):
    sample = os.path.join(plugin_dir, "models", "sample_surface.png")
    status, lines, _ = run(plugin_dir, "inference.py", "--threshold", "1", sample)
    assert status == 0 and lines[0]["result"]["defect"] == 0  # no probability is above 1
    picture = tmp_path / "side_by_side.jpg"
    status, lines, _ = run(plugin_dir, "inference.py", "-o", str(picture), "--device", "CPU", sample)
    assert status == 0 and lines[0]["result"]["defect"] == 3
    assert str(picture) in lines[0]["result"]["base64"]
    with Image.open(picture) as img:
        assert (img.format, img.size) == ("JPEG", (768, 384))  # input at model size | mask


def test_inference_out_with_several_images_is_a_folder(plugin_dir, images, tmp_path):
    out = tmp_path / "pictures"
    status, lines, _ = run(plugin_dir, "inference.py", "--out", str(out), str(images / "frames"))
    assert status == 0 and len(lines) == 2
    assert sorted(os.listdir(out)) == ["a_cat.jpg", "b_surface.jpg"]
    for line in lines:
        name = os.path.splitext(os.path.basename(line["image"]))[0] + ".jpg"
        with open(out / name, "rb") as f:
            assert f.read(2) == b"\xff\xd8"
        assert str(out / name) in line["result"]["base64"]


@pytest.mark.parametrize("script,args,message", [
    ("label.py", ["-k", "0"], "error: argument -k/--top-k: must be a whole number of at least 1, got '0'"),
    ("inference.py", ["--threshold", "high"],
     "error: argument -t/--threshold: must be a number from 0 to 1, got 'high'"),
    ("inference.py", ["--device", "TPU"], "error: argument -d/--device: must be one of CPU, GPU, NPU, AUTO"),
    ("inference.py", ["--roi", "1,2"], "error: argument --roi: roi must be [x, y, w, h]"),
    ("label.py", ["--model-name", "../cls"], "model must be a model's name"),
    ("inference.py", ["--model-name", "nothere"], "no model named 'nothere': looked for nothere.xml"),
])
def test_bad_options_are_refused_before_any_model_loads(plugin_dir, script, args, message):
    status, lines, errors = run(plugin_dir, script, *args)
    assert (status, lines) == (2, [])
    # argparse's own refusals say "error:"; a name that resolves to nothing is the plugin's own line.
    assert len(errors) == 1 and errors[0].startswith(f"{script}: {message}"), errors


@pytest.mark.parametrize("script", ["label.py", "inference.py"])
def test_a_bad_config_is_one_line_naming_the_key(plugin_dir, tmp_path, script):
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"defect": {"threshold": "high"}}))
    status, lines, errors = run(plugin_dir, script, env={"DEFECT_CONFIG": str(site)})
    assert (status, lines) == (2, [])
    assert errors == [f'{script}: defect.threshold must be a number from 0 to 1, got "high" (DEFECT_CONFIG={site})']


def test_a_missing_model_is_one_line(plugin_dir, tmp_path):
    status, lines, errors = run(plugin_dir, "inference.py", "--model", str(tmp_path / "none.xml"))
    assert (status, lines) == (2, [])
    assert errors == [f"inference.py: defect model could not be loaded: FileNotFoundError: model file not found: "
                      f"{tmp_path / 'none.xml'}"]


def test_paths_on_the_command_line_are_relative_to_the_working_directory(plugin_dir, tmp_path):
    shutil.copy(fixture_path("images", "cat.bmp"), tmp_path / "here.bmp")
    status, lines, _ = run(plugin_dir, "label.py", "here.bmp", cwd=tmp_path)
    assert status == 0 and lines[0]["image"] == "here.bmp" and lines[0]["result"][0]["label"] == CAT_LABEL


@pytest.mark.parametrize("script", ["label.py", "inference.py", "service/service.py", "service/client.py",
                                    "camera/camera.py", "service/ekuiper_service.py"])
def test_every_command_line_answers_an_unknown_option_in_one_line(script):
    """argparse's own answer is the usage block and then the error; a gateway's log gets one line."""
    # Options a command line requires come first in argparse's answer; give them.
    required = {"service/client.py": ["--video", "clip.mp4", "--grpc", "127.0.0.1:1"],
                "camera/camera.py": ["--topic", "frames"]}.get(script, [])
    completed = subprocess.run([sys.executable, os.path.join(REPO, script), *required, "--no-such-option"],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
    name = os.path.basename(script)
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"{name}: error: unrecognized arguments: --no-such-option (see --help)"], completed.stderr


@pytest.mark.parametrize("script", ["service/service.py", "service/client.py", "camera/camera.py",
                                    "service/ekuiper_service.py"])
def test_a_command_in_a_folder_named_as_its_package_runs_with_the_repo_on_pythonpath(script, tmp_path):
    """Run by path, service/service.py's folder comes first on sys.path, where service.py would stand
    for the package `service` (ModuleNotFoundError: 'service' is not a package) once the repo is on
    PYTHONPATH and so no longer inserted in front."""
    completed = subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage:")


def test_a_model_by_name_a_region_and_the_overlay_as_the_function_takes_them(plugin_dir, tmp_path):
    """`inference.py --model-name partB --roi ... --picture overlay`: partB found in the upload folder the config
    names, the boxes in the whole image's pixels and inside the region, the picture the region's own size."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(fixture_path("models", "anomalib_padim_surface", "model" + suffix), uploads / f"partB{suffix}")
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"models": {"uploads": str(uploads)}}))
    surface = fixture_path("images", "surfaces", "bad", "bad_02_3.png")
    picture = tmp_path / "overlay.jpg"
    status, lines, errors = run(plugin_dir, "inference.py", "--model-name", "partB", "--roi", "0,0,0.5,1",
                                "--picture", "overlay", "-o", str(picture), surface, env={"DEFECT_CONFIG": str(site)})
    assert (status, errors) == (0, []), errors
    result = lines[0]["result"]
    assert "score" in result and (result["width"], result["height"]) == (256, 256)  # the anomalib model's answer
    assert result["defect"] >= 1 and all(box["x"] + box["w"] <= 128 for box in result["defects"])
    with Image.open(picture) as drawn:
        assert drawn.size == (128, 256)  # the region the model saw, at its own size
    status, lines, _ = run(plugin_dir, "inference.py", "--picture", "none", surface)
    assert status == 0 and "base64" not in lines[0]["result"] and "score" not in lines[0]["result"]
    with Image.open(fixture_path("images", "cat.bmp")) as cat:  # the region, cut out as a file of its own
        cat.crop((0, 0, cat.width // 2, cat.height)).save(tmp_path / "left.bmp")
    status, region, errors = run(plugin_dir, "label.py", "--roi", "0,0,0.5,1", fixture_path("images", "cat.bmp"))
    assert status == 0, errors
    status, alone, errors = run(plugin_dir, "label.py", str(tmp_path / "left.bmp"))
    assert status == 0, errors
    assert region[0]["result"] == alone[0]["result"]  # the region labelled as the same pixels alone
