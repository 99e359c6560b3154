"""Models by name: a name finds its files in eKuiper's upload folder, then the plugin's models/, and is
never a path (core/model_names.py); the pool swaps a changed model in without a refused call (core/model_pool.py)."""
import os
import threading
import time

import pytest

from core.errors import InputError, ModelUnavailable
from core.model_names import ModelFiles, check_name, resolve, search_folders, uploads_dir
from core.model_pool import NamedModels


@pytest.mark.parametrize("name", ["partB", "mobilenet_v3", "model-2.1", "A"])
def test_a_name_is_letters_digits_and_a_few_marks(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "/abs", ".hidden", "a..b", "", "x" * 65, 3, None, "a b"])
def test_a_path_or_anything_else_is_refused_in_one_line(name):
    with pytest.raises(InputError) as refused:
        check_name(name)
    assert "model must be a model's name" in str(refused.value) and "\n" not in str(refused.value)


def test_uploads_are_kuiperds_data_folder_found_as_kuiperd_finds_it(tmp_path):
    base = tmp_path / "kuiper"
    plugin = base / "plugins" / "portable" / "defect"
    plugin.mkdir(parents=True)
    assert uploads_dir(str(plugin), environ={}) is None  # no data folder yet
    (base / "data").mkdir()
    assert uploads_dir(str(plugin), environ={}) == str(base / "data" / "uploads")
    elsewhere = tmp_path / "other"
    (elsewhere / "data").mkdir(parents=True)
    assert uploads_dir(str(plugin), environ={"KuiperBaseKey": str(elsewhere)}) == str(elsewhere / "data" / "uploads")
    assert uploads_dir(str(tmp_path / "a" / "repo"), environ={}) is None  # not installed by kuiperd
    assert search_folders(None, str(plugin)) == [str(base / "data" / "uploads"), str(plugin / "models")]
    assert search_folders("/my/models", str(plugin)) == ["/my/models", str(plugin / "models")]


def test_a_name_resolves_in_the_first_folder_that_has_it(tmp_path):
    uploads, models = tmp_path / "uploads", tmp_path / "models"
    uploads.mkdir(), models.mkdir()
    for folder in (uploads, models):
        (folder / "partB.xml").write_text("<net/>")
        (folder / "partB.bin").write_bytes(b"0")
    (models / "cls.tflite").write_bytes(b"0")
    (models / "cls.txt").write_text("a\nb\n")
    (models / "export" / "weights" / "openvino").mkdir(parents=True)
    for name in ("model.xml", "model.bin"):
        (models / "export" / "weights" / "openvino" / name).write_text("x")
    folders = [str(uploads), str(models)]
    found = resolve("partB", (".xml", ".onnx"), folders)
    assert found.model == str(uploads / "partB.xml") and found.files[1] == str(uploads / "partB.bin")
    labelled = resolve("cls", (".tflite",), folders, labelled=True)
    assert labelled.labels == str(models / "cls.txt") and labelled.files == (labelled.model, labelled.labels)
    assert resolve("export", (".xml",), folders, exports=True).model.endswith(
        os.path.join("export", "weights", "openvino", "model.xml"))


@pytest.mark.parametrize("name, kwargs, words", [
    ("nothing", {}, "no model named 'nothing': looked for nothing.xml"),
    ("cls", {"suffixes": (".xml",)}, "no model named 'cls'"),  # a classifier is no segmenter
    ("half", {}, "half.xml has no half.bin beside it"),
    ("bare", {"suffixes": (".tflite",), "labelled": True}, "its labels file bare.txt"),
])
def test_an_unknown_or_incomplete_model_is_one_line(tmp_path, name, kwargs, words):
    (tmp_path / "cls.tflite").write_bytes(b"0")
    (tmp_path / "half.xml").write_text("<net/>")
    (tmp_path / "bare.tflite").write_bytes(b"0")
    with pytest.raises(InputError) as refused:
        resolve(name, kwargs.pop("suffixes", (".xml", ".onnx")), [str(tmp_path)], **kwargs)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def settled_files(tmp_path, name="m", content=b"v1", age=10.0):
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(content)
    old = time.time() - age
    os.utime(path, (old, old))
    return ModelFiles(name, str(path), (str(path),))


def pool(build, settle=0.5, wait=2.0, max_loaded=4):
    return NamedModels("f", build, max_loaded=max_loaded, settle_seconds=settle, wait_seconds=wait)


def test_a_model_loads_on_first_use_and_a_changed_one_swaps_in_while_the_old_answers(tmp_path):
    files = settled_files(tmp_path)
    release = threading.Event()

    def build(f):
        content = open(f.model, "rb").read()
        if content == b"v2":
            release.wait(10)  # the new version takes a while to load
        return content

    models = pool(build)
    first = models.get(files)
    assert first.model == b"v1" and first.name == "m"
    settled_files(tmp_path, content=b"v2", age=5.0)  # replaced, and still for longer than settle_seconds
    assert models.get(files).model == b"v1"  # the new version loads; the old one keeps answering
    assert models.get(files).model == b"v1"
    release.set()
    deadline = time.monotonic() + 10
    while models.get(files).model != b"v2":
        assert time.monotonic() < deadline, "the new version never swapped in"
        time.sleep(0.01)
    assert models.get(files).version != first.version


def test_a_file_still_being_written_is_not_read(tmp_path):
    files = settled_files(tmp_path, age=0.0)  # just written
    built = []
    models = pool(lambda f: built.append(f) or "model", settle=5.0)
    with pytest.raises(ModelUnavailable, match="is being written"):
        models.get(files)
    assert built == []


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(tmp_path):
    files = settled_files(tmp_path)
    tried = []

    def build(f):
        content = open(f.model, "rb").read()
        tried.append(content)
        if content == b"broken":
            raise ValueError("not a model")
        return content

    models = pool(build)
    assert models.get(files).model == b"v1"
    settled_files(tmp_path, content=b"broken", age=5.0)
    assert models.get(files).model == b"v1"  # starts the new version's load; the old one answers
    deadline = time.monotonic() + 10
    while tried.count(b"broken") < 1 or models.entries["m"].loading:  # until the broken load has finished
        assert time.monotonic() < deadline, "the new version's load never ran"
        time.sleep(0.01)
    for _ in range(20):  # the old version keeps answering, and the broken files are not tried again
        assert models.get(files).model == b"v1"
    assert tried == [b"v1", b"broken"]
    fresh = pool(build)
    with pytest.raises(ModelUnavailable, match="could not be loaded: ValueError: not a model"):
        fresh.get(files)


def test_beyond_max_loaded_the_least_recently_used_is_unloaded(tmp_path):
    models = pool(lambda f: f.name, max_loaded=2)
    a, b, c = (settled_files(tmp_path, name) for name in "abc")
    models.get(a), models.get(b), models.get(a), models.get(c)  # b is the least recently used
    assert [m["name"] for m in models.listing()] == ["a", "c"]


def test_beyond_max_memory_mb_the_least_recently_used_are_unloaded(tmp_path):
    """Each model's memory is what the process's resident memory grew by while it loaded."""
    sizes = {"a": 40, "b": 40, "c": 5}  # MB each model holds (filled, so resident)
    models = NamedModels("f", lambda f: b"x" * (sizes[f.name] << 20), max_loaded=4, settle_seconds=0.5,
                         wait_seconds=5.0, max_memory_mb=60)
    a, b, c = (settled_files(tmp_path, name) for name in "abc")
    models.get(a)
    models.get(b)  # a + b is about 80 MB: a, the least recently used, goes
    listed = models.listing()
    assert [m["name"] for m in listed] == ["b"] and 30 <= listed[0]["memory_mb"] <= 60, listed
    models.get(c)  # b + c is about 45 MB: both stay
    assert [m["name"] for m in models.listing()] == ["b", "c"]
    alone = NamedModels("f", lambda f: b"x" * (80 << 20), max_loaded=4, settle_seconds=0.5, wait_seconds=5.0,
                        max_memory_mb=60)
    assert len(alone.get(a).model) == 80 << 20  # the newest stays even over the bound
