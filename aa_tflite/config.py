"""``ConvertConfig``: the one place each option of ``convert`` is named, typed, defaulted, checked
and documented. ``convert`` and the CLI build one; the stages read it. No TensorFlow import.

Example:
    >>> cfg = ConvertConfig(memory="packed+sparse", bits=[4, 2, 4])
    >>> cfg.memory, cfg.bits
    (<MemoryMode.PACKED_SPARSE: 'packed+sparse'>, (4, 2))
    >>> Budget.of(1.5).nbytes
    1536
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from aa_tflite.metrics import check_metric_option
from aa_tflite.precision import check_menu
from aa_tflite.types import AAError, Kernels, MemoryMode, Plan

__all__ = ["Budget", "ConvertConfig", "budget_kb_for", "budget_list", "check_budget"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_count(name: str, value: Any, least: int) -> int:
    if not _is_int(value) or value < least:
        raise AAError(f"{name} must be an integer >= {least}. Received: {name}={value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """Every option of ``aa_tflite.convert`` besides the budget and the data, checked on
    construction: a bad value raises an ``AAError`` that names it and the fix.

    Attributes:
        memory: What ``budget_kb`` counts. ``"packed"``: the activation peak with low-bit tensors
            packed (int4 two per byte); ``"packed+sparse"``: post-ReLU tensors zero-compressed,
            worst sample; ``"tflm"``: the arena TFLite Micro really allocates, which no
            precision or threshold shrinks; the plan is then the int8 model with exact
            rewrites (batch 1, an offline memory plan; patch-based execution of the first stage
            or a channel split only if the budget needs them). Defaults to ``"tflm"`` when
            ``target`` is ``"tflm"``, else ``"packed"``.
        max_accuracy_drop: If given, the verified loss (points) must not exceed it. Defaults to
            None.
        plan: Skip the search and write this plan. A low-bit site whose clip is None gets its
            clips from the data (one per channel where the graph allows). Defaults to None.
        sparsity_points: Threshold candidates for ``"packed+sparse"``: thresholds that add these
            many points of sparsity per site; ``()`` plans precision only. Defaults to
            ``(10, 20, 30)``.
        bits: The activation precisions offered below 8 bits, from ``precision.LOW_BITS``
            (6, 5, 4, 3, 2). ``[4]`` offers 4 bits only; ``[]`` plans thresholds only. Defaults
            to all of them.
        max_fit_samples: Representative samples used to fit consumer corrections and measure
            sparsity. Defaults to 128.
        max_eval_samples: Evaluation samples every loss is measured on. Defaults to 500.
        io_dtype: ``"int8"`` or ``"float32"`` model input and output. Defaults to ``"int8"``.
        measure_tflm: Measure the real TFLite Micro arena of the baseline and the result.
            Defaults to True.
        progress: Show a progress bar over the sensitivity measurements. Defaults to True.
        batch_size: Samples per interpreter invocation. Defaults to 64.
        curve_points: Steps of the accuracy-memory curve (the greedy path continued to the
            smallest plan) to build and verify; 0 skips the curve. Defaults to 8.
        kernels: The kernels every loss is measured and verified on (``aa_tflite.Kernels``):
            ``"builtin"``, ``"xnnpack"`` or ``"tflm"``. Runtimes round differently, and a
            low-bit tensor turns one rounding into a larger step, so measure on the kernels you
            deploy on. Defaults to the kernels of ``target`` (``measure_kernels``).
        target: Where the file will run (a key of ``aa_tflite.targets.TARGETS``: ``"android"``,
            ``"pi"``, ``"web"``, ``"tflm"``, ``"edgetpu"``), to measure on its kernels. An
            explicit ``kernels`` wins. Defaults to None: LiteRT's builtin kernels.
        input_sizes: Square input sizes, e.g. ``[64, 96]``, for a model that is fully
            convolutional up to a global pooling: each (size, budget) pair becomes an operating
            point. The model is rebuilt at each size with the same weights; the data are resized
            (bilinear, antialiased). Defaults to None: the model's own size.
        metric: What the loss is measured in (``aa_tflite.metrics``): a built-in name
            (``"top1"``, ``"agreement"``, ``"relative_mse"``, ``"iou"``), a callable
            ``metric(y, outputs) -> float`` (higher is better, 0-1; ``y`` is the labels, else
            the float model's outputs), or one of those per output. ``max_accuracy_drop`` is in
            points of it. Defaults to None: top-1 for a class vector (accuracy with labels,
            agreement with float without), ``"relative_mse"`` for any other output.
        output_weights: With several outputs, the weight of each output's score. Defaults to
            None: their mean.
        fold_batchnorm: BatchNorm after a ReLU (or a pooling), which the converter leaves as
            MUL/ADD ops whose outputs no lowering reaches: ``"exact"`` folds it forward into the
            next weighted layer where that is exact (``frontend.fold``); ``"all"`` also into
            'same'-padded convs, where the borders change (scored against the unfolded model,
            so the difference counts as loss); ``"auto"`` folds exactly, and plans again with
            the inexact folds too only when no plan meets the budget without them;
            ``"none"`` leaves it. Defaults to ``"auto"``.
        share_weights: Keep every int8 kernel of the plain conversion bit for bit, so every
            operating point of one layout shares the same weight bytes: a correction's slope, an
            equalized range or a signed half-range that a reader would absorb goes into its
            filter scales and bias (per channel where the reader is depthwise, one factor for
            all channels elsewhere). False folds them into the readers' int8 kernels, per
            channel: sometimes a little more accurate, but each point then stores its own copy
            of those kernels. Defaults to True.
        kernel_library: With ``memory="tflm"``: the TFLM kernel library the firmware links,
            which decides the in-place overlaps the offline plan may use: ``"all"`` (safe on
            TFLM's reference kernels, CMSIS-NN and ESP-NN alike), ``"reference"``,
            ``"cmsis-nn"`` or ``"esp-nn"``. Defaults to ``"all"``.

    Example:
        >>> ConvertConfig(target="tflm").measure_kernels
        <Kernels.TFLM: 'tflm'>
    """

    memory: MemoryMode | None = None
    max_accuracy_drop: float | None = None
    plan: Plan | None = None
    sparsity_points: Sequence[float] = (10.0, 20.0, 30.0)
    bits: Sequence[int] | None = None
    max_fit_samples: int = 128
    max_eval_samples: int = 500
    io_dtype: str = "int8"
    measure_tflm: bool = True
    progress: bool = True
    batch_size: int = 64
    curve_points: int = 8
    kernels: Kernels | None = None
    target: str | None = None
    input_sizes: Sequence[int] | None = None
    kernel_library: str = "all"
    metric: Any = None
    output_weights: Sequence[float] | None = None
    fold_batchnorm: str = "auto"
    share_weights: bool = True

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.memory is None:  # a microcontroller pays for TFLM's arena, not a packed figure
            put("memory", MemoryMode.TFLM if self.target == "tflm" else MemoryMode.PACKED)
        try:
            put("memory", MemoryMode(self.memory))
        except ValueError as e:
            raise AAError(f"memory must be one of {[m.value for m in MemoryMode]}. "
                          f"Received: memory={self.memory!r}") from e
        drop = self.max_accuracy_drop
        if drop is not None:
            if not (isinstance(drop, numbers.Real) and not isinstance(drop, bool)
                    and math.isfinite(drop) and drop >= 0):
                raise AAError(f"max_accuracy_drop must be a number of points >= 0. "
                              f"Received: {drop!r}")
            put("max_accuracy_drop", float(drop))
        if self.plan is not None and not isinstance(self.plan, Plan):
            raise AAError(f"plan must be an aa_tflite.Plan (e.g. Plan.from_json(text)). "
                          f"Received: {type(self.plan).__name__}")
        put("sparsity_points", tuple(float(p) for p in self.sparsity_points))
        put("bits", check_menu(self.bits))
        for name in ("max_fit_samples", "max_eval_samples", "batch_size"):
            put(name, _check_count(name, getattr(self, name), 1))
        put("curve_points", _check_count("curve_points", self.curve_points, 0))
        put("measure_tflm", bool(self.measure_tflm))
        put("progress", bool(self.progress))
        put("share_weights", bool(self.share_weights))
        if self.kernels is not None:
            try:
                put("kernels", Kernels(self.kernels))
            except ValueError as e:
                raise AAError(f"kernels must be one of {[k.value for k in Kernels]}: LiteRT's "
                              "builtin kernels, LiteRT with its default XNNPACK delegate, or "
                              f"TensorFlow Lite Micro. Received: kernels={self.kernels!r}") from e
        self.target_kernels()  # checks the target
        if self.input_sizes is not None:
            put("input_sizes", _check_sizes(self.input_sizes, self.plan))
        from aa_tflite.tflite.offline_plan import check_library  # the one list of libraries

        check_library(self.kernel_library)
        put("metric", check_metric_option(self.metric))
        if self.fold_batchnorm not in ("auto", "exact", "all", "none"):
            raise AAError("fold_batchnorm must be 'auto', 'exact', 'all' or 'none'. Received: "
                          f"fold_batchnorm={self.fold_batchnorm!r}")
        if self.output_weights is not None:
            put("output_weights", tuple(self.output_weights))

    def target_kernels(self) -> Kernels:
        """The kernels ``target`` runs (``aa_tflite.targets.kernels_for``)."""
        from aa_tflite.targets import kernels_for

        return Kernels(kernels_for(self.target))

    @property
    def measure_kernels(self) -> Kernels:
        """The kernels losses are measured on: ``kernels`` if given, else the target's."""
        return self.kernels if self.kernels is not None else self.target_kernels()

    @property
    def sizes(self) -> list[int | None]:
        """The input sizes to plan: ``[None]`` is the model's own size."""
        return [None] if self.input_sizes is None else list(self.input_sizes)


def _check_sizes(input_sizes: Any, plan: Plan | None) -> tuple[int, ...]:
    if plan is not None:
        raise AAError("input_sizes plans each size separately; it cannot take one given plan. "
                      "Drop plan=, or convert each size with its own plan.")
    try:
        sizes = list(input_sizes)
    except TypeError:
        sizes = None
    if not sizes or any(not _is_int(v) or v < 1 for v in sizes):
        raise AAError("input_sizes must be a list of positive integers (square input sizes in "
                      f"pixels), e.g. input_sizes=[96, 128]. Received: {input_sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise AAError(f"input_sizes must be distinct. Received: {sizes}")
    return tuple(int(v) for v in sizes)


@dataclasses.dataclass(frozen=True)
class Budget:
    """One activation-memory budget.

    Attributes:
        kb: The budget in KiB (1024 bytes), as the user gave it.
    """

    kb: float

    @property
    def nbytes(self) -> int:
        """The budget in bytes."""
        return int(self.kb * 1024)

    @classmethod
    def of(cls, budget_kb: Any) -> Budget:
        """A checked budget, or an ``AAError`` saying what a budget must be."""
        return cls(check_budget(budget_kb))


def budget_kb_for(nbytes: int) -> float:
    """The smallest ``budget_kb``, in steps of 0.01 KiB, that holds ``nbytes`` (the figure a
    ``BudgetError`` tells the user to raise the budget to).

    Example:
        >>> budget_kb_for(6720)
        6.57
    """
    return math.ceil(nbytes / 10.24) / 100


def check_budget(budget_kb: Any) -> float:
    """``budget_kb`` as a float, or an ``AAError`` saying what a budget must be."""
    if isinstance(budget_kb, (bool, np.bool_)) or not isinstance(budget_kb, numbers.Real) or \
            not math.isfinite(budget_kb) or budget_kb <= 0:
        raise AAError(f"budget_kb must be a positive number of KiB (1024 bytes) of activation "
                      f"memory. Received: budget_kb={budget_kb!r}")
    return float(budget_kb)


def budget_list(budget_kb: Any, *, plan: Plan | None) -> list[Budget | None]:
    """``budget_kb`` as a list of budgets: one (None only with a plan), or one per point.

    Example:
        >>> [b.kb for b in budget_list([6, 4], plan=None)]
        [6.0, 4.0]
    """
    if budget_kb is None:
        if plan is None:
            raise AAError("budget_kb is required (KiB of activation memory), unless a plan is "
                          "given.")
        return [None]
    if isinstance(budget_kb, (numbers.Number, str, np.number)):
        return [Budget.of(budget_kb)]
    try:
        budgets = list(budget_kb)
    except TypeError:
        return [Budget.of(budget_kb)]  # names the problem
    if not budgets:
        raise AAError("budget_kb is an empty list; give one budget in KiB, or a list of them "
                      "for one operating point each, e.g. budget_kb=[6, 4, 3].")
    return [Budget.of(b) for b in budgets]
