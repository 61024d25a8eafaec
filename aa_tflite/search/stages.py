"""The stages of ``convert``, each a function that returns a frozen record.

prepare (check the model and data) -> baseline (the int8 conversion, its sites, the layout) ->
candidates (options per site) -> measure (each option as a flatbuffer edit, run in the
interpreter) -> search and verify (greedy, verified end to end, repaired) -> curve -> report.
``pipeline.convert`` calls them in that order; each reads only the records before it and the
``Options``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from aa_tflite.lowering import signed
from aa_tflite.precision import check_menu, precision
from aa_tflite.report import Report, SiteRow, lowering_words, zero_points
from aa_tflite.runtime import guard
from aa_tflite.runtime.interpreter import check_kernels
from aa_tflite.search import planner
from aa_tflite.search.bench import (
    Bench,
    UnsafeVariant,
    candidates,
    sparse_bytes,
    worst_nonzeros,
)
from aa_tflite.tflite import flatbuffer, quantedit
from aa_tflite.tflite import memory as memory_mod
from aa_tflite.types import AAError, Bits, BudgetError, Kernels, MemoryMode, Plan, SiteConfig

__all__ = ["Baseline", "Chosen", "Measured", "Options", "Prepared", "baseline", "build_report",
           "candidate_list", "curve", "measure", "options", "prepare", "search_and_verify",
           "tensor_bits"]

_MAX_REPAIRS = 6
# Units measured first: those alive while the int8 live bytes exceed this share of the budget.
# Not 1.0: the arena layout fragments, and on MobileNetV2 (benchmarks/plan_quality) the best plan
# at 60% shrinks tensors alive at only 72% and 89% of the budget to close the gaps it leaves.
_HOT_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Options:
    """Every option of ``convert``, checked. See ``convert`` for what each means."""

    budget: int | None  # bytes
    budget_kb: float | None
    mode: MemoryMode
    max_accuracy_drop: float | None
    plan: Plan | None
    sparsity_points: tuple[float, ...]
    bits: tuple[int, ...]  # the precision menu below 8 bits, widest first
    max_fit_samples: int
    max_eval_samples: int
    io_dtype: str
    measure_tflm: bool
    progress: bool
    batch_size: int
    curve_points: int
    kernels: str


def options(*, budget_kb, memory, max_accuracy_drop, plan, sparsity_points, bits,
            max_fit_samples, max_eval_samples, io_dtype, measure_tflm, progress, batch_size,
            curve_points, kernels) -> Options:
    """Checks ``convert``'s options; an ``AAError`` names the first bad one and the fix."""
    kernels = check_kernels(kernels)
    if budget_kb is None and plan is None:
        raise AAError("budget_kb is required (KiB of activation memory), unless a plan is given.")
    budget = None if budget_kb is None else int(check_budget(budget_kb) * 1024)
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
    return Options(budget, None if budget_kb is None else float(budget_kb), mode,
                   None if max_accuracy_drop is None else float(max_accuracy_drop), plan,
                   tuple(float(p) for p in sparsity_points), check_menu(bits),
                   int(max_fit_samples), int(max_eval_samples), io_dtype, bool(measure_tflm),
                   bool(progress), int(batch_size), int(curve_points), kernels)


def check_budget(budget_kb) -> float:
    """``budget_kb`` as a float, or an ``AAError`` saying what a budget must be."""
    if isinstance(budget_kb, (bool, np.bool_)) or not isinstance(budget_kb, numbers.Real) or \
            not math.isfinite(budget_kb) or budget_kb <= 0:
        raise AAError(f"budget_kb must be a positive number of KiB (1024 bytes) of activation "
                      f"memory. Received: budget_kb={budget_kb!r}")
    return float(budget_kb)


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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The checked model and data."""

    model: Any  # keras.Model (Keras 3)
    keras2: bool  # it came as a Keras 2 model
    x_cal: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    x_fit: np.ndarray


def prepare(model, representative_data, eval_data, opts: Options) -> Prepared:
    """Checks the model (Keras 2 models are brought to Keras 3) and the data."""
    from aa_tflite.frontend.export import check_data
    from aa_tflite.frontend.rewrite import check_model, from_keras2, is_keras2

    keras2 = is_keras2(model)
    if keras2:
        model = from_keras2(model)
    check_model(model)
    x_cal = check_data(model, representative_data)
    classes = int(np.prod([d for d in model.outputs[0].shape[1:] if d is not None]) or 1)
    x_eval, y_eval = _eval_split(eval_data, x_cal, lambda d, w: check_data(model, d, w), classes)
    n = opts.max_eval_samples
    return Prepared(model, keras2, x_cal, x_eval[:n], None if y_eval is None else y_eval[:n],
                    x_cal[:opts.max_fit_samples])


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The int8 conversion every variant is an edit of, with what the later stages read."""

    exported: Any  # exporter.Exported
    reference: np.ndarray  # the float model's outputs on x_eval
    graphs: Mapping[str, quantedit.SiteGraph]
    bench: Bench
    elements: Mapping[int, int]  # planned tensor -> elements
    group_tensors: tuple[int, ...]  # every tensor of every site's group
    buffers: tuple[planner.Buffer, ...]  # int8 layout
    sparse_buffers: tuple[planner.Buffer, ...]  # zero-compressed, worst sample
    notes: tuple[str, ...]
    # What the planner moves: a unit is one site, or the sites a tie (CONCATENATION, PACK)
    # joins, which take one precision and one clip together. Unit name -> its sites.
    units: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # (unit, config) -> what measuring it gave, so several budgets measure each option once.
    measured: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def tflite(self) -> bytes:
        return self.exported.tflite

    def unit_of(self, site: str) -> str:
        """The planning unit a site belongs to."""
        return next((u for u, members in self.units.items() if site in members), site)

    def expand(self, configs: Mapping[str, SiteConfig]) -> dict[str, SiteConfig]:
        """Per-unit configs (the planner's) as per-site configs (the plan's)."""
        return {s: c for u, c in configs.items() for s in self.units.get(u, (u,))}

    def planning_buffers(self, mode: MemoryMode) -> tuple[planner.Buffer, ...]:
        return self.sparse_buffers if mode == MemoryMode.PACKED_SPARSE else self.buffers


def baseline(prep: Prepared, opts: Options) -> Baseline:
    """Converts to int8 once, runs it in a child process first, and analyses its sites."""
    from aa_tflite.frontend.export import export

    base = export(prep.model, None, representative_data=prep.x_cal, io_dtype=opts.io_dtype)
    _probe_baseline(base.tflite, opts.kernels)
    reference = np.asarray(prep.model.predict(prep.x_eval, batch_size=opts.batch_size,
                                              verbose=0))
    graphs = quantedit.analyse(base.tflite, base.site_tensors)
    signed_graphs, signed_notes = signed_sites(base.tflite)
    graphs.update(signed_graphs)
    bench = Bench(base.tflite, graphs, x_fit=prep.x_fit, x_eval=prep.x_eval, y_eval=prep.y_eval,
                  reference=reference, batch_size=opts.batch_size, kernels=opts.kernels)
    _, layout = memory_mod.plan_tensors(base.tflite)
    elements = {tm.index: math.prod(tm.shape) if tm.shape else 1 for tm in layout}
    group_tensors = tuple(sorted({t for g in graphs.values() for t in g.group if t in elements}))
    base_nz = bench.nonzeros(base.tflite, group_tensors)
    buffers = tuple(planner.Buffer(tm.index, tm.first, tm.last, tm.nbytes) for tm in layout)
    sparse = tuple(dataclasses.replace(b, nbytes=sparse_bytes(elements[b.tensor],
                                                              base_nz[b.tensor], 8))
                   if b.tensor in base_nz else b for b in buffers)
    notes = [f"Repaired the int8 conversion: {r}" for r in base.repairs] + signed_notes
    if prep.keras2:
        notes.append("The model was a Keras 2 (tf_keras) model; it was converted to Keras 3 "
                     "through a legacy .h5 file (the given object is untouched).")
    if prep.y_eval is None:
        notes.append("No labels: the loss is the drop in top-1 agreement with the float model "
                     f"on {len(prep.x_eval)} samples.")
    else:
        notes.append(f"Scores are on the {len(prep.x_eval)} eval_data samples the planner also "
                     "used; evaluate a separate split for held-out figures.")
    for s, g in sorted(graphs.items()):
        notes += [f"{s}: {n}" for n in g.notes]
    for s, tensor in sorted(base.site_tensors.items()):
        if tensor is None or s not in graphs:
            notes.append(f"{s}: its tensor was not found in the .tflite; it stays plain int8.")
    return Baseline(base, reference, graphs, bench, elements, group_tensors, buffers, sparse,
                    tuple(notes), planning_units(graphs))


def signed_sites(tflite: bytes) -> tuple[dict[str, quantedit.SiteGraph], list[str]]:
    """The signed tensors (weighted ops' outputs with no activation) as planning sites named
    ``signed:<tensor name>``, and a note for each one ``aa_tflite.lowering.signed`` cannot reach."""
    _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
    out: dict[str, quantedit.SiteGraph] = {}
    notes = []
    offset = signed.offset_reachable(tflite)
    for t, g in sorted(signed.reachable(tflite).items()):
        name = f"signed:{tensors[t].name.split(';')[0]}"
        if name in out:
            name = f"{name}#{t}"
        if not g.ok:  # the offset form below may take it; else say why it stays int8
            if t not in offset:
                notes.append(f"{name} (tensor {t}, {g.producer_op} output, signed): stays "
                             "int8: " + "; ".join(g.notes))
            continue
        out[name] = quantedit.SiteGraph(
            name, t, (t,), g.producer, g.producer_op, g.consumers, None, True, False,
            (f"signed {g.producer_op} output: its producer gets a fused RELU_N1_TO_1 clamp and "
             "its consumers absorb the per-channel centre and half-range",),
            g.scale, signed=True)
    for t, g in sorted(offset.items()):
        name = f"offset:{tensors[t].name.split(';')[0]}"
        out[name] = quantedit.SiteGraph(
            name, t, g.group, g.producer, g.producer_op, (), None, True, False,
            (f"signed {g.producer_op} output that reaches ADD (op {g.add}): stored as y - low "
             f"under a fused RELU; the ADD's other input (tensor {g.partner}) takes + low in "
             f"its producer's bias",), g.scale, signed=True, offset=True)
    return out, notes


def planning_units(graphs: Mapping[str, quantedit.SiteGraph]) -> dict[str, tuple[str, ...]]:
    """Unit name -> sites: each site alone, or its tie group named ``"a + b"``.

    Example:
        >>> planning_units({})
        {}
    """
    out: dict[str, tuple[str, ...]] = {}
    for s, g in sorted(graphs.items()):
        members = tuple(g.tie) or (s,)
        out[" + ".join(members)] = members
    return out


def candidate_list(base: Baseline, opts: Options) -> list[tuple[str, str, SiteConfig]]:
    """``(site, label, config)`` for every option to measure, sites in execution order; none
    when a plan is given or the budget counts the TFLM arena (which no option shrinks)."""
    if opts.plan is not None or opts.mode == MemoryMode.TFLM:
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
        out += [(unit, label, c) for label, c in candidates(
            graph, bench.unit_values(members), memory=opts.mode,
            sparsity_points=opts.sparsity_points,
            per_channel=graph.signed or (len(members) == 1 and bench.per_channel(graph)),
            bits=opts.bits)]
    return out


@dataclasses.dataclass(frozen=True)
class Measured:
    """Every measured option."""

    options: Mapping[str, tuple[planner.Option, ...]]  # site -> options, for the planner
    sensitivity: Mapping[str, tuple[tuple[str, float, int], ...]]  # site -> (label, loss, bytes)
    points: Mapping[tuple[str, SiteConfig], float]  # single-site loss in points
    count: int
    notes: tuple[str, ...]
    skipped: int = 0  # options left unmeasured: no plan that meets the budget needs them


def measure(base: Baseline, todo: Sequence[tuple[str, str, SiteConfig]],
            opts: Options) -> Measured:
    """Builds each option as an edit of the baseline and measures its loss in the interpreter.

    Only the units with a tensor alive while the int8 model's live bytes exceed half the budget
    are measured first (``planner.hot_tensors``): shrinking a unit that is never alive near the
    budget cannot bring the peak down to it, so the search would not take it. If those options
    cannot reach the budget, the rest are measured too, so the floor a ``BudgetError`` reports
    is the true one.
    """
    hot = _hot_units(base, opts)
    first = [c for c in todo if hot is None or c[0] in hot]
    rest = [c for c in todo if not (hot is None or c[0] in hot)]
    out = _measure(base, first, opts)
    if rest and planner.smallest(base.planning_buffers(opts.mode), out.options).peak > opts.budget:
        logging.info("The budget is out of reach of the %d options over it; measuring the other "
                     "%d.", len(first), len(rest))
        more = _measure(base, rest, opts)
        units = list(dict.fromkeys(c[0] for c in todo))  # execution order, as before
        return Measured({u: out.options.get(u, ()) + more.options.get(u, ()) for u in units
                         if u in out.options or u in more.options},
                        {u: out.sensitivity.get(u, ()) + more.sensitivity.get(u, ()) for u in units
                         if u in out.sensitivity or u in more.sensitivity},
                        {**out.points, **more.points}, out.count + more.count,
                        out.notes + more.notes)
    if rest:
        logging.info("Skipped %d options of units never alive while the int8 model holds more "
                     "than half the budget.", len(rest))
    return dataclasses.replace(out, skipped=len(rest))


def _hot_units(base: Baseline, opts: Options) -> set[str] | None:
    """Units with a tensor alive while the int8 live bytes exceed ``_HOT_SHARE`` of the budget
    (None: all units)."""
    if opts.budget is None:
        return None
    hot = planner.hot_tensors(base.planning_buffers(opts.mode), int(_HOT_SHARE * opts.budget))
    return {u for u, members in base.units.items()
            if any(t in hot for m in members for t in base.graphs[m].group)}


def _measure(base: Baseline, todo: Sequence[tuple[str, str, SiteConfig]],
             opts: Options) -> Measured:
    from tqdm.auto import tqdm

    bench = base.bench
    options: dict[str, list[planner.Option]] = {}
    sensitivity: dict[str, list[tuple[str, float, int]]] = {}
    points: dict[tuple[str, SiteConfig], float] = {}
    notes: list[str] = []
    bar = tqdm(todo, desc="sensitivity", unit="option", disable=not opts.progress)
    for site, label, config in bar:
        key = (site, config, opts.mode)
        if key not in base.measured:
            try:
                variant = bench.build(base.expand({site: config}))
            except UnsafeVariant as e:
                base.measured[key] = f"{site}: option {label} not offered: {e}"
            else:
                metrics = bench.measure(variant)
                base.measured[key] = (bench.planning_loss(metrics), bench.loss(metrics),
                                      _option_bytes(base, site, config, variant, opts.mode))
        got = base.measured[key]
        if isinstance(got, str):
            notes.append(got)
            continue
        planning_loss, loss, nbytes = got
        options.setdefault(site, []).append(planner.Option(site, config, planning_loss, nbytes))
        points[(site, config)] = loss
        sensitivity.setdefault(site, []).append((label, round(loss, 4), sum(nbytes.values())))
    bar.close()
    return Measured({k: tuple(v) for k, v in options.items()},
                    {k: tuple(v) for k, v in sensitivity.items()}, points,
                    sum(len(v) for v in options.values()), tuple(notes))


def _option_bytes(base: Baseline, site: str, config: SiteConfig, tflite: bytes | None,
                  mode: MemoryMode) -> dict[int, int]:
    elements = base.elements
    group = sorted({t for m in base.units.get(site, (site,)) for t in base.graphs[m].group
                    if t in elements})
    if mode != MemoryMode.PACKED_SPARSE:
        return {t: precision(config.bits).nbytes(elements[t]) for t in group}
    nz = base.bench.nonzeros(tflite, group)
    return {t: sparse_bytes(elements[t], nz[t], int(config.bits)) for t in group}


@dataclasses.dataclass(frozen=True)
class Chosen:
    """The plan written, the model it gives and what it measured."""

    configs: Mapping[str, SiteConfig]
    tflite: bytes
    metrics: Any  # sensitivity.Metrics
    predicted: float
    repairs: tuple[str, ...]
    notes: tuple[str, ...]


def search_and_verify(base: Baseline, measured: Measured, opts: Options) -> Chosen:
    """The plan: the given one, the plain model (``memory="tflm"``), or the greedy search's,
    verified end to end and repaired until it holds."""
    bench = base.bench
    if opts.mode == MemoryMode.TFLM:
        arena = memory_mod.tflm_arena(base.tflite)
        if opts.budget is not None and arena.total > opts.budget:
            raise BudgetError(
                f"memory='tflm' means the arena stock TFLite Micro allocates, {arena.total:,} B "
                f"({arena.total / 1024:.2f} KiB) for this model's int8 baseline. AA-ReLU cannot "
                "shrink it: TFLM stores 4-bit activations in int8 tensors and does not compress "
                "zeros. Raise budget_kb, or plan with memory='packed' for a runtime that packs.",
                smallest_bytes=arena.total, plan={})
        return Chosen({}, base.tflite, bench.baseline, 0.0, (), (
            "memory='tflm': the int8 baseline already fits, and no AA option can shrink the TFLM "
            "arena, so the plan is the plain int8 model.",))
    if opts.plan is not None:
        configs = _complete(opts.plan.sites, base.graphs)
        built = bench.build(configs)
        return Chosen(configs, built, bench.measure(built), float("nan"), (), ())
    _check_floor(base, measured, opts)
    repairs: list[str] = []
    search, built, verified, predicted = _search_and_repair(base, measured, opts, repairs)
    return Chosen(base.expand(search.configs()), built, verified, predicted, tuple(repairs), ())


def curve(base: Baseline, measured: Measured, opts: Options
          ) -> tuple[tuple[int, float, float | None], ...]:
    """The greedy path from int8 down to the smallest plan; ``opts.curve_points`` of its steps
    built and verified."""
    if not measured.options or opts.curve_points <= 0:
        return ()
    bench, buffers = base.bench, base.planning_buffers(opts.mode)
    int8_score = _score(bench.baseline)
    floor = planner.smallest(buffers, measured.options)
    steps = planner.greedy(buffers, measured.options, floor.peak).steps
    if not steps:
        return ()
    pick = set(np.linspace(0, len(steps) - 1, min(opts.curve_points, len(steps))).round()
               .astype(int))
    out, configs = [], {}
    for k, step in enumerate(steps):
        configs[step.site] = step.config
        verified = (_score(bench.measure(bench.build(base.expand(configs)))) if k in pick
                    else None)
        out.append((step.peak, int8_score - step.predicted_loss / 100.0, verified))
    return tuple(out)


def build_report(prep: Prepared, base: Baseline, measured: Measured, chosen: Chosen,
                 curve_points: Sequence[tuple[int, float, float | None]],
                 opts: Options) -> Report:
    """Measures the final model's memory on every definition and writes the report (its
    ``seconds`` are filled in by the caller, who times the stages)."""
    bench, graphs, elements = base.bench, base.graphs, base.elements
    tflite = chosen.tflite
    final_plan = Plan(chosen.configs)
    notes = [*base.notes, *measured.notes, *chosen.notes, *_runtime_notes(base.tflite, tflite)]
    bits = tensor_bits(chosen.configs, graphs)
    planned_mem = memory_mod.memory_report(tflite, bits=bits, measure_tflm=opts.measure_tflm)
    int8_mem = memory_mod.memory_report(base.tflite, measure_tflm=opts.measure_tflm)
    site_t = {s: g.tensor for s, g in graphs.items()}
    final_values = bench.values(tflite, [*base.group_tensors, *site_t.values()])
    nz = worst_nonzeros({t: final_values[t] for t in base.group_tensors})
    planned_sparse = [dataclasses.replace(b, nbytes=sparse_bytes(
        elements[b.tensor], nz[b.tensor], bits.get(b.tensor, 8))) if b.tensor in nz else
        dataclasses.replace(b, nbytes=precision(bits.get(b.tensor, 8)).nbytes(elements[b.tensor]))
        for b in base.buffers]
    zps = zero_points(tflite, site_t.values())
    rows = []
    for s in bench.order(graphs):
        c, g = final_plan.get(s), graphs[s]
        tt = g.tensor
        rows.append(SiteRow(
            s, tt, int(c.bits), c.threshold, c.clip,
            float(np.mean(final_values[tt] == 0)) if tt in final_values else None,
            precision(c.bits).nbytes(elements[tt]) if tt in elements else None,
            sparse_bytes(elements[tt], nz[tt], int(c.bits)) if tt in nz else None,
            measured.points.get((base.unit_of(s), c), 0.0), lowering_words(c, g, zps.get(tt))))
    for s, tensor in sorted(base.exported.site_tensors.items()):
        if s not in graphs:
            rows.append(SiteRow(s, tensor, 8, 0.0, None, None, None, None, 0.0,
                                "plain int8 (tensor not found)"))
    y_eval, reference = prep.y_eval, base.reference
    metric = "top-1 accuracy" if y_eval is not None else "top-1 agreement with float"
    float_score = (float(np.mean(np.argmax(reference.reshape(len(reference), -1), axis=1)
                                 == y_eval)) if y_eval is not None else 1.0)
    return Report(
        model=prep.model.name, memory_mode=opts.mode.value, budget_bytes=opts.budget,
        metric=metric, float_score=float_score, int8_score=_score(bench.baseline),
        planned_score=_score(chosen.metrics), predicted_loss=float(chosen.predicted),
        verified_loss=bench.loss(chosen.metrics), eval_samples=len(prep.x_eval),
        int8_memory=int8_mem, planned_memory=planned_mem,
        int8_sparse_peak=planner.peak(base.sparse_buffers),
        planned_sparse_peak=planner.peak(planned_sparse), sites=tuple(rows),
        options_measured=measured.count, options_skipped=measured.skipped,
        repairs=chosen.repairs,
        seconds={}, curve=tuple(curve_points),
        sensitivity=dict(measured.sensitivity), notes=tuple(notes),
        tensor_bits=dict(sorted(bits.items())), kernels=opts.kernels)


def tensor_bits(configs: Mapping[str, SiteConfig],
                graphs: Mapping[str, quantedit.SiteGraph]) -> dict[int, int]:
    """Tensor index -> bits, for every tensor a plan stores below 8 bits (the one place a plan's
    per-tensor bits are computed)."""
    return {t: int(c.bits) for s, c in sorted(configs.items()) if c.bits != Bits.INT8
            for t in graphs[s].group}


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
    targets = ((Kernels.XNNPACK, "LiteRT's default XNNPACK delegate"),
               (Kernels.TFLM, "TFLite Micro"))
    models = [base] if planned == base else [base, planned]
    results = iter(guard.probe_all([(m, k) for k, _ in targets for m in models]))
    for kernels, name in targets:
        plain = next(results)
        ours = plain if planned == base else next(results)
        if not plain.ok:
            fix = f" Workaround: {XNNPACK_WORKAROUND}." if kernels == Kernels.XNNPACK else ""
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


def _search_and_repair(base: Baseline, measured: Measured, opts: Options, repairs: list[str]):
    """Greedy search, then verify the whole plan in the interpreter; repair by banning the worst
    move and searching again, up to ``_MAX_REPAIRS`` times. Returns the best verified plan that
    fits: ``(search, tflite, metrics, predicted_loss)``."""
    bench, graphs, elements = base.bench, base.graphs, base.elements
    options, points, mode = measured.options, measured.points, opts.mode
    planning_buffers, buffers = base.planning_buffers(mode), base.buffers
    budget, budget_kb, max_accuracy_drop = opts.budget, opts.budget_kb, opts.max_accuracy_drop
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
            tfl = bench.build(base.expand(search.configs()))
        except UnsafeVariant as e:
            if attempt == _MAX_REPAIRS:
                break
            worst = max(search.choice.values(), key=lambda o: (o.loss, o.site))
            banned.add((worst.site, worst.config))
            repairs.append(f"Attempt {attempt + 1}: {e} Undid {worst.site} and searched again.")
            continue
        metrics = bench.measure(tfl)
        vloss = bench.loss(metrics)
        figure = _figure(mode, tfl, search, base.expand(search.configs()), buffers, graphs,
                         elements, bench)
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
            "max_accuracy_drop.", smallest_bytes=search.peak, plan=base.expand(search.configs()))
    return search, tfl, metrics, predicted


def _check_floor(base: Baseline, measured: Measured, opts: Options) -> None:
    """Raises a ``BudgetError`` that helps when no plan reaches the budget: it names the tensors
    that set the floor and why each cannot shrink, and carries the least-loss plan at the floor
    (not merely the smallest options everywhere)."""
    buffers = base.planning_buffers(opts.mode)
    floor = planner.smallest(buffers, measured.options)
    if opts.budget is None or floor.peak <= opts.budget:
        return
    try:  # the least predicted loss that still reaches the floor
        cheapest = planner.search(buffers, measured.options, floor.peak)
    except BudgetError:
        cheapest = floor
    # The tensors that bind: live at the peak of the plan with every unit at its smallest option.
    scope, live = planner.peak_tensors(buffers, floor.choice)
    model = flatbuffer.read(base.tflite)
    ops, tensors = flatbuffer.describe(model)
    inputs = set(int(t) for t in (model.subgraphs[0].inputs if model.subgraphs[0].inputs
                                  is not None else []))
    producer = {t: op for op in ops for t in op.outputs}
    chosen = tensor_bits(base.expand(floor.configs()), base.graphs)
    owner = {t: s for s, g in base.graphs.items() for t in g.group if not g.signed}
    signed_reach = signed.reachable(base.tflite)
    lines = []
    for t, nbytes in live:
        name = tensors[t].name.split(";")[0][-60:]
        if t in inputs:
            why = "the model input: its int8 type is fixed by the data the caller feeds"
        elif t in chosen:
            why = (f"at {chosen[t]} bits, its narrowest option (menu {list(opts.bits)})")
        elif t in owner:
            g = base.graphs[owner[t]]
            unit = base.unit_of(owner[t])
            if not measured.options.get(unit):
                why = (f"ReLU site {owner[t]}: " + ("; ".join(g.notes[:2]) if not g.can_requantize
                       else "none of its options could be built safely"))
            else:
                why = f"ReLU site {owner[t]}: its narrower options save nothing more here"
        elif t in signed_reach:
            why = (f"output of {signed_reach[t].producer_op} (op {signed_reach[t].producer}), "
                   "signed: " + ("; ".join(signed_reach[t].notes) or "its options save nothing "
                                 "more here"))
            if "read by ADD" in why:
                why += ("; nor the offset form, which needs the ADD's other input to come from "
                        "a conv with a bias that nothing else reads (an identity shortcut cannot "
                        "take the opposite offset)")
        else:
            op = producer.get(t)
            what = "a constant-free input" if op is None else f"{op.name} (op {op.index})"
            why = (f"output of {what}: neither a ReLU output nor a weighted op's signed output, "
                   "and no zero-cost lowering reaches it yet")
        lines.append(f"  tensor {t} `{name}` {list(tensors[t].shape)}: {nbytes:,} B, {why}")
    unit = "KiB" if opts.mode != MemoryMode.PACKED_SPARSE else "KiB (packed+sparse)"
    where = (f"while op {scope - 1} ({ops[scope - 1].name}) runs" if 0 < scope <= len(ops)
             else "at the model input")
    raise BudgetError(
        f"The budget of {opts.budget / 1024:.2f} {unit} ({opts.budget:,} B) cannot be met: the "
        f"smallest activation memory any plan reaches is {floor.peak:,} B "
        f"({floor.peak / 1024:.2f} KiB, {floor.peak / planner.peak(buffers):.0%} of int8), set "
        f"{where} by these live tensors:\n"
        + "\n".join(lines) + f"\nRaise budget_kb to at least "
        f"{math.ceil(floor.peak / 10.24) / 100:.2f}, or offer narrower bits; the error's .plan is "
        f"the least-loss plan at that floor (predicted loss {cheapest.predicted_loss:.2f} "
        "points).",
        smallest_bytes=floor.peak, plan=base.expand(cheapest.configs()))


def _figure(mode: MemoryMode, tflite: bytes, search: planner.Search,
            configs: Mapping[str, SiteConfig], buffers: Sequence[planner.Buffer], graphs,
            elements, bench: Bench) -> int:
    """The budgeted figure of a built plan: the search's packed peak (its options carry every
    tensor of each unit), or the packed+sparse peak re-measured on the built model."""
    if mode != MemoryMode.PACKED_SPARSE:
        return search.peak
    bits = tensor_bits(configs, graphs)
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
