"""The TFLM-style planner (without TensorFlow) and its agreement with TFLite Micro's arena."""

import subprocess
import sys

import pytest

from aa_tflite.tflite import memory
from aa_tflite.types import AAError


def test_greedy_offsets_reuses_dead_buffers():
    # a: 0-1, b: 1-2 (overlaps a), c: 2-3 (overlaps b only) -> c reuses a's place.
    offsets, peak = memory.greedy_offsets([10, 20, 5], [0, 1, 2], [1, 2, 3])
    assert offsets == [20, 0, 20]
    assert peak == 30


def test_greedy_offsets_fills_gap_between_buffers():
    # Big buffers at 0 and 100 alive throughout; a small one alive with them goes after them,
    # one alive at another time goes at 0.
    offsets, peak = memory.greedy_offsets([100, 50, 30, 30], [0, 0, 0, 5], [4, 4, 4, 6])
    assert offsets[:3] == [0, 100, 150]
    assert offsets[3] == 0
    assert peak == 180


def test_greedy_offsets_validates_lengths():
    with pytest.raises(ValueError):
        memory.greedy_offsets([1, 2], [0], [1])


def test_memory_module_needs_no_tensorflow():
    code = ("import sys, aa_tflite.tflite.memory, aa_tflite.types, aa_tflite.tflite.flatbuffer;"
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_packed_bits_shrink_the_peak(digits_tflite):
    int8_peak, layout = memory.plan_tensors(digits_tflite)
    # Every int8 activation at 4 bits: the peak halves (each tensor is an even number of bytes).
    four = {t.index: 4 for t in layout if t.dtype == "INT8"}
    packed_peak, packed_layout = memory.plan_tensors(digits_tflite, bits=four)
    assert packed_peak == int8_peak // 2
    assert all(t.nbytes * 2 == next(u.nbytes for u in layout if u.index == t.index)
               for t in packed_layout if t.index in four)


def test_layout_has_no_collisions(mnist1d_tflite):
    _, layout = memory.plan_tensors(mnist1d_tflite, alignment=memory.TFLM_ALIGNMENT)
    for a in layout:
        for b in layout:
            if a.index < b.index and not (a.first > b.last or b.first > a.last):
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset


def test_weights_size_counts_constant_buffers(digits_tflite):
    # digits CNN: 47,530 float parameters -> int8 weights + int32 biases + per-channel data.
    weights = memory.weights_size(digits_tflite)
    assert 47_000 < weights < len(digits_tflite)


@pytest.mark.parametrize("fixture", ["digits_tflite", "mnist1d_tflite"])
def test_planner_matches_tflm_arena_head(fixture, request):
    """The planner's int8 figure at TFLM's 16-byte alignment equals the head TFLM allocates.

    Tolerance: zero. The head is exactly the planned activation buffers when no kernel asks for
    scratch memory (TFLM's reference int8 kernels for these ops do not). The tail (tensor
    structs, per-channel multipliers, op data) is bookkeeping the planner does not model; it is
    reported beside, never folded into, the activation figure.
    """
    tflite = request.getfixturevalue(fixture)
    planned, _ = memory.plan_tensors(tflite, alignment=memory.TFLM_ALIGNMENT)
    arena = memory.tflm_arena(tflite)
    assert planned == arena.head
    assert arena.total == arena.head + arena.tail
    # Unaligned packed int8 is within 15 bytes per planned tensor of the aligned figure.
    packed, layout = memory.plan_tensors(tflite)
    assert planned - 15 * len(layout) <= packed <= planned


def test_tflm_arena_too_small_is_a_clear_error(digits_tflite):
    with pytest.raises(AAError, match="could not allocate"):
        memory.tflm_arena(digits_tflite, arena_size=512)


def test_not_a_tflite_is_a_clear_error():
    with pytest.raises(AAError, match="TFL3"):
        memory.plan_tensors(b"definitely not a model")


def test_live_bytes_is_the_per_op_timeline_whose_top_bounds_the_layout(digits_tflite):
    from tests.helpers import DIGITS_SITES

    live = memory.live_bytes(digits_tflite)
    peak, layout = memory.plan_tensors(digits_tflite)
    assert len(live) == 11  # scope 0, then one per op of the 10
    assert max(live) <= peak == 3072
    assert live[0] == sum(t.nbytes for t in layout if t.first == 0)  # the input alone
    four = {t: 4 for t in DIGITS_SITES.values()}
    packed = memory.live_bytes(digits_tflite, bits=four)
    assert all(p <= b for p, b in zip(packed, live, strict=True)) and max(packed) < max(live)


def test_the_timeline_plot_is_a_png():
    from aa_tflite.plots import timeline_plot

    png = timeline_plot({"int8": [10, 30, 20], "plan": [10, 15, 20]}, ["CONV_2D", "ADD"], "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
