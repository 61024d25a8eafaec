"""The search-and-verify stage: the greedy plan, built and measured end to end, repaired until it
holds. No TensorFlow import.

Single-site losses are not additive, so a searched plan is built and run in the interpreter.
If its verified loss is far above the predicted one, the worst move is banned and the search
runs again (up to ``MAX_REPAIRS`` times); if its measured figure is over the budget, the search
runs again with a smaller internal budget.

Then the plans of the narrower menus the full one contains (no thresholds; thresholds at 8 bits)
are searched, built and measured at the same budget, and the best verified plan is kept: the
full search never returns a plan that verifies worse than what a narrower menu found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aa_tflite.config import Budget, ConvertConfig
from aa_tflite.search import planner
from aa_tflite.search.baseline import Baseline
from aa_tflite.search.bench import UnsafeVariant
from aa_tflite.search.floor import check_floor
from aa_tflite.search.measure import Measured
from aa_tflite.search.memory_modes import memory_model
from aa_tflite.types import Bits, BudgetError, SiteConfig, check_sites

__all__ = ["MAX_REPAIRS", "SUBSETS", "Attempt", "Verified", "narrower_menus", "verify"]

MAX_REPAIRS = 6

# The narrower menus inside the full one, each a test on an option's config.
SUBSETS: dict[str, Any] = {
    "precision only": lambda c: c.threshold == 0,
    "thresholds only": lambda c: c.bits == Bits.INT8,
}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One searched plan, built and measured."""

    search: planner.Search
    tflite: bytes
    metrics: Any  # bench.Metrics
    verified_loss: float
    predicted_loss: float
    figure: int  # its budgeted figure, measured on the built model


@dataclasses.dataclass(frozen=True)
class Verified:
    """The plan written, the model it gives and what it measured.

    Attributes:
        configs: Site -> config (sites at plain int8 are absent).
        tflite: The built model.
        metrics: What it measured on the evaluation data.
        predicted: The summed single-site losses of its moves (NaN for a given plan).
        repairs: What the repair loop did, in words.
        notes: Notes for the report.
        layout: The graph's layout: ``"as converted"``, or the firmware rewrites in words.
    """

    configs: Mapping[str, SiteConfig]
    tflite: bytes
    metrics: Any  # bench.Metrics
    predicted: float
    repairs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    layout: str = "as converted"


def verify(base: Baseline, measured: Measured, cfg: ConvertConfig,
           budget: Budget | None) -> Verified:
    """The plan: the given one, the int8 one where no plan can shrink the figure, or the greedy
    search's, verified end to end and repaired until it holds.

    Raises:
        BudgetError: No plan reaches the budget (the error names the tensors at the floor), or
            none does within ``cfg.max_accuracy_drop``.
    """
    bench = base.bench
    fixed = memory_model(cfg.memory).fixed_plan(base, budget, cfg)
    if fixed is not None:
        return Verified({}, fixed.tflite, bench.measure(fixed.tflite), 0.0, notes=fixed.notes,
                        layout=fixed.layout)
    if cfg.plan is not None:
        check_sites(cfg.plan.sites, base.graphs, "The plan")
        configs = dict(cfg.plan.sites)
        built = bench.build(configs)
        return Verified(configs, built, bench.measure(built), float("nan"))
    check_floor(base, measured, cfg, budget)
    return _search_and_repair(base, measured, cfg, budget)


def _attempt(base: Baseline, measured: Measured, cfg: ConvertConfig,
             search: planner.Search) -> Attempt:
    """Builds and measures one searched plan (``UnsafeVariant`` if it cannot be built)."""
    configs = base.expand(search.configs())
    tfl = base.bench.build(configs)
    metrics = base.bench.measure(tfl)
    figure = memory_model(cfg.memory).figure(base, search, configs, tfl)
    predicted = sum(max(measured.single_site_loss[(u, o.config)], 0.0)
                    for u, o in search.choice.items())
    return Attempt(search, tfl, metrics, base.bench.loss(metrics), predicted, figure)


def _worst(search: planner.Search) -> planner.Option:
    return max(search.choice.values(), key=lambda o: (o.loss, o.unit))


def _search_and_repair(base: Baseline, measured: Measured, cfg: ConvertConfig,
                       budget: Budget) -> Verified:
    """Searches, verifies, and repairs: returns the best verified plan that fits."""
    buffers = memory_model(cfg.memory).planning_buffers(base)
    banned: set[tuple[str, SiteConfig]] = set()
    repairs: list[str] = []
    best: Attempt | None = None
    internal = budget.nbytes
    tol = max(0.5, 200.0 / len(base.bench.x_eval))  # two samples' noise, at least 0.5 points
    for attempt in range(MAX_REPAIRS + 1):
        try:
            search = planner.search(buffers, measured.options, internal, banned=frozenset(banned))
        except BudgetError:
            if best is None:
                raise
            repairs.append("No plan without the banned options fits; kept the best verified plan.")
            break
        try:
            got = _attempt(base, measured, cfg, search)
        except UnsafeVariant as e:
            if attempt == MAX_REPAIRS:
                break
            worst = _worst(search)
            banned.add((worst.unit, worst.config))
            repairs.append(f"Attempt {attempt + 1}: {e} Undid {worst.unit} and searched again.")
            continue
        fits = got.figure <= budget.nbytes
        if fits and (best is None or got.verified_loss < best.verified_loss):
            best = got
        if fits and got.verified_loss <= got.predicted_loss + tol and (
                cfg.max_accuracy_drop is None or got.verified_loss <= cfg.max_accuracy_drop):
            break
        if attempt == MAX_REPAIRS:
            repairs.append(f"Gave up after {MAX_REPAIRS} repairs; kept the best verified plan.")
            break
        if not fits:
            internal -= max(got.figure - budget.nbytes, 1)
            repairs.append(f"Attempt {attempt + 1}: measured {cfg.memory.value} peak "
                           f"{got.figure:,} B is over the budget; searching again with "
                           f"{internal:,} B.")
            continue
        worst = _worst(search)
        banned.add((worst.unit, worst.config))
        repairs.append(f"Attempt {attempt + 1}: verified loss {got.verified_loss:.2f} points "
                       f"against {got.predicted_loss:.2f} predicted; undid {worst.unit} "
                       f"({worst.config.label()}, single-site loss {worst.loss:.2f}) and "
                       "searched again.")
    if best is not None:
        best = _narrower(base, measured, cfg, budget, buffers, best, repairs)
    return _accept(base, cfg, budget, best, tuple(repairs))


def narrower_menus(options: Mapping[str, tuple[planner.Option, ...]]
                   ) -> dict[str, dict[str, tuple[planner.Option, ...]]]:
    """Each narrower menu (``SUBSETS``) that ``options`` strictly contain, by name.

    Example:
        >>> a = planner.Option("a", SiteConfig(bits=4), 0.5, {})
        >>> t = planner.Option("a", SiteConfig(threshold=0.1), 0.2, {})
        >>> sorted(narrower_menus({"a": (a, t)}))
        ['precision only', 'thresholds only']
    """
    total = sum(map(len, options.values()))
    out = {}
    for name, keep in SUBSETS.items():
        menu = {u: kept for u, opts in options.items()
                if (kept := tuple(o for o in opts if keep(o.config)))}
        if menu and sum(map(len, menu.values())) < total:
            out[name] = menu
    return out


def _narrower(base: Baseline, measured: Measured, cfg: ConvertConfig, budget: Budget,
              buffers: list, best: Attempt, repairs: list[str]) -> Attempt:
    """``best``, or a narrower menu's plan at the same budget where that verifies better (by
    points, then by the KL tie-breaker)."""
    def rank(a: Attempt) -> tuple[float, float]:
        return (round(a.verified_loss, 6), base.bench.planning_loss(a.metrics))

    for name, menu in narrower_menus(measured.options).items():
        try:
            search = planner.search(buffers, menu, budget.nbytes)
        except BudgetError:
            continue
        if search.configs() == best.search.configs():
            continue
        try:
            got = _attempt(base, measured, cfg, search)
        except UnsafeVariant:
            continue
        if got.figure <= budget.nbytes and rank(got) < rank(best):
            repairs.append(f"Kept the {name} plan: verified loss {got.verified_loss:.2f} points "
                           f"against {best.verified_loss:.2f} for the full menu's.")
            best = got
    return best


def _accept(base: Baseline, cfg: ConvertConfig, budget: Budget, best: Attempt | None,
            repairs: tuple[str, ...]) -> Verified:
    """The best attempt, if it meets ``max_accuracy_drop``."""
    if best is None:
        raise BudgetError(f"No plan met the budget of {budget.nbytes:,} B when measured.")
    drop = cfg.max_accuracy_drop
    if drop is not None and best.verified_loss > drop:
        raise BudgetError(
            f"The budget of {budget.kb} KiB is met only with a verified loss of "
            f"{best.verified_loss:.2f} points, above max_accuracy_drop={drop}. Raise budget_kb "
            "or max_accuracy_drop.", smallest_bytes=best.search.peak,
            plan=base.expand(best.search.configs()))
    return Verified(base.expand(best.search.configs()), best.tflite, best.metrics,
                    best.predicted_loss, repairs)
