"""The front door: ``convert(model, budget_kb=..., representative_data=...)`` -> ``Result``.

``convert`` reads as its stages (``aa_tflite.search.stages``): check the options, prepare the model and
data, export the int8 baseline once, list and measure every candidate as a flatbuffer edit of it,
search and verify, draw the accuracy-memory curve, report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import logging

from aa_tflite.files import atomic_write_all
from aa_tflite.report import Report, SiteRow
from aa_tflite.search import stages
from aa_tflite.tflite import multipoint
from aa_tflite.tflite.metadata import write_metadata
from aa_tflite.types import AAError, BudgetError, MemoryMode, Plan

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
                 "| signature | budget (KiB) | packed peak (B) | packed+sparse (B) | TFLM arena "
                 f"(B) | weights (B) | {self.report.metric} | latency (ms) |",
                 "|---|---|---|---|---|---|---|---|"]
        for p in self.points:
            lines.append(f"| {p.key} | {p.budget_kb:g} | {p.packed:,} | {p.packed_sparse:,} | "
                         f"{p.tflm_arena if p.tflm_arena is not None else '-'} | "
                         f"{p.report.planned_memory.weights:,} | {p.score:.4f} | "
                         f"{p.latency_ms:.3f} |")
        lines += ["", "Packed and packed+sparse figures are real only on a runtime that packs "
                  "low-bit tensors; stock LiteRT and TFLite Micro allocate the TFLM arena column.",
                  "Latency: median of single-sample runs in LiteRT (XNNPACK, 1 thread) on the "
                  "machine that converted; it is not stored in the file."]
        return "\n".join(lines)

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
        if len(self.points) > 1:
            return self._save_points(prefix, plots)
        files = {".tflite": self.tflite, ".plan.json": self.plan.to_json(),
                 ".report.json": self.report.to_json(), ".report.md": self.report.to_markdown()}
        if plots:
            from aa_tflite import plots as plots_mod

            files.update(plots_mod.render_plots(self.report))
        return atomic_write_all({prefix + ext: data for ext, data in files.items()})

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
        return atomic_write_all({prefix + ext: data for ext, data in files.items()})


def convert(model, *, budget_kb: float | Sequence[float] | None, representative_data: np.ndarray,
            eval_data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
            memory: MemoryMode | str = MemoryMode.PACKED, max_accuracy_drop: float | None = None,
            plan: Plan | None = None, sparsity_points: Sequence[float] = (10.0, 20.0, 30.0),
            bits: Sequence[int] | None = None,
            max_fit_samples: int = 128, max_eval_samples: int = 500, io_dtype: str = "int8",
            measure_tflm: bool = True, progress: bool = True, batch_size: int = 64,
            curve_points: int = 8, kernels: str | None = None, target: str | None = None,
            input_sizes: Sequence[int] | None = None) -> Result:
    """Converts a Keras ReLU model to the mixed-precision int8/int4 ``.tflite`` that fits a budget.

    Example:
        >>> result = convert(model, budget_kb=2, representative_data=x_cal,
        ...                  eval_data=(x_val, y_val))  # doctest: +SKIP
        >>> result.save("out/digits")  # doctest: +SKIP

    Args:
        model: A trained Keras 3 model (Sequential or Functional), or a Keras 2 (``tf_keras``)
            one, which is brought to Keras 3 through a legacy ``.h5`` file. It is not modified.
        budget_kb: Activation memory budget in KiB (1024 bytes), in the sense of ``memory``.
            May be None only with ``plan``. A list of budgets, e.g. ``[6, 4, 3]``, makes one
            operating point per budget: ``Result.tflite`` then holds one signature per point,
            in the order given (keys from ``multipoint.point_key``, e.g. ``"kib4"``), sharing
            one copy of the weights; ``Result.points`` lists them, each with its own
            single-subgraph file for TFLite Micro. Switch points at run time with
            ``aa_tflite.OperatingPoints``.
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
        bits: The activation precisions to offer below 8 bits, from 6, 5, 4, 3 and 2
            (``aa_tflite.precision``). Defaults to all of them. ``[4]`` offers 4 bits only;
            ``[]`` plans thresholds only (8 bits everywhere).
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
            measure on the kernels you deploy on. Default: the kernels of ``target``, or
            ``"builtin"`` if no target is named.
        target: Where the file will run, to measure on its kernels: ``"android"``, ``"pi"``
            (``tflite-runtime``) and ``"web"`` (LiteRT.js) run LiteRT's default XNNPACK
            kernels; ``"tflm"`` runs TensorFlow Lite Micro's; ``"edgetpu"`` measures on
            LiteRT's builtin kernels (what runs on the host CPU; the TPU's own arithmetic
            cannot be measured here). An explicit ``kernels`` wins.
        input_sizes: Square input sizes, e.g. ``[64, 96]``, for a model that is fully
            convolutional up to a global pooling: each (size, budget) pair becomes a point
            (keys such as ``"px64_kib4"``). The model is rebuilt at each size with the same
            weights; ``representative_data`` and ``eval_data`` are resized to it (bilinear,
            antialiased, ``tf.image.resize``) and every size is planned and measured on its own
            data. The int8 kernels are the same bytes at every size and are stored once.

    Returns:
        A ``Result``.

    Raises:
        BudgetError: The budget cannot be met (the error names the smallest reachable figure),
            or not within ``max_accuracy_drop``.
        AAError: Bad input; the message says what to change.
    """
    budgets = _budget_list(budget_kb)
    kernels = _kernels_for(target) if kernels is None else kernels
    opts = stages.options(
        budget_kb=budgets[0], memory=memory, max_accuracy_drop=max_accuracy_drop, plan=plan,
        sparsity_points=sparsity_points, bits=bits, max_fit_samples=max_fit_samples,
        max_eval_samples=max_eval_samples, io_dtype=io_dtype, measure_tflm=measure_tflm,
        progress=progress, batch_size=batch_size, curve_points=curve_points, kernels=kernels)
    budgets = [None if b is None else stages.check_budget(b) for b in budgets]  # plain floats
    if (len(budgets) > 1 or input_sizes is not None) and (
            plan is not None or opts.mode == MemoryMode.TFLM):
        raise AAError("A list of budgets makes one operating point per budget; it needs "
                      "memory='packed' or 'packed+sparse' and no plan. Give one budget_kb.")
    point_opts = [dataclasses.replace(opts, budget=int(stages.check_budget(b) * 1024),
                                      budget_kb=float(b)) for b in budgets] if len(budgets) > 1 \
        else [opts]
    sizes = _size_list(input_sizes, model, plan)
    multi = len(budgets) > 1 or sizes != [None]
    keys = [multipoint.point_key(b, s) if multi else "serving_default"
            for s in sizes for b in budgets]
    if len(set(keys)) != len(keys):
        raise AAError(f"The budgets must be distinct (to 4 significant digits). Received: "
                      f"{list(budgets)}")
    points: list[Point] = []
    docs: list[dict] = []  # each point's metadata, as written into its own file
    baseline_tflite = None
    for size in sizes:
        at = model if size is None else _at_size(model, size)
        cal = representative_data if size is None else _resize(representative_data, size)
        ev = eval_data if size is None else _resize_eval(eval_data, size)
        try:
            prep, base, built = _plan_points(at, cal, ev, point_opts, opts, target)
        except BudgetError as e:
            if size is None:
                raise
            raise BudgetError(f"At input size {size}x{size}: {e}", smallest_bytes=e.smallest_bytes,
                              plan=e.plan) from e
        baseline_tflite = baseline_tflite or base.tflite
        for k, b in enumerate(budgets):
            key = keys[len(points)]
            plan_k, report_k, tfl = built[k]
            doc = _metadata(report_k, plan_k)
            docs.append(doc)
            tfl = write_metadata(tfl, {**doc, "points": [_point_doc(key, b, size, doc)]})
            report_k = dataclasses.replace(report_k, planned_memory=dataclasses.replace(
                report_k.planned_memory, file_size=len(tfl)))
            points.append(Point(key, b, size, plan_k, report_k, tfl, _latency_ms(tfl)))
            logging.info("Planned %s (%s): %s", prep.model.name, key, plan_k.to_json())
    if len(points) == 1:
        p = points[0]
        return Result(p.tflite, p.plan, p.report, baseline_tflite, tuple(points))
    combined = multipoint.combine([(p.key, p.tflite) for p in points], metadata={
        **docs[0], "points": [_point_doc(p.key, p.budget_kb, p.input_size, d)
                          for p, d in zip(points, docs, strict=True)]})
    return Result(combined, points[0].plan, points[0].report, baseline_tflite, tuple(points))


TARGET_KERNELS = {None: "builtin", "android": "xnnpack", "pi": "xnnpack", "web": "xnnpack",
                  "tflm": "tflm", "edgetpu": "builtin"}


def _kernels_for(target: str | None) -> str:
    """The kernels a target runs (``TARGET_KERNELS``); an ``AAError`` lists the targets."""
    if target not in TARGET_KERNELS:
        raise AAError(f"target must be one of {[t for t in TARGET_KERNELS if t]} (or None). "
                      f"Received: target={target!r}")
    return TARGET_KERNELS[target]


def _plan_points(model, representative_data, eval_data, point_opts, opts, target=None):
    """One model and its data: the int8 baseline once, then one plan per budget. Returns
    ``(prep, base, {budget index: (plan, report, tflite)})``."""
    prep = stages.prepare(model, representative_data, eval_data, opts)
    t = time.perf_counter()
    base = stages.baseline(prep, opts)
    base_seconds = time.perf_counter() - t
    todo = stages.candidate_list(base, opts)
    # The smallest budget first: it measures the most options, and the others reuse them.
    order = sorted(range(len(point_opts)), key=lambda k: point_opts[k].budget or 0)
    built: dict[int, tuple] = {}
    curve: tuple = ()
    for n, k in enumerate(order):
        o = point_opts[k]
        seconds: dict[str, float] = {"export+calibrate": base_seconds} if n == 0 else {}
        t_start = time.perf_counter()
        t = time.perf_counter()
        measured = stages.measure(base, todo, o)
        seconds["sensitivity"] = time.perf_counter() - t
        t = time.perf_counter()
        chosen = stages.search_and_verify(base, measured, o)
        seconds["search+verify"] = time.perf_counter() - t
        if n == 0 and measured.options and o.curve_points > 0:  # one curve, the widest search
            t = time.perf_counter()
            curve = stages.curve(base, measured, o)
            seconds["curve"] = time.perf_counter() - t
        t = time.perf_counter()
        report = stages.build_report(prep, base, measured, chosen, curve, o)
        seconds["final+report"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t_start + (base_seconds if n == 0 else 0.0)
        report = dataclasses.replace(report, target=target,
                                     seconds={a: round(v, 2) for a, v in seconds.items()})
        built[k] = (Plan(chosen.configs), report, chosen.tflite)
    return prep, base, built


def _size_list(input_sizes, model, plan) -> list:
    """``input_sizes`` checked: None -> ``[None]`` (the model's own size)."""
    if input_sizes is None:
        return [None]
    if plan is not None:
        raise AAError("input_sizes plans each size separately; it cannot take one given plan. "
                      "Drop plan=, or convert each size with its own plan.")
    try:
        sizes = list(input_sizes)
    except TypeError:
        sizes = None
    if not sizes or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                        for v in sizes):
        raise AAError("input_sizes must be a list of positive integers (square input sizes in "
                      f"pixels), e.g. input_sizes=[96, 128]. Received: {input_sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise AAError(f"input_sizes must be distinct. Received: {sizes}")
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) != 4:
        raise AAError(f"input_sizes needs an image model with (height, width, channels) inputs; "
                      f"this model's input is {shape}.")
    return [int(v) for v in sizes]


def _at_size(model, size: int):
    """The same model, weights shared by value, built for ``size`` x ``size`` inputs."""
    import keras

    from aa_tflite.frontend.rewrite import from_keras2, is_keras2

    if is_keras2(model):
        model = from_keras2(model)
    channels = model.inputs[0].shape[-1]
    try:
        inp = keras.Input((size, size, channels), name=model.inputs[0].name.split(":")[0])
        clone = keras.models.clone_model(model, input_tensors=inp)
        clone.set_weights(model.get_weights())
        clone(np.zeros((1, size, size, channels), np.float32))
    except Exception as e:  # Keras raises many types when a layer cannot take the new shape
        raise AAError(f"The model cannot run at {size}x{size}: {type(e).__name__}: "
                      f"{str(e)[:200]}. input_sizes needs a model that is fully convolutional "
                      "up to a global pooling (no Flatten before a Dense).") from e
    return clone


def _resize(x, size: int) -> np.ndarray:
    """Images resized to ``size`` x ``size``: bilinear with antialiasing (``tf.image.resize``)."""
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise AAError(f"input_sizes needs image data shaped (N, height, width, channels). "
                      f"Received: {x.shape}.")
    if x.shape[1:3] == (size, size):
        return x
    return tf.image.resize(x, (size, size), method="bilinear", antialias=True).numpy()


def _resize_eval(eval_data, size: int):
    if eval_data is None:
        return None
    if isinstance(eval_data, tuple):
        return (_resize(eval_data[0], size), *eval_data[1:])
    return _resize(eval_data, size)


def _budget_list(budget_kb) -> list:
    """``budget_kb`` as a list: one number (or None), or several numbers for several points."""
    if budget_kb is None or isinstance(budget_kb, (int, float, np.number)) or \
            isinstance(budget_kb, str):
        return [budget_kb]
    try:
        budgets = list(budget_kb)
    except TypeError:
        return [budget_kb]  # options() names the problem
    if not budgets:
        raise AAError("budget_kb is an empty list; give one budget in KiB, or a list of them "
                      "for one operating point each, e.g. budget_kb=[6, 4, 3].")
    for b in budgets:
        stages.check_budget(b)
    return budgets


def _point_doc(key: str, budget_kb, input_size, doc: dict) -> dict:
    """One point's entry in the metadata's ``points`` list."""
    return {"signature": key, "budget_kb": budget_kb, "input_size": input_size,
            **{a: doc[a] for a in ("plan", "tensor_bits", "budget_bytes", "memory", "scores")}}


def _latency_ms(tflite: bytes, repeats: int = 30) -> float:
    """Median LiteRT latency of one sample (default kernels, 1 thread), in ms."""
    from aa_tflite.runtime.interpreter import load_interpreter

    interp = load_interpreter(tflite, num_threads=1, kernels="xnnpack")
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1000, 4)


def _metadata(report: Report, plan: Plan) -> dict:
    """What the ``.tflite`` carries about itself (``aa_tflite.read_metadata``). Only figures that
    the same inputs reproduce exactly: no times, no file size (the document is inside the file)."""
    m, i8 = report.planned_memory, report.int8_memory
    return {
        "producer": f"aa_tflite {_version()}",
        "model": report.model,
        "plan": json.loads(plan.to_json()),
        "tensor_bits": {str(t): b for t, b in sorted(report.tensor_bits.items())},
        "memory_mode": report.memory_mode,
        "budget_bytes": report.budget_bytes,
        "memory": {"packed_peak": m.packed_peak, "int8_peak": m.int8_peak,
                   "packed_sparse_peak": report.planned_sparse_peak,
                   "tflm_arena": None if m.tflm is None else m.tflm.total,
                   "tflm_head": None if m.tflm is None else m.tflm.head,
                   "weights": m.weights,
                   "int8_baseline": {"packed_peak": i8.packed_peak,
                                     "packed_sparse_peak": report.int8_sparse_peak,
                                     "tflm_arena": None if i8.tflm is None else i8.tflm.total}},
        "scores": {"metric": report.metric, "float": report.float_score,
                   "int8": report.int8_score, "planned": report.planned_score,
                   "eval_samples": report.eval_samples},
        "kernels": report.kernels,
        "target": report.target,
    }


def _version() -> str:
    from aa_tflite import __version__

    return __version__
