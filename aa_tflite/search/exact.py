"""The planning problem solved exactly where it is small enough: an integer program through HiGHS
(``scipy.optimize.milp``), as Sony MCT solves its mixed-precision search.

One option (or the int8 baseline) per unit; for every allocation scope, the bytes alive must fit
the budget; the objective is the summed single-unit loss (losses below zero count as zero, and
each change costs ``CHANGE_COST`` points, so nothing changes without need). Bytes alive at a scope
are a sum, while the real peak is TFLM's greedy layout, which can fragment; when the solution's
layout peak is over the budget, the program is solved again with the budget cut by the excess.
``planner.search`` keeps the better of this and its greedy plus local search, so a larger option
set never plans worse than a subset of it on the instances this solves.

Example:
    >>> from aa_tflite.search.planner import Buffer, Option
    >>> from aa_tflite.types import SiteConfig
    >>> bufs = [Buffer(0, 0, 1, 64), Buffer(1, 1, 2, 128)]
    >>> opts = {"a": [Option("a", SiteConfig(bits=4), 0.5, {1: 64})]}
    >>> exact(bufs, opts, 150).peak
    128
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["CHANGE_COST", "MAX_VARIABLES", "exact", "objective"]

CHANGE_COST = 1e-3  # points per changed unit: among equal losses, change the fewest units
MAX_VARIABLES = 20_000  # larger problems are left to the greedy search
_ROUNDS = 8  # re-solves with a tighter budget when the layout fragments past the live bytes


def objective(choice: Mapping) -> float:
    """What the program minimizes, for any plan: clipped losses plus the change cost."""
    return float(sum(max(o.loss, 0.0) + CHANGE_COST for o in choice.values()))


def exact(buffers: Sequence, options: Mapping[str, Sequence], budget: int, *,
          banned: frozenset = frozenset()):
    """The least-objective plan whose layout peak meets ``budget``, or None when the problem is
    too large (``MAX_VARIABLES``), infeasible, or still over the budget after the re-solves.

    Args:
        buffers: ``planner.Buffer`` per planned tensor.
        options: ``planner.Option`` per unit.
        budget: Bytes.
        banned: ``(unit, config)`` pairs not to use.

    Returns:
        A ``planner.Search`` (no steps), or None.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    from aa_tflite.search.planner import Search, peak

    variables = [(u, o) for u in sorted(options) for o in options[u]
                 if (u, o.config) not in banned]
    if not variables or len(variables) > MAX_VARIABLES:
        return None
    scopes = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    alive = np.zeros((len(scopes), len(buffers)))
    for j, b in enumerate(buffers):
        alive[b.first - scopes.start:b.last - scopes.start + 1, j] = 1.0
    base = alive @ np.asarray([b.nbytes for b in buffers], np.float64)
    column = {b.tensor: j for j, b in enumerate(buffers)}
    delta = np.zeros((len(scopes), len(variables)))
    for i, (_, o) in enumerate(variables):
        for t, nbytes in o.nbytes.items():
            if t in column:
                j = column[t]
                delta[:, i] += alive[:, j] * (nbytes - buffers[j].nbytes)
    units = sorted({u for u, _ in variables})
    one = np.zeros((len(units), len(variables)))
    for i, (u, _) in enumerate(variables):
        one[units.index(u), i] = 1.0
    cost = np.asarray([max(o.loss, 0.0) + CHANGE_COST for _, o in variables])
    limit = float(budget)
    for _ in range(_ROUNDS):
        result = milp(cost, integrality=np.ones(len(variables)), bounds=Bounds(0, 1),
                      constraints=[LinearConstraint(delta, -np.inf, limit - base),
                                   LinearConstraint(one, 0, 1)])
        if result.x is None:
            return None
        choice = {u: o for (u, o), x in zip(variables, result.x) if x > 0.5}
        got = peak(buffers, choice)
        if got <= budget:
            return Search(choice, got, float(sum(o.loss for o in choice.values())), ())
        limit -= got - budget
    return None
