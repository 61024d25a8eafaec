"""Op reordering for a smaller activation peak in an int8 ``.tflite``. Schema only.

TFLite and TFLite Micro run the ops of a subgraph in file order, and a converter writes one
topological order of the graph. In a branchy graph (Inception, SqueezeNet's fire modules, any
concatenation of branches) another order can keep fewer tensors alive at once: finish the branch
that frees the most before starting one that allocates more. A chain or a ResNet has one sensible
order, and nothing changes. ``best_order`` tries the file's order and two memory-aware list
schedules, lays each out with the offline planner (``offline_plan.plan_offsets``), and keeps the
smallest head; ``reorder`` writes the file in that order. The same ops compute from the same
inputs, so the outputs are unchanged bit for bit; only the peak moves.

Example:
    >>> order, head = best_order(tflite)  # doctest: +SKIP
    >>> smaller = reorder(tflite, order)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.offline_plan import OFFLINE_PLAN_NAME, plan_offsets
from aa_tflite.tflite.ops import consumers, model_outputs
from aa_tflite.types import AAError

__all__ = ["best_order", "list_schedule", "reorder"]


def list_schedule(tflite: bytes, *, peak_first: bool = False) -> list[int]:
    """A topological order that greedily keeps few activation bytes alive.

    At each step, among the ops whose inputs are ready, it runs the one whose outputs minus the
    inputs it frees add the fewest bytes (``peak_first``: the one with the fewest bytes alive
    while it runs); ties go to the file's order.

    Args:
        tflite: The model's bytes (subgraph 0 is ordered).
        peak_first: Rank by the bytes alive during the op instead of after it.

    Returns:
        Op indices in the new execution order.

    Example:
        >>> list_schedule(tflite)[:3]  # doctest: +SKIP
        [0, 1, 2]
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    readers = {t: {op.index for op, _ in r} for t, r in consumers(ops).items()}
    keep = model_outputs(model)
    made_by = {t: op.index for op in ops for t in op.outputs}
    size = {t.index: 0 if t.is_constant else t.elements * t.storage_bits // 8 for t in tensors}
    alive = {int(t) for t in model.subgraphs[0].inputs}
    waiting = {t: set(r) for t, r in readers.items()}
    done: list[int] = []
    ran: set[int] = set()
    while len(done) < len(ops):
        ready = [op for op in ops if op.index not in ran and all(
            t not in made_by or made_by[t] in ran for t in op.inputs if t >= 0)]

        now = sum(size[t] for t in alive)
        costs = []
        for op in ready:
            freed = sum(size[t] for t in set(op.inputs) if t in alive and t not in keep
                        and waiting.get(t, set()) <= {op.index})
            added = sum(size[t] for t in op.outputs)
            costs.append(((now + added) if peak_first else (added - freed), op.index, op))
        op = min(costs, key=lambda c: c[:2])[2]
        done.append(op.index)
        ran.add(op.index)
        alive |= set(op.outputs)
        for t in set(op.inputs):
            waiting.get(t, set()).discard(op.index)
            if t in alive and t not in keep and not waiting.get(t):
                alive.discard(t)
    return done


def reorder(tflite: bytes, order: Sequence[int]) -> bytes:
    """``tflite`` with subgraph 0's ops written in ``order`` (a topological order of their
    indices). Tensors, buffers and metadata are unchanged; the outputs are the same.

    Raises:
        AAError: ``order`` is not a topological order of every op, or the file carries an
            offline memory plan (plan after reordering).
    """
    model = flatbuffer.read(tflite)
    if any(getattr(m, "name", None) in (OFFLINE_PLAN_NAME, OFFLINE_PLAN_NAME.encode())
           for m in model.metadata or []):
        raise AAError("This .tflite carries an offline memory plan, which a new op order would "
                      "make wrong. Reorder the file without the plan, then plan it.")
    plan_offsets(tflite, order=order)  # checks the order (clear errors)
    graph = model.subgraphs[0]
    graph.operators = [graph.operators[int(k)] for k in order]
    return flatbuffer.write(model)


def best_order(tflite: bytes, *, library: str = "all") -> tuple[list[int], int]:
    """The op order whose offline plan has the smallest head: the file's own order, or a
    memory-aware list schedule (``list_schedule``) if it is strictly smaller.

    Args:
        tflite: The model's bytes.
        library: The kernel library the plan's in-place overlaps must be safe for.

    Returns:
        The order and its planned head in bytes (TFLM's 16-byte alignment).

    Example:
        >>> order, head = best_order(tflite)  # doctest: +SKIP
    """
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    candidates = [list(range(len(ops))), list_schedule(tflite),
                  list_schedule(tflite, peak_first=True)]
    heads = [plan_offsets(tflite, order=o, in_place="auto", library=library)[1]
             for o in candidates]
    best = min(range(len(candidates)), key=lambda i: (heads[i], i))
    return candidates[best], heads[best]
