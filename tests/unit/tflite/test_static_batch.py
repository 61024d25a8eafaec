"""``static_batch``: a file fixed at batch 1 with Flatten's shape ops folded computes exactly
what the batch-agnostic file computes, with a smaller TFLM arena and no op the Edge TPU lacks."""

import numpy as np
import pytest

from aa_tflite.runtime.interpreter import load_interpreter, run_model
from aa_tflite.tflite import flatbuffer, memory, metadata, multipoint
from aa_tflite.tflite.static_batch import static_batch
from tests.conftest import FIXTURES
from tests.helpers import adversarial

SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}


def _ops(tflite):
    return [o.name for o in flatbuffer.describe(flatbuffer.read(tflite))[0]]


@pytest.fixture(params=["digits", "mnist1d"])
def case(request, digits_tflite, mnist1d_tflite, digits_data):
    if request.param == "digits":
        return digits_tflite, digits_data.x_val[:60]
    return mnist1d_tflite, np.load(f"{FIXTURES}/mnist1d_cal.npz")["x"][:60]


def test_shape_ops_are_folded_and_nothing_else_changes(case):
    tflite, _ = case
    fixed = static_batch(tflite)
    before, after = _ops(tflite), _ops(fixed)
    assert SHAPE_OPS & set(before) and not SHAPE_OPS & set(after)
    assert after == [o for o in before if o not in SHAPE_OPS]
    _, t0 = flatbuffer.describe(flatbuffer.read(tflite))
    _, t1 = flatbuffer.describe(flatbuffer.read(fixed))
    assert len(t0) == len(t1)  # tensor indices kept: metadata still points at the right ones
    assert static_batch(fixed) == fixed  # nothing left to fold


@pytest.mark.parametrize("kernels", ["builtin", "xnnpack", "tflm"])
def test_outputs_are_the_same_bit_for_bit_on_real_and_adversarial_inputs(case, kernels):
    tflite, x = case
    fixed = static_batch(tflite)
    assert np.array_equal(run_model(fixed, x, kernels=kernels), run_model(tflite, x,
                                                                          kernels=kernels))
    a, b = load_interpreter(tflite), load_interpreter(fixed)
    inp = a.get_input_details()[0]
    shape = tuple(int(d) for d in inp["shape"][1:])
    for batch in adversarial(shape, np.random.RandomState(0)):
        for sample in batch[:2]:
            outs = []
            for interp in (a, b):
                interp.allocate_tensors()
                interp.set_tensor(interp.get_input_details()[0]["index"], sample[None])
                interp.invoke()
                outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
            assert np.array_equal(*outs)


def test_the_tflm_arena_shrinks_and_the_head_stays(case):
    tflite, _ = case
    stock, fixed = memory.tflm_arena(tflite), memory.tflm_arena(static_batch(tflite))
    assert fixed.head == stock.head and fixed.tail < stock.tail


def test_every_subgraph_of_a_multi_point_file_is_fixed_and_metadata_kept(digits_tflite):
    both = multipoint.combine([("a", digits_tflite), ("b", digits_tflite)],
                              metadata={"plan": {"sites": {}}})
    fixed = static_batch(both)
    assert multipoint.signature_keys(fixed) == ["a", "b"]
    assert metadata.read_metadata(fixed) == metadata.read_metadata(both)
    for key in ("a", "b"):
        assert not SHAPE_OPS & set(_ops(multipoint.split(fixed, key)))
