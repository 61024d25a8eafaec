"""TFLite Micro's offline memory plan: the format, our checker, our planner, and TFLM running the
planned files in exactly their arena with the unplanned files' outputs, bit for bit."""

import numpy as np
import pytest

from aa_tflite.runtime import guard
from aa_tflite.runtime.interpreter import make_interpreter, micro_run, quantize, run_model
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.offline_plan import (
    IN_PLACE,
    LIBRARIES,
    OFFLINE_PLAN_NAME,
    check_plan,
    in_place_candidates,
    plan_offsets,
    read_offline_plan,
    write_offline_plan,
)
from aa_tflite.types import AAError, Kernels
from tests.helpers import adversarial

FIXTURES = ["digits_tflite", "mnist1d_tflite"]


def _inputs(tflite: bytes, request) -> np.ndarray:
    """Real inputs (digits) or random ones (MNIST-1D), then adversarial ones, as int8 samples."""
    detail = make_interpreter(tflite, Kernels.BUILTIN).get_input_details()[0]
    shape = tuple(detail["shape"][1:])
    rng = np.random.RandomState(0)
    if shape == (8, 8, 1):
        real = quantize(request.getfixturevalue("digits_data").x_val[:24], detail)
    else:
        real = rng.randint(-128, 128, size=(24, *shape)).astype(np.int8)
    return np.concatenate([real, *adversarial(shape, rng)])


def _conv_pair(tflite: bytes) -> tuple[int, int, int]:
    """The (op, input, output) of the model's first CONV_2D whose input dies there."""
    model = flatbuffer.read(tflite)
    ops, _ = flatbuffer.describe(model)
    first, last = memory.lifetimes(model, ops)
    return next((op.index, op.inputs[0], op.outputs[0]) for op in ops
                if op.name == "CONV_2D" and last[op.inputs[0]] == op.index + 1)


def test_the_table_names_only_known_libraries_and_cites_sources():
    for rule in IN_PLACE.values():
        assert set(rule.libraries) <= set(LIBRARIES) and rule.evidence
        assert rule.kind in ("elementwise", "depthwise", "conv")
        assert all(":" in e for e in rule.evidence)  # file:line
    assert IN_PLACE["CONV_2D"].libraries == ("reference",)  # CMSIS-NN's loop order forbids it


@pytest.mark.parametrize("fixture", FIXTURES)
def test_without_overlaps_the_plan_is_tflms_greedy(fixture, request):
    tflite = request.getfixturevalue(fixture)
    offsets, head = plan_offsets(tflite)
    peak, layout = memory.plan_tensors(tflite, alignment=memory.TFLM_ALIGNMENT)
    assert head == peak
    assert offsets == {t.index: t.offset for t in layout}
    assert check_plan(tflite, offsets) == []


def test_written_plan_reads_back_and_same_inputs_give_same_bytes(digits_tflite):
    assert read_offline_plan(digits_tflite) is None
    offsets, _ = plan_offsets(digits_tflite)
    planned = write_offline_plan(digits_tflite, offsets)
    assert read_offline_plan(planned) == offsets
    assert write_offline_plan(digits_tflite, dict(reversed(offsets.items()))) == planned
    assert write_offline_plan(planned, offsets) == planned  # replaces, in place
    other = dict(offsets)
    other.pop(min(other))  # one tensor left for TFLM to plan
    replaced = write_offline_plan(planned, other)
    assert read_offline_plan(replaced) == other
    model = flatbuffer.read(replaced)
    names = [m.name.decode() if isinstance(m.name, bytes) else m.name for m in model.metadata]
    assert names.count(OFFLINE_PLAN_NAME) == 1
    entry = model.metadata[names.index(OFFLINE_PLAN_NAME)]
    words = np.frombuffer(bytes(model.buffers[entry.buffer].data), "<i4")
    n = len(model.subgraphs[0].tensors)
    assert list(words[:3]) == [0, 1, n] and len(words) == 3 + n and -1 in words[3:]


def test_damaged_plans_and_bad_offsets_are_clear_errors(digits_tflite):
    offsets, _ = plan_offsets(digits_tflite)
    with pytest.raises(AAError, match="subgraph 0 has tensors"):
        write_offline_plan(digits_tflite, {10_000: 0})
    model = flatbuffer.read(write_offline_plan(digits_tflite, offsets))
    model.buffers[model.metadata[-1].buffer].data = np.frombuffer(
        np.asarray([1, 1, 3, 0, 0, 0], "<i4").tobytes(), np.uint8).copy()
    with pytest.raises(AAError, match="one int32 offset for each"):
        read_offline_plan(flatbuffer.write(model))
    with pytest.raises(AAError, match="library must be"):
        plan_offsets(digits_tflite, in_place="auto", library="tpu")
    with pytest.raises(AAError, match="topological order"):
        plan_offsets(digits_tflite, order=list(range(len(flatbuffer.describe(
            flatbuffer.read(digits_tflite))[0])))[::-1])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_checker_catches_an_overlapping_plan(fixture, request):
    tflite = request.getfixturevalue(fixture)
    offsets, _ = plan_offsets(tflite)
    op, inp, out = _conv_pair(tflite)
    bad = {**offsets, inp: offsets[out]}  # input and output of one conv at the same bytes
    problems = check_plan(tflite, bad)
    assert any(f"tensors {min(inp, out)} and {max(inp, out)} are both alive" in p
               for p in problems), problems
    assert check_plan(tflite, {**offsets, inp: offsets[inp] + 8})  # misaligned
    with pytest.raises(AAError, match="unsafe"):
        write_offline_plan(tflite, bad)
    # the checker's refusal is real: TFLM runs the bad plan without a word, and gets it wrong
    x = _inputs(tflite, request)
    corrupt = write_offline_plan(tflite, bad, check=False)
    assert not np.array_equal(micro_run(corrupt, x), micro_run(tflite, x))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_tflm_runs_the_planned_file_in_exactly_its_arena_bit_exact(fixture, request):
    tflite = request.getfixturevalue(fixture)
    offsets, head = plan_offsets(tflite)
    planned = write_offline_plan(tflite, offsets)
    stock, arena = memory.tflm_arena(tflite), memory.tflm_arena(planned)
    assert arena == stock and arena.head == head
    # TFLM's own head plus tail
    assert memory.smallest_arena(planned, total=arena.total) == arena.total
    assert guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=arena.total).ok
    assert not guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=arena.total - 64).ok
    x = _inputs(tflite, request)
    assert np.array_equal(micro_run(planned, x, arena_size=arena.total), micro_run(tflite, x))


def test_litert_ignores_the_plan(digits_tflite, digits_data):
    offsets, _ = plan_offsets(digits_tflite, in_place="auto", library="reference")
    planned = write_offline_plan(digits_tflite, offsets, overlaps="auto", library="reference")
    x = digits_data.x_val[:64]
    for kernels in ("builtin", "xnnpack"):
        assert np.array_equal(run_model(planned, x, kernels=kernels),
                              run_model(digits_tflite, x, kernels=kernels))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_allowed_in_place_overlaps_shrink_the_head_and_stay_bit_exact(fixture, request):
    tflite = request.getfixturevalue(fixture)
    stock = memory.tflm_arena(tflite)
    safe, safe_head = plan_offsets(tflite, in_place="auto")  # proven for every library
    assert safe_head <= stock.head and check_plan(tflite, safe, overlaps="auto") == []
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    candidates = in_place_candidates(tflite, library="reference")
    assert "CONV_2D" in {ops[o.op].name for o in candidates}
    assert all(o.shift % 16 == 0 and (o.exact or o.shift > 0) for o in candidates)
    offsets, head = plan_offsets(tflite, in_place="auto", library="reference")
    assert head < stock.head
    assert check_plan(tflite, offsets, overlaps="auto", library="reference") == []
    # the same plan is refused where the conv overlap is not proven (CMSIS-NN, ESP-NN)
    assert check_plan(tflite, offsets, overlaps="auto", library="all")
    with pytest.raises(AAError, match="unsafe"):
        write_offline_plan(tflite, offsets, overlaps="auto")
    planned = write_offline_plan(tflite, offsets, overlaps="auto", library="reference")
    arena = memory.tflm_arena(planned)
    assert arena.head == head and arena.tail == stock.tail
    smallest = memory.smallest_arena(planned, total=arena.total)
    assert arena.total <= smallest < memory.smallest_arena(tflite, total=stock.total)
    assert guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=smallest).ok
    assert not guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=smallest - 64).ok
    x = _inputs(tflite, request)
    assert np.array_equal(micro_run(planned, x, arena_size=smallest), micro_run(tflite, x))


def test_a_disallowed_overlap_is_refused(digits_tflite):
    offsets, _ = plan_offsets(digits_tflite)
    pair = _conv_pair(digits_tflite)
    op, inp, out = pair
    under = {**offsets, inp: offsets[out]}  # the conv's input at the start of its output
    problems = check_plan(digits_tflite, under, overlaps=[pair], library="reference")
    assert any("both alive" in p for p in problems), problems
    assert any("proven for ['reference'] only" in p
               for p in check_plan(digits_tflite, under, overlaps=[pair]))
    with pytest.raises(AAError, match="proven for"):
        plan_offsets(digits_tflite, in_place=[pair])  # library="all": not proven for CMSIS-NN
    with pytest.raises(AAError, match="is used after this op|not one of"):
        plan_offsets(digits_tflite, in_place=[(op, out, inp)], library="reference")
