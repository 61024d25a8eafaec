"""The front door: ``convert(model, budget_kb=..., representative_data=...)`` -> ``Result``.

Wires the stages: export the int8 baseline once, analyse its sites, measure every candidate of every
site as a flatbuffer edit of that baseline (``sensitivity``), search (``planner``), build the plan,
verify it end to end in the interpreter and repair it if needed, and report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from aa_tflite import guard, planner, quantedit, report
from aa_tflite import memory as memory_mod
from aa_tflite.files import atomic_write_all
from aa_tflite.runtime import check_kernels
from aa_tflite.sensitivity import (
    Bench,
    UnsafeVariant,
    candidates,
    sparse_bytes,
    worst_nonzeros,
)
from aa_tflite.types import AAError, Bits, BudgetError, MemoryMode, MemoryReport, Plan, SiteConfig

__all__ = ["Report", "Result", "SiteRow", "convert"]

_MAX_REPAIRS = 6


@dataclasses.dataclass(frozen=True)
class SiteRow:
    """One site of the final plan, as the report shows it."""

    site: str
    tensor: int | None
    bits: int
    threshold: float
    clip: float | None
    sparsity: float | None  # share of zeros in the site tensor, final model, representative data
    packed_bytes: int | None
    sparse_bytes: int | None  # worst case over the representative data
    loss: float  # single-site measured loss of this config, points
    lowering: str  # what was written, in words


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``convert`` did and what it measured. ``to_markdown`` is the human version."""

    model: str
    memory_mode: str
    budget_bytes: int | None
    metric: str
    float_score: float
    int8_score: float
    planned_score: float
    predicted_loss: float
    verified_loss: float
    eval_samples: int
    int8_memory: MemoryReport
    planned_memory: MemoryReport
    int8_sparse_peak: int
    planned_sparse_peak: int
    sites: tuple[SiteRow, ...]
    options_measured: int
    repairs: tuple[str, ...]
    seconds: Mapping[str, float]
    # Per greedy step down to the smallest plan: (peak, predicted score, verified score or None).
    curve: tuple[tuple[int, float, float | None], ...]
    sensitivity: Mapping[str, tuple[tuple[str, float, int], ...]]  # site -> (option, loss, bytes)
    notes: tuple[str, ...]
    # Tensor index -> bits, for every tensor the plan counts below 8 bits (the packed figure's
    # input; such a tensor holds at most 2^bits levels).
    tensor_bits: Mapping[int, int] = dataclasses.field(default_factory=dict)
    kernels: str = "builtin"  # the kernels every loss was measured on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)

    def to_markdown(self) -> str:
        m = self.planned_memory
        if self.budget_bytes is None:
            budget = "Budget: none (a given plan was written)."
        else:
            met = "yes" if self._budget_figure() <= self.budget_bytes else "NO"
            budget = (f"Budget: {self.budget_bytes / 1024:.2f} KiB ({self.budget_bytes:,} B) of "
                      f"`{self.memory_mode}` activation memory. Met: {met}.")
        lines = [
            f"# aa_tflite report: {self.model}", "", budget, "",
            "| | float | int8 | planned |", "|---|---|---|---|",
            f"| {self.metric} | {self.float_score:.4f} | {self.int8_score:.4f} | "
            f"{self.planned_score:.4f} |",
            f"| packed activation peak (B) | - | {self.int8_memory.packed_peak:,} | "
            f"{m.packed_peak:,} |",
            f"| packed+sparse peak (B, worst sample) | - | {self.int8_sparse_peak:,} | "
            f"{self.planned_sparse_peak:,} |",
            f"| TFLM arena, real (B) | - | {_arena(self.int8_memory)} | {_arena(m)} |",
            f"| weights (B) | - | {self.int8_memory.weights:,} | {m.weights:,} |", "",
            f"Loss against int8: predicted {self.predicted_loss:.2f} points (sum of single-site "
            f"losses), verified {self.verified_loss:.2f} points on {self.eval_samples} samples, "
            f"measured on {_KERNEL_WORDS.get(self.kernels, self.kernels)}.",
            "", report.MEMORY_NOTE, "", "## Sites", "",
            "| site | bits | threshold | clip | sparsity | packed B | sparse B | loss | lowering |",
            "|---|---|---|---|---|---|---|---|---|"]
        for r in self.sites:
            clip = f"{r.clip:.4g}" if r.clip is not None else "data" if r.bits == 4 else "-"
            sp = "-" if r.sparsity is None else f"{r.sparsity:.1%}"
            lines.append(f"| {r.site} | {r.bits} | {r.threshold:.4g} | {clip} | {sp} | "
                         f"{r.packed_bytes if r.packed_bytes is not None else '-'} | "
                         f"{r.sparse_bytes if r.sparse_bytes is not None else '-'} | "
                         f"{r.loss:.2f} | {r.lowering} |")
        t = self.seconds
        lines += ["", "## Time", "", " · ".join(f"{k} {v:.1f} s" for k, v in t.items()),
                  f"({self.options_measured} options measured in the interpreter)"]
        if self.repairs:
            lines += ["", "## Repairs", "", *[f"- {r}" for r in self.repairs]]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def _budget_figure(self) -> int:
        if self.memory_mode == MemoryMode.PACKED_SPARSE.value:
            return self.planned_sparse_peak
        if self.memory_mode == MemoryMode.TFLM.value and self.planned_memory.tflm is not None:
            return self.planned_memory.tflm.total
        return self.planned_memory.packed_peak


_KERNEL_WORDS = {"builtin": "LiteRT's builtin kernels",
                 "xnnpack": "LiteRT with its default XNNPACK delegate",
                 "tflm": "TensorFlow Lite Micro's kernels"}


def _arena(m: MemoryReport) -> str:
    return "-" if m.tflm is None else f"{m.tflm.total:,} (head {m.tflm.head:,})"


@dataclasses.dataclass(frozen=True)
class Result:
    """The output of ``convert``.

    Attributes:
        tflite: The planned mixed-precision ``.tflite`` bytes.
        plan: The per-site plan (``Plan.to_json`` round-trips it).
        report: What was measured.
        baseline_tflite: The plain int8 conversion the plan was written into.
    """

    tflite: bytes
    plan: Plan
    report: Report
    baseline_tflite: bytes = dataclasses.field(repr=False)

    def save(self, prefix: str | os.PathLike, *, plots: bool = True) -> list[str]:
        """Writes ``prefix.tflite``, ``.plan.json``, ``.report.json``, ``.report.md`` and plots.

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
        files = {".tflite": self.tflite, ".plan.json": self.plan.to_json(),
                 ".report.json": self.report.to_json(), ".report.md": self.report.to_markdown()}
        if plots:
            from aa_tflite import plots as plots_mod

            files.update(plots_mod.render_plots(self.report))
        return atomic_write_all({prefix + ext: data for ext, data in files.items()})


def _eval_split(eval_data, x_cal: np.ndarray, check, classes: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
    if eval_data is None:
        return x_cal, None
    if isinstance(eval_data, (tuple, list)) and len(eval_data) == 2:
        x, y = eval_data
        x = check(x, "eval_data[0]")
        try:
            y = np.asarray(y)
        except (TypeError, ValueError) as e:
            raise AAError(f"eval_data labels must be an array of integer class indices. "
                          f"Received: {type(y).__name__}") from e
        if y.ndim == 2 and y.shape[0] == len(x) and y.shape[1] == classes and classes > 1:
            raise AAError("eval_data labels look one-hot (shape (N, classes)); pass class "
                          "indices instead, e.g. y_val.argmax(axis=1).")
        y = y.reshape(-1)
        if len(y) != len(x):
            raise AAError(f"eval_data has {len(x)} inputs and {len(y)} labels; pass one integer "
                          "label per sample, e.g. eval_data=(x_val, y_val).")
        if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer)
                                   or np.issubdtype(y.dtype, np.floating)):
            raise AAError(f"eval_data labels must be integer class indices. Received labels of "
                          f"dtype {y.dtype}; map them to 0..{classes - 1} first.")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
                raise AAError("eval_data labels must be integer class indices, e.g. "
                              "y_val.argmax(axis=1) for one-hot labels.")
            y = y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise AAError(f"eval_data labels must be class indices in 0..{classes - 1} (the model "
                          f"has {classes} outputs). Received labels from {y.min()} to {y.max()}.")
        return x, y
    return check(eval_data, "eval_data"), None


def _check_budget(budget_kb) -> float:
    if isinstance(budget_kb, (bool, np.bool_)) or not isinstance(budget_kb, numbers.Real) or \
            not math.isfinite(budget_kb) or budget_kb <= 0:
        raise AAError(f"budget_kb must be a positive number of KiB (1024 bytes) of activation "
                      f"memory. Received: budget_kb={budget_kb!r}")
    return float(budget_kb)


def convert(model, *, budget_kb: float | None, representative_data: np.ndarray,
            eval_data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
            memory: MemoryMode | str = MemoryMode.PACKED, max_accuracy_drop: float | None = None,
            plan: Plan | None = None, sparsity_points: Sequence[float] = (10.0, 20.0, 30.0),
            four_bit: bool = True,
            max_fit_samples: int = 128, max_eval_samples: int = 500, io_dtype: str = "int8",
            measure_tflm: bool = True, progress: bool = True, batch_size: int = 64,
            curve_points: int = 8, kernels: str = "builtin") -> Result:
    """Converts a Keras ReLU model to the mixed-precision int8/int4 ``.tflite`` that fits a budget.

    Example:
        >>> result = convert(model, budget_kb=2, representative_data=x_cal,
        ...                  eval_data=(x_val, y_val))  # doctest: +SKIP
        >>> result.save("out/digits")  # doctest: +SKIP

    Args:
        model: A trained Keras 3 model (Sequential or Functional), or a Keras 2 (``tf_keras``)
            one, which is brought to Keras 3 through a legacy ``.h5`` file. It is not modified.
        budget_kb: Activation memory budget in KiB (1024 bytes), in the sense of ``memory``.
            May be None only with ``plan``.
        representative_data: Calibration inputs ``(N, *input_shape)``; 100-500 samples is typical.
        eval_data: ``(x, y)`` with integer labels (the loss is the top-1 drop), or ``x`` alone, or
            None (the loss is the top-1 disagreement with the float model, on
            ``representative_data``). The planner uses these samples, so figures on them are not
            held-out figures; keep a separate split for that.
        memory: ``"packed"`` (peak with int4 packed two per byte), ``"packed+sparse"`` (post-ReLU
            tensors zero-compressed, worst sample), or ``"tflm"`` (the stock TFLM arena, which
            AA cannot shrink).
        max_accuracy_drop: If given, the verified loss (points) must not exceed it.
        plan: Skip the search and write this plan. A 4-bit site whose clip is None gets its
            clips from the data (one per channel where the graph allows).
        sparsity_points: Threshold candidates for ``"packed+sparse"``: thresholds that add these
            many points of sparsity per site. ``()`` plans precision only.
        four_bit: Offer 4-bit activations. ``False`` plans thresholds only (8-bit everywhere).
        max_fit_samples: Representative samples used to fit consumer corrections and measure
            sparsity.
        max_eval_samples: Evaluation samples used for every loss measurement.
        io_dtype: ``"int8"`` or ``"float32"`` model input/output.
        measure_tflm: Measure the real TFLM arena of the baseline and the result.
        progress: Show a progress bar over the sensitivity measurements.
        batch_size: Samples per interpreter invocation.
        curve_points: Points of the accuracy-memory curve (the greedy path continued to the
            smallest plan) to build and verify in the interpreter; 0 skips the curve.
        kernels: The kernels every loss is measured and verified on, as deployed:
            ``"builtin"`` (LiteRT's builtin kernels), ``"xnnpack"`` (LiteRT's default, with the
            XNNPACK delegate, as on Android) or ``"tflm"`` (TensorFlow Lite Micro). Runtimes
            round differently, and a 16-level tensor turns one rounding into a larger step, so
            measure on the kernels you deploy on.

    Returns:
        A ``Result``.

    Raises:
        BudgetError: The budget cannot be met (the error names the smallest reachable figure),
            or not within ``max_accuracy_drop``.
        AAError: Bad input; the message says what to change.
    """
    from tqdm.auto import tqdm

    from aa_tflite.exporter import check_data, export
    from aa_tflite.rewriter import check_model, from_keras2, is_keras2

    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    keras2 = is_keras2(model)
    if keras2:
        model = from_keras2(model)
    check_model(model)
    kernels = check_kernels(kernels)
    if budget_kb is None and plan is None:
        raise AAError("budget_kb is required (KiB of activation memory), unless a plan is given.")
    budget = None if budget_kb is None else int(_check_budget(budget_kb) * 1024)
    try:
        mode = MemoryMode(memory)
    except ValueError as e:
        raise AAError(f"memory must be one of {[m.value for m in MemoryMode]}. "
                      f"Received: memory={memory!r}") from e
    if max_accuracy_drop is not None and not (
            isinstance(max_accuracy_drop, numbers.Real) and not isinstance(max_accuracy_drop, bool)
            and math.isfinite(max_accuracy_drop) and max_accuracy_drop >= 0):
        raise AAError(f"max_accuracy_drop must be a number of points >= 0. "
                      f"Received: {max_accuracy_drop!r}")
    for name, value in (("max_fit_samples", max_fit_samples),
                        ("max_eval_samples", max_eval_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise AAError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
    if isinstance(curve_points, bool) or not isinstance(curve_points, numbers.Integral) or \
            curve_points < 0:
        raise AAError(f"curve_points must be an integer >= 0. Received: {curve_points!r}")

    x_cal = check_data(model, representative_data)
    classes = int(np.prod([d for d in model.outputs[0].shape[1:] if d is not None]) or 1)
    x_eval, y_eval = _eval_split(eval_data, x_cal, lambda d, w: check_data(model, d, w), classes)
    x_eval, y_eval = x_eval[:max_eval_samples], None if y_eval is None else y_eval[:max_eval_samples]
    x_fit = x_cal[:max_fit_samples]

    t = time.perf_counter()
    base = export(model, None, representative_data=x_cal, io_dtype=io_dtype)
    _probe_baseline(base.tflite, kernels)
    reference = np.asarray(model.predict(x_eval, batch_size=batch_size, verbose=0))
    graphs = quantedit.analyse(base.tflite, base.site_tensors)
    bench = Bench(base.tflite, graphs, x_fit=x_fit, x_eval=x_eval, y_eval=y_eval,
                  reference=reference, batch_size=batch_size, kernels=kernels)
    site_t = {s: g.tensor for s, g in graphs.items()}
    seconds["export+calibrate"] = time.perf_counter() - t
    _, layout = memory_mod.plan_tensors(base.tflite)
    elements = {tm.index: math.prod(tm.shape) if tm.shape else 1 for tm in layout}
    group_tensors = sorted({t for g in graphs.values() for t in g.group if t in elements})
    base_nz = bench.nonzeros(base.tflite, group_tensors)
    buffers = [planner.Buffer(tm.index, tm.first, tm.last, tm.nbytes) for tm in layout]
    sparse_buffers = [dataclasses.replace(b, nbytes=sparse_bytes(elements[b.tensor],
                                                                 base_nz[b.tensor], 8))
                      if b.tensor in base_nz else b for b in buffers]
    planning_buffers = sparse_buffers if mode == MemoryMode.PACKED_SPARSE else buffers
    notes: list[str] = [f"Repaired the int8 conversion: {r}" for r in base.repairs]
    if keras2:
        notes.append("The model was a Keras 2 (tf_keras) model; it was converted to Keras 3 "
                     "through a legacy .h5 file (the given object is untouched).")
    if y_eval is None:
        notes.append("No labels: the loss is the drop in top-1 agreement with the float model "
                     f"on {len(x_eval)} samples.")
    else:
        notes.append(f"Scores are on the {len(x_eval)} eval_data samples the planner also used; "
                     "evaluate a separate split for held-out figures.")
    for s, g in sorted(graphs.items()):
        notes += [f"{s}: {n}" for n in g.notes]
    for s, tensor in sorted(base.site_tensors.items()):
        if tensor is None or s not in graphs:
            notes.append(f"{s}: its tensor was not found in the .tflite; it stays plain int8.")

    def option_bytes(site: str, config: SiteConfig, tflite: bytes | None) -> dict[int, int]:
        group = [t for t in graphs[site].group if t in elements]
        if mode != MemoryMode.PACKED_SPARSE:
            return {t: math.ceil(elements[t] * int(config.bits) / 8) for t in group}
        nz = bench.nonzeros(tflite, group)
        return {t: sparse_bytes(elements[t], nz[t], int(config.bits)) for t in group}

    # --- sensitivity -------------------------------------------------------------------------
    t = time.perf_counter()
    options: dict[str, list[planner.Option]] = {}
    sensitivity: dict[str, list[tuple[str, float, int]]] = {}
    measured = 0
    points: dict[tuple[str, SiteConfig], float] = {}  # single-site loss in points
    if plan is None and mode != MemoryMode.TFLM:
        todo = [(s, label, c) for s in bench.order(graphs)
                for label, c in candidates(graphs[s], bench.site_values(s), memory=mode,
                                           sparsity_points=sparsity_points,
                                           per_channel=bench.per_channel(graphs[s]),
                                           four_bit=four_bit)]
        bar = tqdm(todo, desc="sensitivity", unit="option", disable=not progress)
        for site, label, config in bar:
            try:
                variant = bench.build({site: config})
            except UnsafeVariant as e:
                notes.append(f"{site}: option {label} not offered: {e}")
                continue
            metrics = bench.measure(variant)
            nbytes = option_bytes(site, config, variant)
            opt = planner.Option(site, config, bench.planning_loss(metrics), nbytes)
            options.setdefault(site, []).append(opt)
            points[(site, config)] = bench.loss(metrics)
            sensitivity.setdefault(site, []).append(
                (label, round(bench.loss(metrics), 4), sum(nbytes.values())))
            measured += 1
        bar.close()
    seconds["sensitivity"] = time.perf_counter() - t

    # --- search, verify, repair --------------------------------------------------------------
    t = time.perf_counter()
    repairs: list[str] = []
    curve: list[tuple[int, float]] = []
    int8_score = _score(bench.baseline)
    if mode == MemoryMode.TFLM:
        arena = memory_mod.tflm_arena(base.tflite)
        if budget is not None and arena.total > budget:
            raise BudgetError(
                f"memory='tflm' means the arena stock TFLite Micro allocates, {arena.total:,} B "
                f"({arena.total / 1024:.2f} KiB) for this model's int8 baseline. AA-ReLU cannot "
                "shrink it: TFLM stores 4-bit activations in int8 tensors and does not compress "
                "zeros. Raise budget_kb, or plan with memory='packed' for a runtime that packs.",
                smallest_bytes=arena.total, plan={})
        chosen, verified, built = {}, bench.baseline, base.tflite
        predicted = 0.0
        notes.append("memory='tflm': the int8 baseline already fits, and no AA option can "
                     "shrink the TFLM arena, so the plan is the plain int8 model.")
    elif plan is not None:
        chosen = _complete(plan.sites, graphs)
        built = bench.build(chosen)
        verified = bench.measure(built)
        predicted = float("nan")
    else:
        search, built, verified, predicted = _search_and_repair(
            bench, options, points, planning_buffers, buffers, budget, budget_kb, mode,
            max_accuracy_drop, graphs, elements, repairs)
        chosen = search.configs()
    seconds["search+verify"] = time.perf_counter() - t
    if options and curve_points > 0:
        t = time.perf_counter()
        curve = _curve(bench, planning_buffers, options, int8_score, curve_points)
        seconds["curve"] = time.perf_counter() - t

    # --- final model and report --------------------------------------------------------------
    t = time.perf_counter()
    notes += _runtime_notes(base.tflite, built)
    final_plan = Plan(chosen)
    tflite, final_metrics = built, verified
    bits = {tt: 4 for s, c in chosen.items() if c.bits == Bits.INT4 for tt in graphs[s].group}
    planned_mem = memory_mod.memory_report(tflite, bits=bits, measure_tflm=measure_tflm)
    int8_mem = memory_mod.memory_report(base.tflite, measure_tflm=measure_tflm)
    final_values = bench.values(tflite, [*group_tensors, *site_t.values()])
    nz = worst_nonzeros({t: final_values[t] for t in group_tensors})
    planned_sparse = [dataclasses.replace(b, nbytes=sparse_bytes(
        elements[b.tensor], nz[b.tensor], bits.get(b.tensor, 8))) if b.tensor in nz else
        dataclasses.replace(b, nbytes=math.ceil(elements[b.tensor] * bits.get(b.tensor, 8) / 8))
        for b in buffers]
    zps = _zero_points(tflite, site_t.values())
    rows = []
    for s in bench.order(graphs):
        c, g = final_plan.get(s), graphs[s]
        tt = g.tensor
        rows.append(SiteRow(
            s, tt, int(c.bits), c.threshold, c.clip,
            float(np.mean(final_values[tt] == 0)) if tt in final_values else None,
            math.ceil(elements[tt] * int(c.bits) / 8) if tt in elements else None,
            sparse_bytes(elements[tt], nz[tt], int(c.bits)) if tt in nz else None,
            points.get((s, c), 0.0), _lowering_words(c, g, zps.get(tt))))
    for s, tensor in sorted(base.site_tensors.items()):
        if s not in graphs:
            rows.append(SiteRow(s, tensor, 8, 0.0, None, None, None, None, 0.0,
                                "plain int8 (tensor not found)"))
    seconds["final+report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_start
    metric = "top-1 accuracy" if y_eval is not None else "top-1 agreement with float"
    float_score = (float(np.mean(np.argmax(reference.reshape(len(reference), -1), axis=1)
                                 == y_eval)) if y_eval is not None else 1.0)
    rep = Report(
        model=model.name, memory_mode=mode.value, budget_bytes=budget, metric=metric,
        float_score=float_score, int8_score=int8_score, planned_score=_score(final_metrics),
        predicted_loss=float(predicted), verified_loss=bench.loss(final_metrics),
        eval_samples=len(x_eval), int8_memory=int8_mem, planned_memory=planned_mem,
        int8_sparse_peak=planner.peak(sparse_buffers), planned_sparse_peak=planner.peak(planned_sparse),
        sites=tuple(rows), options_measured=measured, repairs=tuple(repairs),
        seconds={k: round(v, 2) for k, v in seconds.items()},
        curve=tuple(curve), sensitivity={k: tuple(v) for k, v in sensitivity.items()},
        notes=tuple(notes), tensor_bits=dict(sorted(bits.items())), kernels=kernels)
    logging.info("Planned %s: %s", model.name, final_plan.to_json())
    return Result(tflite, final_plan, rep, base.tflite)


def _probe_baseline(tflite: bytes, kernels: str = "builtin") -> None:
    """Runs the plain int8 conversion once in a child process before it is run in this one: a
    runtime abort there must not end the user's process."""
    for k in dict.fromkeys(("builtin", kernels)):
        result = guard.probe(tflite, kernels=k)
        if result.ok:
            continue
        if k == "builtin":
            raise AAError(f"LiteRT cannot run the plain int8 conversion of this model, before any "
                          f"aa_tflite edit: {result.reason}. Check the model in plain TFLite "
                          "(tf.lite.TFLiteConverter with full-integer quantization) first; layers "
                          "whose outputs are constant on the representative data are a common "
                          "cause.")
        raise AAError(f"kernels={k!r} cannot run the plain int8 conversion of this model, before "
                      f"any aa_tflite edit: {result.reason}. That is the runtime's limitation; "
                      "measure with kernels='builtin' (and deploy with builtin kernels).")


XNNPACK_WORKAROUND = (
    "use LiteRT's builtin kernels: in Python, Interpreter(..., experimental_op_resolver_type="
    "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES); on Android, "
    "Interpreter.Options().setUseXNNPACK(false)")


def _runtime_notes(base: bytes, planned: bytes) -> list[str]:
    """Runs both models once with LiteRT's default XNNPACK delegate (what Android apps get) and
    in TFLite Micro, each in a child process, and says where one does not run."""
    notes = []
    targets = ((guard.Kernels.XNNPACK, "LiteRT's default XNNPACK delegate"),
               (guard.Kernels.TFLM, "TFLite Micro"))
    models = [base] if planned == base else [base, planned]
    results = iter(guard.probe_all([(m, k) for k, _ in targets for m in models]))
    for kernels, name in targets:
        plain = next(results)
        ours = plain if planned == base else next(results)
        if not plain.ok:
            fix = f" Workaround: {XNNPACK_WORKAROUND}." if kernels == guard.Kernels.XNNPACK else ""
            notes.append(f"{name} cannot run this model, and cannot run its plain int8 "
                         f"conversion either, so this is the runtime's limitation, not the "
                         f"plan's: {plain.reason}.{fix}")
        elif not ours.ok:
            notes.append(f"WARNING: {name} runs the plain int8 model but not the planned one: "
                         f"{ours.reason}. Please report this as an aa_tflite bug.")
    return notes


def _score(m) -> float:
    return m.accuracy if m.accuracy is not None else m.agreement


def _label(c: SiteConfig) -> str:
    s = f"{int(c.bits)}b"
    if c.threshold:
        s += f" T={c.threshold:.3g}"
    return s


def _search_and_repair(bench: Bench, options, points, planning_buffers, buffers, budget: int,
                       budget_kb, mode: MemoryMode, max_accuracy_drop, graphs, elements,
                       repairs: list[str]):
    """Greedy search, then verify the whole plan in the interpreter; repair by banning the worst
    move and searching again, up to ``_MAX_REPAIRS`` times. Returns the best verified plan that
    fits: ``(search, tflite, metrics, predicted_loss)``."""
    banned: set[tuple[str, SiteConfig]] = set()
    best = None
    internal_budget = budget
    tol = max(0.5, 200.0 / len(bench.x_eval))  # two samples' worth of noise, at least 0.5 points
    for attempt in range(_MAX_REPAIRS + 1):
        try:
            search = planner.search(planning_buffers, options, internal_budget,
                                    banned=frozenset(banned))
        except BudgetError:
            if best is None:
                raise
            repairs.append("No plan without the banned options fits; kept the best verified plan.")
            break
        try:
            tfl = bench.build(search.configs())
        except UnsafeVariant as e:
            if attempt == _MAX_REPAIRS:
                break
            worst = max(search.choice.values(), key=lambda o: (o.loss, o.site))
            banned.add((worst.site, worst.config))
            repairs.append(f"Attempt {attempt + 1}: {e} Undid {worst.site} and searched again.")
            continue
        metrics = bench.measure(tfl)
        vloss = bench.loss(metrics)
        figure = _figure(mode, tfl, search, buffers, graphs, elements, bench)
        predicted = sum(max(points[(s, o.config)], 0.0) for s, o in search.choice.items())
        fits = figure <= budget
        if fits and (best is None or vloss < best[3]):
            best = (search, tfl, metrics, vloss, predicted)
        if fits and vloss <= predicted + tol and (max_accuracy_drop is None
                                                  or vloss <= max_accuracy_drop):
            break
        if attempt == _MAX_REPAIRS:
            repairs.append(f"Gave up after {_MAX_REPAIRS} repairs; kept the best verified plan.")
            break
        if not fits:
            internal_budget -= max(figure - budget, 1)
            repairs.append(f"Attempt {attempt + 1}: measured {mode.value} peak {figure:,} B is "
                           f"over the budget; searching again with {internal_budget:,} B.")
            continue
        worst = max(search.choice.values(), key=lambda o: (o.loss, o.site))
        banned.add((worst.site, worst.config))
        repairs.append(f"Attempt {attempt + 1}: verified loss {vloss:.2f} points against "
                       f"{predicted:.2f} predicted; undid {worst.site} ({_label(worst.config)}, "
                       f"single-site loss {worst.loss:.2f}) and searched again.")
    if best is None:
        raise BudgetError(f"No plan met the budget of {budget:,} B when measured.")
    search, tfl, metrics, vloss, predicted = best
    if max_accuracy_drop is not None and vloss > max_accuracy_drop:
        raise BudgetError(
            f"The budget of {budget_kb} KiB is met only with a verified loss of {vloss:.2f} "
            f"points, above max_accuracy_drop={max_accuracy_drop}. Raise budget_kb or "
            "max_accuracy_drop.", smallest_bytes=search.peak, plan=search.configs())
    return search, tfl, metrics, predicted


def _curve(bench: Bench, buffers, options, int8_score: float, points: int
           ) -> list[tuple[int, float, float | None]]:
    """The greedy path from int8 down to the smallest plan; ``points`` of its steps verified."""
    floor = planner.smallest(buffers, options)
    steps = planner.greedy(buffers, options, floor.peak).steps
    if not steps:
        return []
    pick = set(np.linspace(0, len(steps) - 1, min(points, len(steps))).round().astype(int))
    out, configs = [], {}
    for k, step in enumerate(steps):
        configs[step.site] = step.config
        verified = _score(bench.measure(bench.build(configs))) if k in pick else None
        out.append((step.peak, int8_score - step.predicted_loss / 100.0, verified))
    return out


def _figure(mode: MemoryMode, tflite: bytes, search: planner.Search,
            buffers: Sequence[planner.Buffer], graphs, elements, bench: Bench) -> int:
    """The budgeted figure of a built plan, measured (sparse sizes are re-measured)."""
    if mode != MemoryMode.PACKED_SPARSE:
        return search.peak
    bits = {t: int(c.bits) for s, c in search.configs().items() for t in graphs[s].group}
    tensors = sorted({t for g in graphs.values() for t in g.group if t in elements})
    nz = bench.nonzeros(tflite, tensors)
    sized = [dataclasses.replace(b, nbytes=sparse_bytes(elements[b.tensor], nz[b.tensor],
                                                        bits.get(b.tensor, 8)))
             if b.tensor in nz else b for b in buffers]
    return planner.peak(sized)


def _complete(sites: Mapping[str, SiteConfig], graphs) -> dict[str, SiteConfig]:
    """A user's plan, checked against the sites."""
    unknown = sorted(set(sites) - set(graphs))
    if unknown:
        raise AAError(f"The plan names sites this model does not have: {unknown}. "
                      f"Its sites are: {sorted(graphs)}.")
    return dict(sites)


def _zero_points(tflite: bytes, tensors) -> dict[int, tuple[float, int]]:
    from aa_tflite import flatbuffer

    _, infos = flatbuffer.describe(flatbuffer.read(tflite))
    return {t: (infos[t].scale[0], infos[t].zero_point[0]) for t in tensors
            if infos[t].scale and infos[t].zero_point}


def _lowering_words(c: SiteConfig, g: quantedit.SiteGraph, q: tuple[float, int] | None) -> str:
    parts = []
    if c.bits == Bits.INT4 and q is not None:
        how = ("per-channel clips from the data, equalized through the producer's filter "
               "scales" if c.clip is None and g.can_equalize else "one clip for the tensor")
        parts.append(f"4-bit: int8 tensor, zero point {q[1]}, scale {q[0]:.4g}, top level "
                     f"{15 * q[0]:.4g} (16 levels, no op added); {how}")
    elif c.clip is not None and q is not None:
        parts.append(f"clip via int8 saturation, scale {q[0]:.4g}")
    if c.threshold:
        parts.append(f"threshold folded into {g.producer_op} bias")
    if parts and g.correction_consumer is not None:
        parts.append(f"consumer op {g.correction_consumer[0]} corrected")
    return "; ".join(parts) if parts else "plain int8"
