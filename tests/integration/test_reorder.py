"""Op reordering (``tflite.reorder``) on a branchy reference model: exact, and a smaller arena."""

import numpy as np
import pytest

import aa_tflite
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.firmware import firmware_model
from aa_tflite.tflite.static_batch import static_batch


def test_a_memory_aware_op_order_lowers_a_branchy_graphs_head_exactly(digits):
    """mini_xception's separable branches: a list schedule frees more before it allocates; the
    reordered file computes the same bytes, and firmware runs it in a smaller arena."""
    from aa_tflite.tflite.offline_plan import plan_offsets, write_offline_plan
    from aa_tflite.tflite.reorder import best_order, list_schedule, reorder
    from tests.helpers import calibrated_mini

    x = digits.x_cal[:64]
    tflite = static_batch(aa_tflite.to_tflite(calibrated_mini("mini_xception", x), x))
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    order, head = best_order(tflite)
    assert order != sorted(order) and order in (list_schedule(tflite),
                                               list_schedule(tflite, peak_first=True))
    assert head < plan_offsets(tflite, in_place="auto")[1]
    moved = reorder(tflite, order)
    assert plan_offsets(moved, in_place="auto")[1] == head
    assert moved == reorder(tflite, order)  # same inputs, same bytes
    samples = digits.x_val[:16]
    for kernels in ("builtin", "tflm"):
        from aa_tflite.runtime.interpreter import run_model

        assert np.array_equal(run_model(moved, samples, kernels=kernels),
                              run_model(tflite, samples, kernels=kernels))
    fw = firmware_model(tflite)
    assert fw.reordered and "ops reordered" in fw.describe()
    assert fw.arena < memory.smallest_arena(tflite)
    with pytest.raises(aa_tflite.AAError, match="topological order"):
        reorder(tflite, list(reversed(range(len(ops)))))
    with pytest.raises(aa_tflite.AAError, match="offline memory plan"):
        reorder(write_offline_plan(tflite, plan_offsets(tflite)[0]), order)
