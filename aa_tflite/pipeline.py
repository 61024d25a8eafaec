"""The front door: ``convert(model, budget_kb=..., representative_data=...)`` -> ``Result``.

``convert`` reads as its stages (``aa_tflite.stages``): check the options, prepare the model and
data, export the int8 baseline once, list and measure every candidate as a flatbuffer edit of it,
search and verify, draw the accuracy-memory curve, report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import logging

from aa_tflite import stages
from aa_tflite.files import atomic_write_all
from aa_tflite.metadata import write_metadata
from aa_tflite.report import Report, SiteRow
from aa_tflite.types import MemoryMode, Plan

__all__ = ["Report", "Result", "SiteRow", "convert"]


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


def convert(model, *, budget_kb: float | None, representative_data: np.ndarray,
            eval_data: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
            memory: MemoryMode | str = MemoryMode.PACKED, max_accuracy_drop: float | None = None,
            plan: Plan | None = None, sparsity_points: Sequence[float] = (10.0, 20.0, 30.0),
            bits: Sequence[int] | None = None,
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
            measure on the kernels you deploy on.

    Returns:
        A ``Result``.

    Raises:
        BudgetError: The budget cannot be met (the error names the smallest reachable figure),
            or not within ``max_accuracy_drop``.
        AAError: Bad input; the message says what to change.
    """
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(stage: str):
        t = time.perf_counter()
        yield
        seconds[stage] = time.perf_counter() - t

    opts = stages.options(
        budget_kb=budget_kb, memory=memory, max_accuracy_drop=max_accuracy_drop, plan=plan,
        sparsity_points=sparsity_points, bits=bits, max_fit_samples=max_fit_samples,
        max_eval_samples=max_eval_samples, io_dtype=io_dtype, measure_tflm=measure_tflm,
        progress=progress, batch_size=batch_size, curve_points=curve_points, kernels=kernels)
    prep = stages.prepare(model, representative_data, eval_data, opts)
    with timed("export+calibrate"):
        base = stages.baseline(prep, opts)
    with timed("sensitivity"):
        measured = stages.measure(base, stages.candidate_list(base, opts), opts)
    with timed("search+verify"):
        chosen = stages.search_and_verify(base, measured, opts)
    curve: tuple = ()
    if measured.options and opts.curve_points > 0:
        with timed("curve"):
            curve = stages.curve(base, measured, opts)
    with timed("final+report"):
        report = stages.build_report(prep, base, measured, chosen, curve, opts)
    seconds["total"] = time.perf_counter() - t_start
    report = dataclasses.replace(report, seconds={k: round(v, 2) for k, v in seconds.items()})
    plan_out = Plan(chosen.configs)
    tflite = write_metadata(chosen.tflite, _metadata(report, plan_out))
    report = dataclasses.replace(report, planned_memory=dataclasses.replace(
        report.planned_memory, file_size=len(tflite)))
    logging.info("Planned %s: %s", prep.model.name, plan_out.to_json())
    return Result(tflite, plan_out, report, base.tflite)


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
    }


def _version() -> str:
    from aa_tflite import __version__

    return __version__
