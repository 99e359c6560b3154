"""Faults the plugin must survive without a restart: broken or missing model files, an absent device."""
import os
import shutil
import sys

import pytest

from tests.support.nng_host import PluginHost
from tests.support.paths import fixture_path, read_b64
from tests.support.plugin_calls import assert_one_line_error
from tests.support.scenarios import surface_b64


@pytest.fixture
def broken_plugin(plugin_dir, tmp_path):
    """A copy of the installed plugin with a broken labelling model and no defect weights, asked for a GPU."""
    target = tmp_path / "defect"
    shutil.copytree(plugin_dir, target)
    models = target / "models"
    good_label_model = (models / "mobilenet_v2_1.0_224_quant.tflite").read_bytes()
    good_weights = (models / "model.bin").read_bytes()
    shutil.copyfile(fixture_path("models", "model_invoking_error.tflite"), models / "mobilenet_v2_1.0_224_quant.tflite")
    os.unlink(models / "model.bin")
    env = {**os.environ, "DEFECT_DEVICE": "GPU"}  # this box has no GPU
    host = PluginHost(str(target), python=sys.executable, env=env)
    yield host, models, good_label_model, good_weights
    host.close()


def test_broken_models_answer_clearly_and_recover_when_files_come_back(broken_plugin):
    host, models, good_label_model, good_weights = broken_plugin
    cat, surface = read_b64("images", "cat.bmp"), surface_b64(2, seed=8)
    host.wait_until_loaded()  # both tried: each says why it could not load
    worker = host.worker_pid()
    assert_one_line_error(host.exec("labelImage", cat), "labelImage model could not be loaded")
    assert_one_line_error(host.exec("inference", surface), "inference model could not be loaded")

    # README: "putting good files back recovers on the next call". That call notices the changed
    # file and waits for the reload, up to 3 s (label_func.MODEL_WAIT_SECONDS).
    mark = len(host.output())
    (models / "mobilenet_v2_1.0_224_quant.tflite").write_bytes(good_label_model)
    reply = recovered(host, "labelImage", cat, mark)
    assert reply["state"] is True and reply["result"][0]["label"] == "286:Egyptian cat", reply
    assert_one_line_error(host.exec("inference", surface), "inference model could not be loaded")  # still broken

    mark = len(host.output())
    (models / "model.bin").write_bytes(good_weights)
    reply = recovered(host, "inference", surface, mark)
    assert reply["state"] is True and reply["result"]["defect"] == 2, reply
    assert host.worker_pid() == worker  # never restarted: the same worker recovered
    # The absent GPU was replaced by the CPU, said once in the log.
    assert host.output().count("OpenVINO device GPU is not available here") == 1


def recovered(host, symbol, value, mark):
    """The answer once good files are back. The next call reloads the model and waits for it up to
    3 s; a reload that takes longer (a slow or busy CPU) gets the one documented transient answer,
    "still loading", and the call after the worker says the model is loaded is served. Nothing
    else is accepted, and no timeout is retried."""
    reply = host.exec(symbol, value)
    if reply == {"state": False, "result": f"{symbol} model is still loading; the next frames will be served"}:
        host.wait_for_output(f"{symbol}: model loaded", after=mark)
        reply = host.exec(symbol, value)
    return reply
