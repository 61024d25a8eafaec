"""The plan stage: a greedy search over per-unit options. Pure: no TensorFlow, no interpreter,
no LiteRT schema.

Inputs are the activation buffers of the int8 baseline (size and lifetime, from ``memory``), and for
each site a list of options, each with its measured loss and the bytes it gives the site's tensors.
The search starts from the baseline and repeatedly takes the option that saves the most peak memory
per unit of added loss, recomputing the TFLM-style greedy layout after every move (the peak moves
when one tensor shrinks), until the peak fits the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from aa_tflite.config import budget_kb_for
from aa_tflite.tflite.layout import greedy_offsets
from aa_tflite.types import BudgetError, SiteConfig

__all__ = ["Buffer", "Option", "Search", "Step", "floor", "greedy", "hot_tensors", "live_excess",
           "peak", "peak_tensors", "search", "smallest"]

_EPS_LOSS = 1e-3  # loss points: lets zero-loss moves rank by the memory they save
_EXCESS_WEIGHT = 1e-3  # bytes over budget summed over time: breaks ties when the peak cannot move


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One planned activation tensor: index, lifetime in allocation scopes, and baseline bytes."""

    tensor: int
    first: int
    last: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class Option:
    """One candidate config of one planning unit (a site, or the sites a tie joins), with what
    it costs.

    Attributes:
        unit: The unit's name.
        config: The config.
        loss: Measured loss of the model with only this unit changed (points, >= 0 is worse).
        nbytes: Bytes of the unit's tensors under this config, by tensor index.
    """

    unit: str
    config: SiteConfig
    loss: float
    nbytes: Mapping[int, int]


@dataclasses.dataclass(frozen=True)
class Step:
    """One greedy move and where it left the search."""

    unit: str
    config: SiteConfig
    peak: int
    predicted_loss: float


@dataclasses.dataclass(frozen=True)
class Search:
    """The outcome of a search.

    Attributes:
        choice: The chosen option per changed site (sites left at baseline are absent).
        peak: Packed peak of the chosen plan, in bytes.
        predicted_loss: Sum of the chosen options' single-site losses.
        steps: The moves in the order they were taken.
    """

    choice: Mapping[str, Option]
    peak: int
    predicted_loss: float
    steps: tuple[Step, ...]

    def configs(self) -> dict[str, SiteConfig]:
        return {s: o.config for s, o in sorted(self.choice.items())}


def _sizes(buffers: Sequence[Buffer], choice: Mapping[str, Option]) -> list[int]:
    over: dict[int, int] = {}
    for opt in choice.values():
        over.update(opt.nbytes)
    return [over.get(b.tensor, b.nbytes) for b in buffers]


def peak(buffers: Sequence[Buffer], choice: Mapping[str, Option] | None = None) -> int:
    """The TFLM-greedy peak of ``buffers`` with the sizes ``choice`` gives its sites' tensors.

    Example:
        >>> peak([Buffer(0, 0, 1, 100), Buffer(1, 1, 2, 200)])
        300
    """
    sizes = _sizes(buffers, choice or {})
    return greedy_offsets(sizes, [b.first for b in buffers], [b.last for b in buffers])[1]


def peak_tensors(buffers: Sequence[Buffer], choice: Mapping[str, Option] | None = None
                 ) -> tuple[int, list[tuple[int, int]]]:
    """The tensors that set the peak: the scope where the layout's topmost buffer is alive and
    the most bytes are live, and ``(tensor, bytes)`` of every buffer alive then, largest first.

    Example:
        >>> peak_tensors([Buffer(0, 0, 1, 100), Buffer(1, 1, 2, 200), Buffer(2, 2, 3, 50)])
        (1, [(1, 200), (0, 100)])
    """
    if not buffers:
        return 0, []
    sizes = _sizes(buffers, choice or {})
    offsets, _ = greedy_offsets(sizes, [b.first for b in buffers], [b.last for b in buffers])
    top = max(range(len(buffers)), key=lambda i: (offsets[i] + sizes[i], -i))
    alive = _alive(buffers)
    live = alive @ np.array(sizes, np.int64)
    scopes = range(buffers[top].first, buffers[top].last + 1)
    scope = max(scopes, key=lambda k: (live[k], -k))
    out = [(b.tensor, sizes[i]) for i, b in enumerate(buffers) if alive[scope, i]]
    return scope, sorted(out, key=lambda x: (-x[1], x[0]))


def _alive(buffers: Sequence[Buffer]) -> np.ndarray:
    """(scopes, buffers) matrix: 1 where the buffer is alive in the scope."""
    last = max((b.last for b in buffers), default=-1)
    scopes = np.arange(last + 1)[:, None]
    first = np.array([b.first for b in buffers])[None, :]
    end = np.array([b.last for b in buffers])[None, :]
    return ((scopes >= first) & (scopes <= end)).astype(np.int64)


def hot_tensors(buffers: Sequence[Buffer], budget: int) -> set[int]:
    """The tensors alive in some scope whose live bytes exceed ``budget``.

    Only they can bring a peak over ``budget`` down: shrinking any other tensor changes no live
    total above the budget. (The layout's peak can still exceed the largest live total by
    fragmentation, so a caller that finds ``budget`` unreachable with these alone should widen.)

    Example:
        >>> sorted(hot_tensors([Buffer(0, 0, 1, 100), Buffer(1, 1, 2, 200),
        ...                     Buffer(2, 3, 4, 50)], 250))
        [0, 1]
    """
    if not buffers:
        return set()
    alive = _alive(buffers)
    live = alive @ np.array([b.nbytes for b in buffers], np.int64)
    hot = alive[live > budget].any(axis=0)
    return {b.tensor for b, h in zip(buffers, hot, strict=True) if h}


def live_excess(buffers: Sequence[Buffer], choice: Mapping[str, Option], budget: int, *,
                alive: np.ndarray | None = None) -> int:
    """Bytes alive above ``budget``, summed over scopes: how far a plan is from fitting."""
    alive = _alive(buffers) if alive is None else alive
    live = alive @ np.array(_sizes(buffers, choice), np.int64)
    return int(np.maximum(live - budget, 0).sum())


def _loss(choice: Mapping[str, Option]) -> float:
    return float(sum(o.loss for o in choice.values()))


def smallest(buffers: Sequence[Buffer], options: Mapping[str, Sequence[Option]]) -> Search:
    """Every site at its smallest option (ties: least loss): the least memory any plan reaches."""
    choice = {}
    for site, opts in sorted(options.items()):
        if opts:
            choice[site] = min(opts, key=lambda o: (sum(o.nbytes.values()), o.loss))
    return Search(choice, peak(buffers, choice), _loss(choice), ())


def floor(buffers: Sequence[Buffer], options: Mapping[str, Sequence[Option]]) -> Search:
    """The least memory a plan reaches: every unit at its smallest option, or the int8 plan when
    that is smaller (the smallest options can fragment the layout past int8's). A budget at or
    above the int8 figure is therefore never out of reach."""
    int8 = Search({}, peak(buffers, {}), 0.0, ())
    narrowest = smallest(buffers, options)
    return narrowest if narrowest.peak < int8.peak else int8


def _describe(search: Search) -> str:
    if not search.choice:
        return "the int8 baseline"
    return ", ".join(f"{u}: {o.config.label()}" for u, o in sorted(search.choice.items()))


def _best_move(buffers: Sequence[Buffer], allowed: Mapping[str, Sequence[Option]],
               choice: Mapping[str, Option], current: int, budget: int, alive
               ) -> tuple[str, Option, int] | None:
    """The move that saves the most peak bytes (up to what the budget still needs) per point of
    added loss: ``(unit, option, new peak)``, or None if no single move helps."""
    excess = live_excess(buffers, choice, budget, alive=alive)
    best = None
    for unit, opts in allowed.items():
        now = choice.get(unit)
        for opt in opts:
            if now is not None and opt.config == now.config:
                continue
            trial = {**choice, unit: opt}
            p = peak(buffers, trial)
            # Bytes beyond what the budget still needs are worth nothing: without this cap a
            # big, lossy move beats the small, cheap one that would do.
            gain = min(current - p, current - budget) + _EXCESS_WEIGHT * (
                excess - live_excess(buffers, trial, budget, alive=alive))
            if gain <= 0:
                continue
            added = max(opt.loss - (now.loss if now else 0.0), 0.0) + _EPS_LOSS
            score = gain / added
            if best is None or score > best[0]:
                best = (score, unit, opt, p)
    return None if best is None else best[1:]


def greedy(buffers: Sequence[Buffer], options: Mapping[str, Sequence[Option]], budget: int, *,
           banned: frozenset[tuple[str, SiteConfig]] = frozenset()) -> Search:
    """Greedy plan: the most memory saved per unit of loss, move by move, until ``budget`` holds.

    Args:
        buffers: The baseline's activation buffers.
        options: Per unit, its candidate options (the baseline itself is implicit).
        budget: Bytes the peak must not exceed.
        banned: ``(unit, config)`` pairs not to use (the repair step bans moves that failed).

    Returns:
        The ``Search`` that first meets the budget.

    Raises:
        BudgetError: No combination of the (non-banned) options meets the budget; the error
            names the smallest reachable peak and the plan that reaches it.

    Example:
        >>> bufs = [Buffer(0, 0, 1, 64), Buffer(1, 1, 2, 128)]
        >>> opts = {"a": [Option("a", SiteConfig(bits=4), 0.5, {1: 64})]}
        >>> greedy(bufs, opts, 150).peak
        128
    """
    allowed = {s: [o for o in opts if (s, o.config) not in banned]
               for s, opts in sorted(options.items())}
    low = floor(buffers, allowed)
    if low.peak > budget:
        raise BudgetError(
            f"The budget of {budget / 1024:.2f} KiB ({budget} B) cannot be met: the smallest "
            f"activation memory any plan reaches is {low.peak / 1024:.2f} KiB ({low.peak} B), "
            f"with {_describe(low)}. Raise budget_kb to at least "
            f"{budget_kb_for(low.peak):.2f}, or allow more options (4-bit, thresholds).",
            smallest_bytes=low.peak, plan=low.configs())
    alive = _alive(buffers)
    choice: dict[str, Option] = {}
    current = peak(buffers, choice)
    steps: list[Step] = []
    while current > budget:
        best = _best_move(buffers, allowed, choice, current, budget, alive)
        if best is None:  # nothing helps on its own: jump to the floor (it fits, checked above)
            return dataclasses.replace(low, steps=tuple(steps) + tuple(
                Step(u, o.config, low.peak, low.predicted_loss) for u, o in low.choice.items()))
        unit, opt, current = best
        choice[unit] = opt
        steps.append(Step(unit, opt.config, current, _loss(choice)))
    choice = _tidy(buffers, choice, allowed, budget)
    return Search(dict(sorted(choice.items())), peak(buffers, choice), _loss(choice),
                  tuple(steps))


def search(buffers: Sequence[Buffer], options: Mapping[str, Sequence[Option]], budget: int, *,
           banned: frozenset[tuple[str, SiteConfig]] = frozenset(), tries: int = 3) -> Search:
    """``greedy``, then a local search around it: ban each of the ``tries`` costliest chosen moves
    in turn, search again, and keep whatever meets the budget at a lower predicted loss. Repeats
    from the better plan until nothing improves. Greedy alone can take one very lossy move where
    several cheap ones would do; this finds those. Then the exact integer program
    (``search.exact``), where it is small enough: the better of the two by ``exact.objective``
    is kept (ties: the greedy plan).

    Raises:
        BudgetError: As ``greedy``.

    Example:
        >>> bufs = [Buffer(0, 0, 1, 64), Buffer(1, 1, 2, 128)]
        >>> opts = {"a": [Option("a", SiteConfig(bits=4), 0.5, {1: 64})]}
        >>> search(bufs, opts, 150).peak
        128
    """
    best = greedy(buffers, options, budget, banned=banned)
    tried: set[tuple[str, SiteConfig]] = set()
    improved = True
    while improved:
        improved = False
        costly = sorted(best.choice.values(), key=lambda o: (-o.loss, o.unit))[:tries]
        for move in costly:
            key = (move.unit, move.config)
            if key in tried or move.loss <= 0:
                continue
            tried.add(key)
            try:
                alt = greedy(buffers, options, budget, banned=banned | {key})
            except BudgetError:
                continue
            if alt.predicted_loss < best.predicted_loss - 1e-9:
                best, improved = alt, True
                break
    from aa_tflite.search.exact import exact, objective

    solved = exact(buffers, options, budget, banned=banned)
    if solved is not None and objective(solved.choice) < objective(best.choice) - 1e-9:
        return solved
    return best


def _tidy(buffers: Sequence[Buffer], choice: dict[str, Option],
          allowed: Mapping[str, Sequence[Option]], budget: int) -> dict[str, Option]:
    """Greedy moves taken early can become unnecessary later. Repeatedly make the single change
    (undo a site, or switch it to a lower-loss option) that lowers the loss most while the budget
    still holds."""
    while True:
        best = None
        for site, now in sorted(choice.items()):
            for alt in [None, *allowed.get(site, ())]:
                if alt is not None and (alt.config == now.config or alt.loss >= now.loss):
                    continue
                saved = now.loss - (alt.loss if alt is not None else 0.0)
                if saved <= 0 or (best is not None and saved <= best[0]):
                    continue
                trial = {k: v for k, v in choice.items() if k != site}
                if alt is not None:
                    trial[site] = alt
                if peak(buffers, trial) <= budget:
                    best = (saved, trial)
        if best is None:
            return choice
        choice = best[1]
