"""``channel_split``: a pointwise -> depthwise pair split into channel chunks computes exactly what
the unsplit pair computes, on LiteRT's builtin kernels, XNNPACK and TFLM, with stock ops and the
original weight bytes, and a smaller TFLM head; ``best_split`` keeps only splits that pay."""

import numpy as np
import pytest

from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.channel_split import (
    best_split,
    chunk_sizes,
    split_candidates,
    split_channels,
)
from aa_tflite.tflite.offline_plan import plan_offsets, write_offline_plan
from aa_tflite.types import AAError
from tests.helpers import raw_outputs

PEAK = 1  # the fixture's stride-2 block: 1x1 expand (op 1) -> depthwise (op 2), 48 channels
OTHER = 4  # the stride-1 block's expand (op 4) -> depthwise (op 5), 24 channels


def _describe(tflite: bytes):
    return flatbuffer.describe(flatbuffer.read(tflite))


def _const(model, index: int) -> np.ndarray:
    t = model.subgraphs[0].tensors[index]
    dtype = np.int8 if flatbuffer.describe(model)[1][index].dtype == "INT8" else "<i4"
    return np.frombuffer(bytes(model.buffers[t.buffer].data), dtype).reshape(tuple(t.shape))


def test_candidates_are_the_expand_depthwise_pairs_and_the_peak_is_marked(mobile):
    pairs = {p.conv: p for p in split_candidates(mobile)}
    assert sorted(pairs) == [PEAK, OTHER]
    peak = pairs[PEAK]
    assert (peak.depthwise, peak.channels, peak.expanded_shape, peak.output_shape) == \
        (2, 48, (1, 16, 16, 48), (1, 8, 8, 48))
    assert peak.at_peak and not pairs[OTHER].at_peak
    assert peak.alive == memory.plan_tensors(mobile, alignment=16)[0] == 16 * 16 * 48 + 8 * 8 * 48
    assert chunk_sizes(48, 5) == [10, 10, 10, 9, 9] and sum(chunk_sizes(7, 7)) == 7


@pytest.mark.parametrize("kernels", ["builtin", "xnnpack", "tflm"])
@pytest.mark.parametrize("splits", [{PEAK: 2}, {PEAK: 5}, {PEAK: 10, OTHER: 3}])
def test_split_outputs_equal_the_unsplit_outputs_bit_for_bit(mobile, inputs, kernels, splits):
    split = split_channels(mobile, splits)
    assert np.array_equal(raw_outputs(split, inputs, kernels), raw_outputs(mobile, inputs, kernels))


def test_only_stock_ops_and_the_weights_are_slices_of_the_original(mobile):
    k = 5
    split = split_channels(mobile, {PEAK: k})
    ops0, tensors0 = _describe(mobile)
    ops, tensors = _describe(split)
    names = [o.name for o in ops]
    assert names == ["CONV_2D", *["CONV_2D", "DEPTHWISE_CONV_2D"] * k, "CONCATENATION",
                     *[o.name for o in ops0[3:]]]
    assert memory.weights_size(split) == memory.weights_size(mobile)  # no byte added
    m0, m = flatbuffer.read(mobile), flatbuffer.read(split)
    chain, lo = ops[1:1 + 2 * k], 0
    for width, conv, dw in zip(chunk_sizes(48, k), chain[0::2], chain[1::2]):
        hi = lo + width
        assert conv.inputs[0] == ops0[PEAK].inputs[0]
        for new, old, axis in ((conv.inputs[1], ops0[1].inputs[1], 0),
                               (conv.inputs[2], ops0[1].inputs[2], 0),
                               (dw.inputs[1], ops0[2].inputs[1], 3),
                               (dw.inputs[2], ops0[2].inputs[2], 0)):
            assert new >= len(tensors0)  # a new tensor, with a new buffer
            original = _const(m0, old)
            assert np.array_equal(_const(m, new), np.take(original, range(lo, hi), axis=axis))
            assert tensors[new].scale == tensors0[old].scale[lo:hi]
        w = _const(m, conv.inputs[1]).tobytes()  # a conv chunk: one contiguous byte slice
        assert _const(m0, ops0[1].inputs[1]).tobytes()[lo * 8:hi * 8] == w
        for t, t0 in ((conv.outputs[0], ops0[1].outputs[0]), (dw.outputs[0], ops0[2].outputs[0])):
            assert (tensors[t].scale, tensors[t].zero_point) == \
                (tensors0[t0].scale, tensors0[t0].zero_point)
        assert (conv.fused_activation, dw.fused_activation) == ("RELU6", "RELU6")
        lo = hi
    concat = ops[1 + 2 * k]
    assert concat.inputs == tuple(dw.outputs[0] for dw in chain[1::2])
    assert concat.outputs == ops0[2].outputs  # the original tensor: the ops after it unchanged


def test_tensor_indices_are_kept_and_the_same_inputs_give_the_same_bytes(mobile):
    split = split_channels(mobile, {PEAK: 4, OTHER: 2})
    assert split == split_channels(mobile, {OTHER: 2, PEAK: 4})
    ops0, tensors0 = _describe(mobile)
    _, tensors = _describe(split)
    retired = {t for conv in (PEAK, OTHER)  # the expanded tensors and the replaced weights
               for t in (*ops0[conv].inputs[1:], *ops0[conv].outputs, *ops0[conv + 1].inputs[1:])}
    assert len(retired) == 10
    for old, new in zip(tensors0, tensors[:len(tensors0)]):
        assert new.name == old.name
        if old.index in retired:
            assert new.elements == 0 and not new.is_constant  # TFLM plans nothing for it
        else:
            assert new == old
    m0, m = flatbuffer.read(mobile), flatbuffer.read(split)
    for field in ("inputs", "outputs"):
        assert list(getattr(m.subgraphs[0], field)) == list(getattr(m0.subgraphs[0], field))


def test_the_tflm_head_goes_down_for_a_split_of_the_peak_pair(mobile):
    stock = memory.tflm_arena(mobile)
    split = split_channels(mobile, {PEAK: 4})
    arena = memory.tflm_arena(split)
    assert arena.head < 0.6 * stock.head and arena.total < stock.total
    assert arena.tail > stock.tail  # each added op costs persistent bytes
    assert arena.head == memory.plan_tensors(split, alignment=16)[0]
    # it can then carry an offline plan (tensor count and lifetimes are the file's)
    offsets, head = plan_offsets(split, in_place="auto")
    assert memory.tflm_arena(write_offline_plan(split, offsets, overlaps="auto")).head == head


def test_best_split_returns_only_a_split_that_makes_the_total_smaller(mobile):
    out, record = best_split(mobile, max_k=4)
    assert record.splits == {PEAK: 4} and [p.conv for p in record.pairs] == [PEAK]
    assert out == split_channels(mobile, record.splits)
    assert record.after == memory.tflm_arena(out) and record.before == memory.tflm_arena(mobile)
    assert record.after.total < record.before.total
    assert record.measured_after == record.after.total == min(a for _, a in record.tried)
    assert {OTHER} & {c for s, _ in record.tried for c in s} == set()  # not at the peak
    # when every split costs more than it saves, none is offered
    out, record = best_split(mobile, max_k=3, measure=len)  # a split file is always longer
    assert out == mobile and record.splits == {} and record.after == record.before
    assert record.measured_after == len(mobile) < min(a for s, a in record.tried if s)


def test_bad_requests_are_clear_errors(mobile):
    for op, why in ((0, "only 1x1"), (2, "not a CONV_2D"), (3, "not by exactly one"),
                    (99, "no op")):
        with pytest.raises(AAError, match=f"Op {op} cannot be channel-split exactly.*{why}.*"
                                          r"split_candidates\(tflite\): \[1, 4\]"):
            split_channels(mobile, {op: 2})
    for k in (1, 11, 49, 2.5, True):  # 11: TFLM's CONCATENATION takes 10 inputs at most
        with pytest.raises(AAError, match="chunks must be a whole number from 2 to 10 .its 48 "):
            split_channels(mobile, {PEAK: k})
    with pytest.raises(AAError, match="splits is empty"):
        split_channels(mobile, {})
    with pytest.raises(AAError, match="max_k must be"):
        best_split(mobile, max_k=1)
    planned = write_offline_plan(mobile, plan_offsets(mobile)[0])
    with pytest.raises(AAError, match="offline memory plan.*then plan it"):
        split_channels(planned, {PEAK: 2})


def test_a_dilated_depthwise_is_refused(mobile):
    model = flatbuffer.read(mobile)
    model.subgraphs[0].operators[2].builtinOptions.dilationHFactor = 2
    dilated = flatbuffer.write(model)
    assert [p.conv for p in split_candidates(dilated)] == [OTHER]
    with pytest.raises(AAError, match="dilated; only dilation 1"):
        split_channels(dilated, {PEAK: 2})


def test_per_tensor_weights_split_exactly(mobile, inputs):
    """The expand conv requantized per tensor (its first channel's scale everywhere): the file
    is another model, and its split computes what it computes."""
    model = flatbuffer.read(mobile)
    graph = model.subgraphs[0]
    op = graph.operators[PEAK]
    x, w, b = (graph.tensors[int(t)] for t in op.inputs)
    w.quantization.scale = np.asarray(w.quantization.scale[:1])
    w.quantization.zeroPoint = np.asarray(w.quantization.zeroPoint[:1])
    b.quantization.scale = np.asarray([x.quantization.scale[0] * w.quantization.scale[0]])
    b.quantization.zeroPoint = np.asarray([0])
    per_tensor = flatbuffer.write(model)
    split = split_channels(per_tensor, {PEAK: 3})
    for kernels in ("builtin", "tflm"):
        assert np.array_equal(raw_outputs(split, inputs, kernels),
                              raw_outputs(per_tensor, inputs, kernels))
