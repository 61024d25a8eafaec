"""The front door: ``convert(model, budget_kb=..., representative_data=...)`` -> ``Result``.

``convert`` wires the stages, each a module that returns a typed record: check the options
(``config``), prepare the model and data and export the int8 baseline once
(``frontend.prepare``), analyse it (``search.baseline``), list and measure every candidate as a
flatbuffer edit of it (``search.measure``), search and verify (``search.verify``), draw the
accuracy-memory curve (``search.curve``), report (``report.build_report``).

(The module is not named ``convert``: it would shadow the function ``aa_tflite.convert``.)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from aa_tflite.config import Budget, ConvertConfig, budget_list
from aa_tflite.files import atomic_write_all
from aa_tflite.frontend.prepare import int8_baseline, prepare
from aa_tflite.frontend.resize import at_size, check_image_model, resize, resize_eval
from aa_tflite.report import Report, SiteRow, build_report, file_metadata, point_doc
from aa_tflite.search import heap
from aa_tflite.search.baseline import baseline
from aa_tflite.search.curve import curve
from aa_tflite.search.measure import MeasureCache, candidate_list, measure
from aa_tflite.search.runtimes import probe_baseline
from aa_tflite.search.verify import verify
from aa_tflite.tflite import multipoint
from aa_tflite.tflite.metadata import write_metadata
from aa_tflite.types import AAError, BudgetError, Plan

__all__ = ["Point", "Report", "Result", "SiteRow", "convert"]


@dataclasses.dataclass(frozen=True)
class Point:
    """One operating point: a budget's plan, its single-subgraph file and what it measured.

    Attributes:
        key: Its signature key in the multi-point file (``"serving_default"`` for a single point).
        budget_kb: The budget it was planned for, in KiB.
        input_size: The input size it runs at, or None for the model's own.
        plan: Its plan.
        report: What was measured for it.
        tflite: Its own single-subgraph ``.tflite`` (what TFLite Micro runs).
        latency_ms: Median LiteRT latency of one sample, default kernels (XNNPACK), 1 thread.
        latency_range_ms: The 10th and 90th percentiles of the same runs: the spread.

    Example:
        >>> result = convert(model, budget_kb=[2.4, 1.2], representative_data=x_cal)  # doctest: +SKIP
        >>> [(p.key, p.packed, p.score) for p in result.points]  # doctest: +SKIP
        [('kib2p4', 2304, 0.98), ('kib1p2', 1152, 0.98)]
    """

    key: str
    budget_kb: float | None
    input_size: int | None
    plan: Plan
    report: Report
    tflite: bytes = dataclasses.field(repr=False)
    latency_ms: float = float("nan")
    latency_range_ms: tuple[float, float] | None = None

    @property
    def score(self) -> float:
        return self.report.planned_score

    @property
    def packed(self) -> int:
        return self.report.planned_memory.packed_peak

    @property
    def packed_sparse(self) -> int:
        return self.report.planned_sparse_peak

    @property
    def tflm_arena(self) -> int | None:
        tflm = self.report.planned_memory.tflm
        return None if tflm is None else tflm.total


# Which figure of a point is real where (the points tables and the demo print it).
REAL_ON = ("Real on which runtime: the TFLM arena is what stock TensorFlow Lite Micro allocates "
           "(LiteRT allocates about as much); latency is measured in LiteRT; packed and "
           "packed+sparse figures are real only on a runtime that packs low-bit tensors, which no "
           "stock runtime does. Points that differ only in bits share one arena and one latency.")


def _kb(budget_kb: float | None) -> str:
    return "-" if budget_kb is None else format(budget_kb, ",g")


@dataclasses.dataclass(frozen=True)
class Result:
    """The output of ``convert``.

    Attributes:
        tflite: The planned mixed-precision ``.tflite`` bytes.
        plan: The per-site plan (``Plan.to_json`` round-trips it).
        report: What was measured.
        baseline_tflite: The plain int8 conversion the plan was written into.
        points: Every operating point, in the order of the budgets given. With one budget, the
            one point; with several, ``tflite`` holds one signature per point and ``plan`` and
            ``report`` are the first point's.
    """

    tflite: bytes
    plan: Plan
    report: Report
    baseline_tflite: bytes = dataclasses.field(repr=False)
    points: tuple[Point, ...] = ()

    @property
    def tflm_arena(self) -> int | None:
        """The TFLite Micro arena to reserve: the largest point's."""
        arenas = [p.tflm_arena for p in self.points if p.tflm_arena is not None]
        return max(arenas) if arenas else None

    def points_markdown(self) -> str:
        """The table of operating points, and the multi-point file against separate files."""
        lines = ["# Operating points", "",
                 f"One file, {len(self.points)} signatures: {len(self.tflite):,} B, against "
                 f"{sum(len(p.tflite) for p in self.points):,} B for separate files "
                 f"({len(self.tflite) / max(len(self.points[0].tflite), 1):.2f}x one point's "
                 f"file). TFLite Micro runs one point per file: reserve "
                 f"{self.tflm_arena or 0:,} B of arena (the largest point's).", "",
                 "| signature | input | budget (KiB) | packed peak (B) | packed+sparse (B) | "
                 f"TFLM arena (B) | weights (B) | {self.report.metric} | latency (ms) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for p in self.points:
            size = "own" if p.input_size is None else f"{p.input_size}x{p.input_size}"
            spread = ("" if p.latency_range_ms is None else
                      f" ({p.latency_range_ms[0]:,.3f}-{p.latency_range_ms[1]:,.3f})")
            lines.append(f"| {p.key} | {size} | {_kb(p.budget_kb)} | {p.packed:,} | "
                         f"{p.packed_sparse:,} | "
                         f"{'-' if p.tflm_arena is None else format(p.tflm_arena, ',')} | "
                         f"{p.report.planned_memory.weights:,} | {p.score:,.4f} | "
                         f"{p.latency_ms:,.3f}{spread} |")
        layouts = {p.key: p.report.layout for p in self.points}
        if set(layouts.values()) != {"as converted"}:
            lines += ["", "Layouts (memory='tflm': the graph TFLite Micro firmware runs): "
                      + "; ".join(f"{k}: {v}" for k, v in layouts.items()) + "."]
        lines += ["", REAL_ON,
                  "Latency: median (10th-90th percentile) of single-sample runs in LiteRT "
                  "(XNNPACK, 1 thread) on the machine that converted; it is not stored in the "
                  "file."]
        return "\n".join(lines)

    def save(self, prefix: str | os.PathLike, *, plots: bool = True) -> list[str]:
        """Writes ``prefix.tflite``, ``.plan.json``, ``.report.json``, ``.report.md`` and plots
        (``.sensitivity.png``, ``.memory.png``, ``.timeline.png``; ``.points.png`` and the
        timeline for several points).

        The set is written atomically: every file goes to a temporary file first, and only when
        all are written are they renamed into place, so a failure leaves the old files as they
        were. Existing files of the same names are replaced. The folder is created if needed.

        Example:
            >>> result.save("out/digits")  # doctest: +SKIP
            ['out/digits.tflite', 'out/digits.plan.json', ...]

        Returns:
            The paths written.
        """
        prefix = os.fspath(prefix)
        if len(self.points) > 1:
            return self._save_points(prefix, plots)
        files = {".tflite": self.tflite, ".plan.json": self.plan.to_json(),
                 ".report.json": self.report.to_json(), ".report.md": self.report.to_markdown()}
        if plots:
            from aa_tflite import plots as plots_mod

            files.update(plots_mod.render_plots(self.report))
            files[".timeline.png"] = self.timeline_png()
        return atomic_write_all({prefix + ext: data for ext, data in files.items()})

    def timeline_png(self) -> bytes:
        """The per-op memory timeline as a PNG: the activation bytes the plain int8 model holds
        alive while each op runs (what stock TFLite Micro and LiteRT hold), and each point's
        packed bytes (real only on a runtime that packs low-bit activations).

        Example:
            >>> open("out/digits.timeline.png", "wb").write(result.timeline_png())  # doctest: +SKIP
        """
        from aa_tflite import plots as plots_mod
        from aa_tflite.tflite import flatbuffer
        from aa_tflite.tflite import memory as memory_mod

        series = {"int8 (stock TFLM and LiteRT)": memory_mod.live_bytes(self.baseline_tflite)}
        for p in self.points:
            series[f"{p.key}, packed"] = memory_mod.live_bytes(p.tflite,
                                                               bits=p.report.tensor_bits)
        ops, _ = flatbuffer.describe(flatbuffer.read(self.baseline_tflite))
        return plots_mod.timeline_plot(series, [op.name for op in ops],
                                       f"{self.report.model}: live activation bytes per op")

    def _save_points(self, prefix: str, plots: bool) -> list[str]:
        files: dict[str, bytes | str] = {
            ".tflite": self.tflite,
            ".report.md": self.points_markdown() + "\n\n" + "\n\n".join(
                f"# Point {p.key}\n\n" + p.report.to_markdown() for p in self.points),
            ".report.json": json.dumps({"points": [
                {"signature": p.key, "budget_kb": p.budget_kb, "input_size": p.input_size,
                 "latency_ms": p.latency_ms, "report": json.loads(p.report.to_json())}
                for p in self.points], "file_size": len(self.tflite),
                "separate_files_size": sum(len(p.tflite) for p in self.points),
                "tflm_arena": self.tflm_arena}, indent=2, sort_keys=True)}
        for p in self.points:  # one single-subgraph file per point, for TFLite Micro
            files[f".{p.key}.tflite"] = p.tflite
            files[f".{p.key}.plan.json"] = p.plan.to_json()
        if plots:
            from aa_tflite import plots as plots_mod

            files[".points.png"] = plots_mod.points_plot(self.points, self.report.metric)
            files[".timeline.png"] = self.timeline_png()
        return atomic_write_all({prefix + ext: data for ext, data in files.items()})


def convert(model: Any, *, budget_kb: float | Sequence[float] | None,
            representative_data: np.ndarray,
            eval_data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
            config: ConvertConfig | None = None, **options: Any) -> Result:
    """Converts a Keras ReLU model to the mixed-precision int8 ``.tflite`` that fits a budget.

    Example:
        >>> result = convert(model, budget_kb=2, representative_data=x_cal,
        ...                  eval_data=(x_val, y_val), bits=[4])  # doctest: +SKIP
        >>> result.save("out/digits")  # doctest: +SKIP

    Args:
        model: A trained Keras 3 model (Sequential or Functional), or a Keras 2 (``tf_keras``)
            one, brought to Keras 3 through a legacy ``.h5`` file. It is not modified.
        budget_kb: Activation memory in KiB (1024 B), in the sense of ``memory``; None only with
            a ``plan``. A list, e.g. ``[6, 4, 3]``, makes one operating point per budget: one
            signature each in ``Result.tflite``, the weights stored once (``Result.points``).
        representative_data: Calibration inputs ``(N, *input_shape)``; 100-500 is typical.
        eval_data: ``(x, y)`` with integer labels (the loss is the top-1 drop), ``x`` alone or
            None (the loss is the top-1 disagreement with the float model). The planner uses
            these samples: keep a separate split for held-out figures.
        config: The options as one ``aa_tflite.ConvertConfig``. Defaults to its defaults.
        **options: Any ``ConvertConfig`` field by keyword (``memory``, ``bits``, ``target``,
            ``max_accuracy_drop``, ``plan``, ``input_sizes``, ...), overriding ``config``'s.

    Returns:
        A ``Result``.

    Raises:
        BudgetError: No plan meets the budget (the error names the smallest reachable figure
            and the tensors that set it), or none within ``max_accuracy_drop``.
        AAError: Bad input; the message says what to change.
    """
    cfg = make_config(config, options)
    budgets = budget_list(budget_kb, plan=cfg.plan)
    keys = _point_keys(model, budgets, cfg)
    points: list[tuple[Point, dict]] = []  # each point, and its metadata as in its own file
    baseline_tflite = None
    for size in cfg.sizes:
        base_tflite, planned = _plan_size(model, representative_data, eval_data, size, budgets,
                                          cfg)
        baseline_tflite = baseline_tflite or base_tflite
        for budget, built in zip(budgets, planned, strict=True):
            points.append(_point(keys[len(points)], budget, size, *built))
    if len(points) == 1:
        p = points[0][0]
        return Result(p.tflite, p.plan, p.report, baseline_tflite, (p,))
    combined = multipoint.combine([(p.key, p.tflite) for p, _ in points], metadata={
        **points[0][1], "points": [point_doc(p.key, p.budget_kb, p.input_size, doc)
                                   for p, doc in points]})
    first = points[0][0]
    return Result(combined, first.plan, first.report, baseline_tflite,
                  tuple(p for p, _ in points))


def _point_keys(model: Any, budgets: Sequence[Budget | None], cfg: ConvertConfig) -> list[str]:
    """The signature key of every (size, budget) point, checked."""
    multi = len(budgets) > 1 or cfg.input_sizes is not None
    if multi and cfg.plan is not None:
        raise AAError("A list of budgets makes one operating point per budget; it needs no "
                      "plan. Give one budget_kb.")
    if cfg.input_sizes is not None:
        check_image_model(model)
    keys = [multipoint.point_key(b.kb, s) if multi else "serving_default"
            for s in cfg.sizes for b in budgets]
    if len(set(keys)) != len(keys):
        raise AAError(f"The budgets must be distinct (to 4 significant digits). Received: "
                      f"{[b.kb for b in budgets]}")
    return keys


def _point(key: str, budget: Budget | None, size: int | None, plan: Plan, report: Report,
           tflite: bytes) -> tuple[Point, dict]:
    """One operating point: its file with the metadata written in, and that metadata."""
    kb = None if budget is None else budget.kb
    doc = file_metadata(report, plan)
    tflite = write_metadata(tflite, {**doc, "points": [point_doc(key, kb, size, doc)]})
    report = dataclasses.replace(report, planned_memory=dataclasses.replace(
        report.planned_memory, file_size=len(tflite)))
    logging.info("Planned %s (%s): %s", report.model, key, plan.to_json())
    low, mid, high = _latency_ms(tflite)
    return Point(key, kb, size, plan, report, tflite, mid, (low, high)), doc


def make_config(config: ConvertConfig | None, options: dict[str, Any]) -> ConvertConfig:
    """``config`` (or the defaults) with ``options`` applied, checked.

    Raises:
        AAError: An option is not a ``ConvertConfig`` field, or has a bad value.
    """
    if config is not None and not isinstance(config, ConvertConfig):
        raise AAError(f"config must be an aa_tflite.ConvertConfig. Received: "
                      f"{type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(ConvertConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise AAError(f"convert() has no option {unknown[0]!r}. Its options are the fields of "
                      f"aa_tflite.ConvertConfig: {sorted(fields)}.")
    return dataclasses.replace(config or ConvertConfig(), **options)


def _plan_size(model, representative_data, eval_data, size: int | None,
               budgets: Sequence[Budget | None], cfg: ConvertConfig):
    """One input size: the model and data at that size, the int8 baseline once, then one plan
    per budget. Returns ``(baseline tflite, [(plan, report, tflite) per budget])``."""
    if size is not None:
        model = at_size(model, size)
        representative_data = resize(representative_data, size)
        eval_data = resize_eval(eval_data, size)
    try:
        return _plan_folding(model, representative_data, eval_data, budgets, cfg)
    except BudgetError as e:
        if size is None:
            raise
        raise BudgetError(f"At input size {size}x{size}: {e}", smallest_bytes=e.smallest_bytes,
                          plan=e.plan, tensors=e.tensors) from e


def _plan_folding(model, representative_data, eval_data, budgets: Sequence[Budget | None],
                  cfg: ConvertConfig):
    """``_plan_points``; with ``fold_batchnorm="auto"``, when no plan meets a budget with the
    exact BatchNorm folds and some BatchNorm folds only inexactly, planned again with those
    folds too. Their border change is scored against the unfolded model like any other loss."""
    try:
        return _plan_points(model, representative_data, eval_data, budgets, cfg)
    except BudgetError as e:
        from aa_tflite.frontend.fold import inexact_folds
        from aa_tflite.frontend.rewrite import from_keras2, is_keras2

        names = [] if cfg.fold_batchnorm != "auto" else inexact_folds(
            from_keras2(model) if is_keras2(model) else model)
        if not names:
            raise
        floor = e.smallest_bytes
        logging.info("No plan meets the budget with exact BatchNorm folds; planning again with "
                     "%s folded inexactly.", ", ".join(names))
        base, planned = _plan_points(model, representative_data, eval_data, budgets,
                                     dataclasses.replace(cfg, fold_batchnorm="all"))
    why = (f"Folded {', '.join(names)} inexactly (into 'same'-padded convs): with the exact "
           "folds alone no plan met the budget" + (f" (their floor: {floor:,} B)" if floor else "")
           + ". The border change is in the score.")
    return base, [(plan, dataclasses.replace(report, notes=(*report.notes, why)), tfl)
                  for plan, report, tfl in planned]


def _plan_points(model, representative_data, eval_data, budgets: Sequence[Budget | None],
                 cfg: ConvertConfig):
    """One model and its data: the int8 baseline once, then one plan per budget, the smallest
    budget first (it measures the most options; the others reuse them)."""
    timer = _Timer()
    prep = prepare(model, representative_data, eval_data, cfg)
    exported, data, notes = int8_baseline(  # the child's probe overlaps the float reference
        prep, cfg, probe=functools.partial(probe_baseline, kernels=cfg.measure_kernels))
    base = baseline(exported.tflite, exported.site_tensors, data, cfg, notes=notes, probed=True)
    timer.lap("export+calibrate")
    todo = candidate_list(base, cfg)  # each option's clip, fitted
    timer.lap("candidates")
    first_stages = dict(timer.seconds)
    cache = MeasureCache()
    built: dict[int, tuple] = {}
    curve_samples: tuple = ()
    order = sorted(range(len(budgets)), key=lambda k: budgets[k].nbytes if budgets[k] else 0)
    for n, k in enumerate(order):
        timer = _Timer(first_stages if n == 0 else {})
        heap.trim()
        measured = measure(base, todo, cfg, budgets[k], cache)
        timer.lap("sensitivity")
        heap.trim()
        verified = verify(base, measured, cfg, budgets[k])
        timer.lap("search+verify")
        if n == 0 and measured.options and cfg.curve_points > 0:  # one curve, the widest search
            curve_samples = curve(base, measured, cfg)
            timer.lap("curve")
        heap.trim()
        report = build_report(model_name=prep.model.name, data=data, base=base,
                              measured=measured, verified=verified, curve=curve_samples,
                              cfg=cfg, budget=budgets[k])
        timer.lap("final+report")
        report = dataclasses.replace(report, target=cfg.target,
                                     seconds=timer.total(sum(first_stages.values()) if n == 0
                                                         else 0.0))
        built[k] = (Plan(verified.configs), report, verified.tflite)
    return base.tflite, [built[k] for k in range(len(budgets))]


class _Timer:
    """Seconds per stage, for the report."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds = dict(seconds or {})
        self._start = self._last = time.perf_counter()

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now
        return self.seconds[stage]

    def total(self, extra: float = 0.0) -> dict[str, float]:
        out = {**self.seconds, "total": time.perf_counter() - self._start + extra}
        return {a: round(v, 2) for a, v in out.items()}


def _latency_ms(tflite: bytes, repeats: int = 30) -> tuple[float, float, float]:
    """LiteRT latency of one sample (default kernels, 1 thread), in ms: the 10th percentile, the
    median and the 90th, over ``repeats`` invokes or as many as 2 s allow (at least 7)."""
    from aa_tflite.runtime.interpreter import sample_latency_ms

    got = sample_latency_ms(tflite, "xnnpack", num_threads=1, repeats=repeats,
                            quantiles=(0.1, 0.5, 0.9), max_seconds=2.0)
    return tuple(round(v, 4) for v in got)
