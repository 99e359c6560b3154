"""Generated payloads through both functions' entry points: every call answers, fast, in one line.

10,000 payloads in all (hypothesis): random values of every JSON type, random
bytes and base64, and real JPEG/PNG/BMP files with flipped bytes, cut short or
with junk appended. The only acceptable outcomes are a result or an InputError.
"""
import base64
import os
import time

import cv2
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from core.catalog import INFERENCE, LABEL_IMAGE
from core.image_input import InputError
from label_func import ModelFunction
from tools.synthetic_surface import surface_image

# eKuiper's per-call timeout, as CPU seconds of this process: on a shared box a busy neighbour stretches
# wall time, not the work a call does (a call that blocks for ever is pytest-timeout's to fail).
CALL_BUDGET_SECONDS = 5.0
SEEDS = [cv2.imencode(ext, surface_image(2, seed=1, width=320, height=240))[1].tobytes()
         for ext in (".jpg", ".png", ".bmp")]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


@st.composite
def mutated_image(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    data = data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    data += draw(st.binary(max_size=16))
    return bytes(data)


payloads = st.one_of(
    json_values,
    st.binary(max_size=256),
    st.binary(max_size=256).map(lambda b: base64.b64encode(b).decode()),
    mutated_image(),
    mutated_image().map(lambda b: base64.b64encode(b).decode()),
    mutated_image().map(lambda b: "data:image/jpeg;base64," + base64.b64encode(b).decode()),
)
extra_args = st.one_of(st.just([]), st.lists(json_values, min_size=1, max_size=2))


@pytest.fixture(scope="module")
def functions(settings):
    made = [ModelFunction(LABEL_IMAGE, settings), ModelFunction(INFERENCE, settings)]
    for function in made:
        function.start_loading()
        assert function.loaded.wait(120) and function.error is None, function.error  # ready_model waits 3 s
    return made


@pytest.mark.parametrize("index", [0, 1], ids=["labelImage", "inference"])
def test_fuzz_function(functions, index):
    function = functions[index]
    outcomes = {"result": 0, "error": 0}

    @hsettings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 5000)), deadline=None, database=None,
               suppress_health_check=list(HealthCheck))
    @given(payload=payloads, extra=extra_args)
    def call(payload, extra):
        started = time.process_time()
        try:
            function.exec([payload, *extra], None)
            outcomes["result"] += 1
        except InputError as e:
            assert "\n" not in str(e) and str(e)
            outcomes["error"] += 1
        assert time.process_time() - started < CALL_BUDGET_SECONDS

    call()
    print(function.name, outcomes)
    assert outcomes["result"] > 0 and outcomes["error"] > 0  # both paths were really exercised
