"""The budget floor: when no plan reaches the budget, a ``BudgetError`` that helps.

It names the tensors live at the floor, each with a ``FloorTensor`` record saying why it cannot
shrink, and carries the least-loss plan that reaches the floor. The reasons come from the
graph and the measurements, never from the wording of a note. No TensorFlow import.
"""

from __future__ import annotations

from aa_tflite.config import Budget, ConvertConfig, budget_kb_for
from aa_tflite.lowering import signed
from aa_tflite.lowering.stream import stream_refusals
from aa_tflite.search import planner
from aa_tflite.search.baseline import Baseline
from aa_tflite.search.measure import Measured
from aa_tflite.search.memory_modes import memory_model
from aa_tflite.tflite import flatbuffer
from aa_tflite.types import BudgetError, FloorTensor

__all__ = ["check_floor", "floor_tensors"]

_ADD_OFFSET = ("; nor the offset form, which needs the ADD's other input to come from a conv "
               "with a bias that nothing else reads (an identity shortcut cannot take the "
               "opposite offset)")


def check_floor(base: Baseline, measured: Measured, cfg: ConvertConfig,
                budget: Budget | None) -> None:
    """Raises a ``BudgetError`` when no plan reaches ``budget``: it names the tensors that set
    the floor and why each cannot shrink (``BudgetError.tensors``), and carries the least-loss
    plan at the floor (not merely the smallest options everywhere)."""
    model = memory_model(cfg.memory)
    buffers = model.planning_buffers(base)
    floor = planner.floor(buffers, measured.options)
    if budget is None or floor.peak <= budget.nbytes:
        return
    try:  # the least predicted loss that still reaches the floor
        cheapest = planner.search(buffers, measured.options, floor.peak)
    except BudgetError:
        cheapest = floor
    scope, live = planner.peak_tensors(buffers, floor.choice)
    tensors = floor_tensors(base, measured, cfg, floor, live)
    ops, _ = flatbuffer.describe(flatbuffer.read(base.tflite))
    where = (f"while op {scope - 1} ({ops[scope - 1].name}) runs" if 0 < scope <= len(ops)
             else "at the model input")
    lines = [f"  tensor {f.tensor} `{f.name}` {list(f.shape)}: {f.nbytes:,} B, {f.why}"
             for f in tensors]
    raise BudgetError(
        f"The budget of {budget.nbytes / 1024:.2f} {model.unit_words} ({budget.nbytes:,} B) "
        f"cannot be met: the smallest activation memory any plan reaches is {floor.peak:,} B "
        f"({floor.peak / 1024:.2f} KiB, {floor.peak / planner.peak(buffers):.0%} of int8), set "
        f"{where} by these live tensors:\n"
        + "\n".join(lines) + f"\nRaise budget_kb to at least "
        f"{budget_kb_for(floor.peak):.2f}, or offer narrower bits; the error's .plan is "
        f"the least-loss plan at that floor (predicted loss {cheapest.predicted_loss:.2f} "
        "points).",
        smallest_bytes=floor.peak, plan=base.expand(cheapest.configs()), tensors=tensors)


def floor_tensors(base: Baseline, measured: Measured, cfg: ConvertConfig,
                  floor: planner.Search, live) -> tuple[FloorTensor, ...]:
    """A ``FloorTensor`` for each ``(tensor, bytes)`` live at the floor's peak."""
    model = flatbuffer.read(base.tflite)
    ops, infos = flatbuffer.describe(model)
    inputs = {int(t) for t in (model.subgraphs[0].inputs if model.subgraphs[0].inputs
                               is not None else [])}
    producer = {t: op for op in ops for t in op.outputs}
    readers: dict[int, set[str]] = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t, set()).add(op.name)
    chosen = base.tensor_bits(base.expand(floor.configs()))
    owner = {t: s for s, g in base.graphs.items() for t in g.group if not g.signed}
    signed_reach = signed.reachable(base.tflite)
    by_stream = stream_refusals(base.tflite)
    out = []
    for t, nbytes in live:
        if t in inputs:
            why = "the model input: its int8 type is fixed by the data the caller feeds"
        elif t in chosen:
            why = f"at {chosen[t]} bits, its narrowest option (menu {list(cfg.bits)})"
        elif t in owner:
            why = _site_why(base, measured, owner[t])
        elif t in signed_reach:
            g = signed_reach[t]
            why = (f"output of {g.producer_op} (op {g.producer}), signed: "
                   + ("; ".join(g.notes) or "its options save nothing more here"))
            if "ADD" in readers.get(t, ()):
                why += _ADD_OFFSET + (f"; nor the stream form: {by_stream[t]}"
                                      if t in by_stream else "")
        else:
            op = producer.get(t)
            what = "a constant-free input" if op is None else f"{op.name} (op {op.index})"
            why = (f"output of {what}: neither a ReLU output nor a weighted op's signed output, "
                   "and no zero-cost lowering reaches it yet")
        out.append(FloorTensor(tensor=t, name=infos[t].name.split(";")[0][-60:],
                               shape=tuple(infos[t].shape), nbytes=nbytes, why=why))
    return tuple(out)


def _site_why(base: Baseline, measured: Measured, site: str) -> str:
    g = base.graphs[site]
    if measured.options.get(base.unit_of(site)):
        return f"ReLU site {site}: its narrower options save nothing more here"
    return f"ReLU site {site}: " + ("; ".join(g.notes[:2]) if not g.can_requantize
                                    else "none of its options could be built safely")
