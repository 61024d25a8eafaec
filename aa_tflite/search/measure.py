"""The sensitivity stage: every candidate option, built as an edit of the baseline and measured
in the interpreter. No TensorFlow import.

``candidate_list`` lists the options per planning unit; ``measure`` builds and runs them, and
keeps each result in a ``MeasureCache`` so several budgets measure each option once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging

from aa_tflite.config import Budget, ConvertConfig
from aa_tflite.precision import check_menu
from aa_tflite.runtime.interpreter import planning_threads
from aa_tflite.search import planner
from aa_tflite.search.baseline import Baseline
from aa_tflite.search.bench import UnsafeVariant, candidates
from aa_tflite.search.memory_modes import memory_model
from aa_tflite.types import Kernels, MemoryMode, SiteConfig

__all__ = ["Candidate", "MeasureCache", "Measured", "Measurement", "Refused", "candidate_list",
           "measure", "parallel_map"]

# Units measured first: those alive while the int8 live bytes exceed this share of the budget.
# Not 1.0: the arena layout fragments, and on MobileNetV2 (benchmarks/plan_quality) the best plan
# at 60% shrinks tensors alive at only 72% and 89% of the budget to close the gaps it leaves.
_HOT_SHARE = 0.5


class _UnitOptions:
    """One unit's options under ``memory="packed"``, fitted (each precision's clip read from the
    unit's values) when one of them is first asked for: a unit never measured costs nothing."""

    def __init__(self, fit: Callable[[], list[tuple[str, SiteConfig]]]) -> None:
        self._fit = fit
        self._configs: dict[str, SiteConfig] | None = None

    def config(self, label: str) -> SiteConfig:
        if self._configs is None:
            self._configs = dict(self._fit())
        return self._configs[label]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One option to measure: a unit, a label the report lines up, and its config (fitted when
    first read, for a unit whose options are fitted lazily) at ``bits``."""

    unit: str
    label: str
    fitted: SiteConfig | _UnitOptions = dataclasses.field(repr=False)
    bits: int = 8

    @property
    def config(self) -> SiteConfig:
        if isinstance(self.fitted, SiteConfig):
            return self.fitted
        return self.fitted.config(self.label)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What measuring one option gave."""

    planning_loss: float  # what the planner ranks by (loss plus the KL tie-breaker)
    loss: float  # points lost on the evaluation data, single unit changed
    nbytes: Mapping[int, int]  # its tensors' bytes under the memory model


@dataclasses.dataclass(frozen=True)
class Refused:
    """An option that could not be built safely, and why."""

    reason: str


class MeasureCache:
    """(unit, config, memory mode) -> ``Measurement`` or ``Refused``; shared by the budgets of
    one ``convert`` call, so each option is built and run once."""

    def __init__(self) -> None:
        self._done: dict[tuple, Measurement | Refused] = {}

    def get(self, key: tuple) -> Measurement | Refused | None:
        return self._done.get(key)

    def put(self, key: tuple, value: Measurement | Refused) -> None:
        self._done[key] = value


@dataclasses.dataclass(frozen=True)
class Measured:
    """Every measured option.

    Attributes:
        options: Unit -> its options, for the planner.
        sensitivity: Unit -> ``(label, loss, bytes)`` per option, for the report and plots.
        single_site_loss: ``(unit, config)`` -> points lost with that unit alone changed.
        count: Options measured.
        notes: Options not offered, and why.
        skipped: Options left unmeasured: no plan that meets the budget needs them.
    """

    options: Mapping[str, tuple[planner.Option, ...]]
    sensitivity: Mapping[str, tuple[tuple[str, float, int], ...]]
    single_site_loss: Mapping[tuple[str, SiteConfig], float]
    count: int
    notes: tuple[str, ...]
    skipped: int = 0

    def merged(self, other: Measured, order: Sequence[str]) -> Measured:
        """Both sets of measurements, units in ``order``."""
        def join(a, b):
            return {u: a.get(u, ()) + b.get(u, ()) for u in order if u in a or u in b}

        return Measured(join(self.options, other.options),
                        join(self.sensitivity, other.sensitivity),
                        {**self.single_site_loss, **other.single_site_loss},
                        self.count + other.count, self.notes + other.notes)


def candidate_list(base: Baseline, cfg: ConvertConfig) -> list[Candidate]:
    """Every option to measure, units in execution order; none when a plan is given or when no
    plan can shrink the budgeted figure (``memory="tflm"``)."""
    if cfg.plan is not None or not memory_model(cfg.memory).can_shrink:
        return []
    bench, graphs = base.bench, base.graphs
    first = {bench.order(members)[0]: unit for unit, members in base.units.items()}
    out = []
    for s in bench.order(first):
        unit, members = first[s], base.units[first[s]]
        graph = graphs[s]
        if len(members) > 1:  # a tie: one clip from all its sites' values, thresholds if all
            graph = dataclasses.replace(graph, can_threshold=all(
                graphs[m].can_threshold for m in members), scale=max(graphs[m].scale
                                                                      for m in members))
        fit = functools.partial(
            lambda g, m, per_channel: candidates(
                g, bench.unit_values(m), memory=cfg.memory, sparsity_points=cfg.sparsity_points,
                per_channel=per_channel, bits=cfg.bits),
            graph, members, graph.signed or (len(members) == 1 and bench.per_channel(graph)))
        if cfg.memory == MemoryMode.PACKED:  # the labels are known without the values
            lazy = _UnitOptions(fit)
            out += [Candidate(unit, f"{b}b", lazy, b)
                    for b in (check_menu(cfg.bits) if graph.can_requantize else ())]
        else:
            out += [Candidate(unit, label, c, c.bits) for label, c in fit()]
    return out


def measure(base: Baseline, todo: Sequence[Candidate], cfg: ConvertConfig,
            budget: Budget | None, cache: MeasureCache) -> Measured:
    """Builds each option as an edit of the baseline and measures its loss in the interpreter.

    Only the units with a tensor alive while the int8 model's live bytes exceed half the budget
    are measured first (``planner.hot_tensors``): shrinking a unit that is never alive near the
    budget cannot bring the peak down to it, so the search would not take it. If those options
    cannot reach the budget, the rest are measured too, so the floor a ``BudgetError`` reports
    is the true one. When the int8 model already meets the budget, nothing is measured: the
    int8 plan has no loss against itself, so no plan can beat it.
    """
    buffers = memory_model(cfg.memory).planning_buffers(base)
    if todo and budget is not None and planner.peak(buffers, {}) <= budget.nbytes:
        logging.info("The int8 model already meets the budget (%d <= %d B): no option measured.",
                     planner.peak(buffers, {}), budget.nbytes)
        return Measured({}, {}, {}, 0, (), skipped=len(todo))
    narrowest = _out_of_reach(base, todo, cfg, budget)
    if narrowest is not None:
        logging.info("No plan reaches the budget, whatever the losses: measuring only each "
                     "unit's narrowest option (%d of %d), for the error's plan.",
                     len(narrowest), len(todo))
        return dataclasses.replace(_measure(base, narrowest, cfg, cache),
                                   skipped=len(todo) - len(narrowest))
    hot = _hot_units(base, cfg, budget)
    first = [c for c in todo if hot is None or c.unit in hot]
    rest = [c for c in todo if not (hot is None or c.unit in hot)]
    out = _measure(base, first, cfg, cache)
    if rest and planner.floor(buffers, out.options).peak > budget.nbytes:
        logging.info("The budget is out of reach of the %d options over it; measuring the other "
                     "%d.", len(first), len(rest))
        units = list(dict.fromkeys(c.unit for c in todo))  # execution order, as before
        return out.merged(_measure(base, rest, cfg, cache), units)
    if rest:
        logging.info("Skipped %d options of units never alive while the int8 model holds more "
                     "than half the budget.", len(rest))
    return dataclasses.replace(out, skipped=len(rest))


def _out_of_reach(base: Baseline, todo: Sequence[Candidate], cfg: ConvertConfig,
                  budget: Budget | None) -> list[Candidate] | None:
    """Each unit's narrowest candidate, when even every unit at its narrowest cannot reach
    ``budget`` (known before any measurement where an option's bytes do not depend on its
    variant: ``memory="packed"``), none at all when no option lowers the int8 peak; else None.
    A ``BudgetError`` then comes in seconds, not after measuring every option."""
    model = memory_model(cfg.memory)
    if budget is None or not todo or model.mode != MemoryMode.PACKED:
        return None
    # Packed bytes depend on the precision alone: sized without fitting the options.
    sizes = {(c.unit, c.label): model.option_bytes(base, c.unit, SiteConfig(bits=c.bits), b"")
             for c in todo}
    probe: dict[str, list[planner.Option]] = {}
    for c in todo:
        probe.setdefault(c.unit, []).append(
            planner.Option(c.unit, SiteConfig(bits=c.bits), 0.0, sizes[(c.unit, c.label)]))
    floor = planner.floor(model.planning_buffers(base), probe)
    if floor.peak <= budget.nbytes:
        return None
    if not floor.choice:  # no option lowers the int8 peak at all: the error's plan is int8
        return []
    best: dict[str, tuple[int, Candidate]] = {}
    for c in todo:  # the first candidate with the fewest bytes, per unit
        total = sum(sizes[(c.unit, c.label)].values())
        if c.unit not in best or total < best[c.unit][0]:
            best[c.unit] = (total, c)
    return [c for c in todo if best[c.unit][1] is c]


def _hot_units(base: Baseline, cfg: ConvertConfig, budget: Budget | None) -> set[str] | None:
    """Units with a tensor alive while the int8 live bytes exceed ``_HOT_SHARE`` of the budget
    (None: all units)."""
    if budget is None:
        return None
    buffers = memory_model(cfg.memory).planning_buffers(base)
    hot = planner.hot_tensors(buffers, int(_HOT_SHARE * budget.nbytes))
    return {u for u, members in base.units.items()
            if any(t in hot for m in members for t in base.graphs[m].group)}


def _measure_one(base: Baseline, c: Candidate, cfg: ConvertConfig) -> Measurement | Refused:
    bench = base.bench
    try:
        variant = bench.build(base.expand({c.unit: c.config}))
    except UnsafeVariant as e:
        return Refused(f"{c.unit}: option {c.label} not offered: {e}")
    metrics = bench.measure(variant)
    nbytes = memory_model(cfg.memory).option_bytes(base, c.unit, c.config, variant)
    return Measurement(bench.planning_loss(metrics), bench.loss(metrics), nbytes)


def _run_all(base: Baseline, todo: Sequence[Candidate], cfg: ConvertConfig,
             cache: MeasureCache) -> list[Measurement | Refused]:
    """Every option's measurement, in ``todo``'s order: those not in ``cache`` are built and
    measured on ``planning_threads()`` threads at once (the interpreters release the GIL while
    they run, so one option's run overlaps another's build), each interpreter on its share of
    the cores. Each option's result depends only on the option, so the order is immaterial."""
    from tqdm.auto import tqdm

    keys = [(c.unit, c.config, cfg.memory) for c in todo]
    results = {k: got for k in keys if (got := cache.get(k)) is not None}
    missing = list(dict.fromkeys(k for k, c in zip(keys, todo) if k not in results))
    by_key = {(c.unit, c.config, cfg.memory): c for c in todo}
    with tqdm(total=len(todo), initial=len(todo) - len(missing), desc="sensitivity",
              unit="option", disable=not cfg.progress) as bar:
        got = parallel_map(base, lambda k: _measure_one(base, by_key[k], cfg), missing,
                           done=lambda: bar.update(1))
    for k, value in zip(missing, got, strict=True):
        results[k] = value
        cache.put(k, value)
    return [results[k] for k in keys]


def parallel_map(base: Baseline, fn: Callable[[Any], Any], items: Sequence[Any], *,
                 done: Callable[[], None] | None = None) -> list[Any]:
    """``[fn(item) for item in items]``, run on ``planning_threads()`` threads at once, each
    interpreter on its share of the cores (``Bench.threads``); ``done()`` after each item.
    TFLite Micro's Python interpreter runs one at a time (it is not known to release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    bench, threads = base.bench, base.bench.threads
    workers = 1 if bench.kernels == Kernels.TFLM else min(planning_threads(), max(len(items), 1))
    bench.threads = max(1, threads // workers)
    out: dict[int, Any] = {}
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(fn, item): k for k, item in enumerate(items)}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                if done is not None:
                    done()
    finally:
        bench.threads = threads
    return [out[k] for k in range(len(items))]


def _measure(base: Baseline, todo: Sequence[Candidate], cfg: ConvertConfig,
             cache: MeasureCache) -> Measured:
    options: dict[str, list[planner.Option]] = {}
    sensitivity: dict[str, list[tuple[str, float, int]]] = {}
    losses: dict[tuple[str, SiteConfig], float] = {}
    notes: list[str] = []
    for c, got in zip(todo, _run_all(base, todo, cfg, cache), strict=True):
        if isinstance(got, Refused):
            notes.append(got.reason)
            continue
        options.setdefault(c.unit, []).append(
            planner.Option(c.unit, c.config, got.planning_loss, dict(got.nbytes)))
        losses[(c.unit, c.config)] = got.loss
        sensitivity.setdefault(c.unit, []).append((c.label, round(got.loss, 4),
                                                   sum(got.nbytes.values())))
    return Measured({k: tuple(v) for k, v in options.items()},
                    {k: tuple(v) for k, v in sensitivity.items()}, losses,
                    sum(len(v) for v in options.values()), tuple(notes))
