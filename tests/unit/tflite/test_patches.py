"""``patches``: a first stage run tile by tile computes exactly what the original computes, on
LiteRT's builtin kernels, XNNPACK and TFLM, with stock ops and the original weight tensors, and a
smaller TFLM head; ``best_patches`` keeps a patching only if it pays."""

import numpy as np
import pytest

from aa_tflite.runtime import guard
from aa_tflite.runtime.interpreter import micro_run
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.firmware import firmware_model, work
from aa_tflite.tflite.offline_plan import plan_offsets, write_offline_plan
from aa_tflite.tflite.patches import best_patches, patch_candidates, patch_stage
from aa_tflite.types import AAError, Kernels
from tests.helpers import raw_outputs

# the fixture: stem conv (op 0, stride 1) -> expand (1) -> depthwise stride 2 (2) -> project (3)
# -> a residual block whose ADD is op 7
POINTS = {0: (1, 16, 16, 8), 1: (1, 16, 16, 48), 2: (1, 8, 8, 48), 3: (1, 8, 8, 8),
          7: (1, 8, 8, 8)}


def test_split_points_are_the_prefixes_whose_only_escaping_tensor_is_their_output(mobile):
    points = patch_candidates(mobile)
    assert {p.op: p.shape for p in points} == POINTS
    assert [p.stride for p in points] == [1, 1, 2, 2, 2]
    ops, _ = flatbuffer.describe(flatbuffer.read(mobile))
    assert [p.tensor for p in points] == [ops[p.op].outputs[0] for p in points]


@pytest.mark.parametrize("kernels", ["builtin", "xnnpack", "tflm"])
@pytest.mark.parametrize("at, grid", [(2, (2, 2)), (3, (3, 3)), (7, (2, 3)), (1, (4, 1)),
                                      (0, (1, 5))])
def test_patched_outputs_equal_the_original_bit_for_bit(mobile, inputs, kernels, at, grid):
    tiled = patch_stage(mobile, at=at, grid=grid)
    assert np.array_equal(raw_outputs(tiled, inputs, kernels),
                          raw_outputs(mobile, inputs, kernels))


def test_only_stock_ops_and_the_original_weight_tensors(mobile):
    tiled = patch_stage(mobile, at=3, grid=(2, 2))
    ops0, tensors0 = flatbuffer.describe(flatbuffer.read(mobile))
    ops, tensors = flatbuffer.describe(flatbuffer.read(tiled))
    assert {o.name for o in ops} - {o.name for o in ops0} == {"STRIDED_SLICE", "PAD",
                                                               "CONCATENATION"}
    assert [(o.name, o.inputs, o.outputs) for o in ops[-6:]] == \
        [(o.name, o.inputs, o.outputs) for o in ops0[4:]]  # the rest is untouched
    weights = {t for o in ops0[:4] for t in o.inputs[1:]}
    tiles = [o for o in ops if o.name in ("CONV_2D", "DEPTHWISE_CONV_2D")][:-3]
    assert len(tiles) == 4 * 4  # four tiles of four weighted ops
    assert {t for o in tiles for t in o.inputs[1:]} == weights  # shared, not copied
    assert memory.weights_size(tiled) - memory.weights_size(mobile) < 400  # crop/pad constants
    for o in tiles:
        y0 = next(p for p in ops0 if p.inputs[1:] == o.inputs[1:]).outputs[0]
        assert (tensors[o.outputs[0]].scale, tensors[o.outputs[0]].zero_point) == \
            (tensors0[y0].scale, tensors0[y0].zero_point)
    model = flatbuffer.read(tiled)
    pads = [model.subgraphs[0].operators[o.index] for o in ops if o.name in ("CONV_2D",
                                                                             "DEPTHWISE_CONV_2D")]
    assert {p.builtinOptions.padding for p in pads[:-3]} == {1}  # VALID in every tile


def test_tensor_indices_are_kept_and_the_same_inputs_give_the_same_bytes(mobile):
    tiled = patch_stage(mobile, at=7, grid=(2, 2))
    assert tiled == patch_stage(mobile, at=7, grid=(2, 2))
    ops0, tensors0 = flatbuffer.describe(flatbuffer.read(mobile))
    _, tensors = flatbuffer.describe(flatbuffer.read(tiled))
    retired = {o.outputs[0] for o in ops0[:7]}
    for old, new in zip(tensors0, tensors[:len(tensors0)]):
        assert new.name == old.name
        assert (new.elements == 0) if old.index in retired else (new == old)
    m0, m = flatbuffer.read(mobile), flatbuffer.read(tiled)
    for field in ("inputs", "outputs"):
        assert list(getattr(m.subgraphs[0], field)) == list(getattr(m0.subgraphs[0], field))


def test_patching_the_peak_lowers_the_tflm_head_and_adds_tail(mobile):
    stock = memory.tflm_arena(mobile)
    arena = memory.tflm_arena(patch_stage(mobile, at=3, grid=(2, 2)))
    assert arena.head < 0.6 * stock.head
    assert arena.tail > stock.tail  # every tile op has its own persistent data


def _head(tflite: bytes) -> int:
    return memory.tflm_arena(tflite).head


def test_best_patches_returns_only_a_patching_that_makes_the_arena_smaller(mobile):
    out, record = best_patches(mobile, measure=_head)
    assert record.point is not None and record.point.op in POINTS
    assert out == patch_stage(mobile, at=record.point.op, grid=record.grid)
    assert record.after == memory.tflm_arena(out) and record.before == memory.tflm_arena(mobile)
    assert record.measured_after == record.after.head < record.before.head
    assert record.measured_after == min(a for *_, a in record.tried)
    assert all(op >= 2 for op, *_ in record.tried)  # the peak is op 2: earlier points cannot help
    # at 16x16 every tile op's persistent data (TFLM's tail) costs more than the head saves
    out, record = best_patches(mobile)
    assert out == mobile and record.point is None and record.after == record.before
    assert record.measured_after == record.before.total < min(a for *_, a in record.tried)
    fw = firmware_model(mobile, patch=True)
    assert fw.patch is None and fw.tflite == firmware_model(mobile).tflite


def test_tflm_runs_a_planned_patched_file_in_exactly_its_arena(mobile, inputs):
    tiled = patch_stage(mobile, at=3, grid=(2, 2))
    offsets, _ = plan_offsets(tiled, in_place="auto")
    planned = write_offline_plan(tiled, offsets, overlaps="auto")
    arena = memory.smallest_arena(planned)
    assert np.array_equal(micro_run(planned, inputs[:8], arena_size=arena),
                          micro_run(mobile, inputs[:8]))
    assert not guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=arena - 64).ok
    assert np.array_equal(raw_outputs(planned, inputs[:8], "builtin"),
                          raw_outputs(mobile, inputs[:8], "builtin"))  # LiteRT ignores the plan
    assert work(tiled) > work(mobile)  # halos are computed more than once


def test_bad_requests_are_clear_errors(mobile):
    for at, why in ((5, r"tensors \[20\] of the stage are read after op 5"),
                    (8, "op 8: MEAN has no tiled form"), (42, "the model has ops 0-9")):
        pick = r".*patch_candidates\(tflite\): \[0, 1, 2, 3, 7\]"
        with pytest.raises(AAError, match=f"Op {at} is not a split point for patch-based "
                                          f"execution .{why}{pick}"):
            patch_stage(mobile, at=at, grid=(2, 2))
    for grid in ((1, 1), (9, 2), (2, 11), (2,), (2.0, 2), (True, 2)):
        with pytest.raises(AAError, match="grid must be"):
            patch_stage(mobile, at=3, grid=grid)
    planned = write_offline_plan(mobile, plan_offsets(mobile)[0])
    with pytest.raises(AAError, match="offline memory plan.*then plan it"):
        patch_stage(planned, at=3, grid=(2, 2))


def test_a_model_without_one_image_input_has_no_split_point(mobile):
    model = flatbuffer.read(mobile)
    model.subgraphs[0].tensors[0].shape = np.asarray([1, 16, 48], np.int32)
    assert patch_candidates(flatbuffer.write(model)) == []
