"""The sensitivity stage: variants of one int8 conversion, built by flatbuffer edits and measured in
the TFLite interpreter. No TensorFlow import.

A ``Bench`` holds the baseline ``.tflite``, the data and the reference outputs. ``build`` turns
per-site configs into a ``.tflite`` (each site's lowering from ``aa_tflite.lowering.LOWERINGS``,
each ReLU site's consumer corrected towards the baseline), and ``measure`` runs a ``.tflite`` on
the evaluation data in batches.

Loss, in points (percent): the drop of the score (``aa_tflite.metrics``: by default, for a classifier,
top-1 accuracy with labels and top-1 agreement with the float model without; for other outputs a
relative error against float; several outputs combined) against the int8 baseline. For a
classifier, the output KL against the float model is measured too and breaks ties between options
of equal loss (``KL_WEIGHT`` points per nat).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aa_tflite.kept import Kept
from aa_tflite.lowering import LOWERINGS, LoweringForm, lowering_of
from aa_tflite.lowering.relu import fit_clip, fit_clip_bits, min_clip, site_edit
from aa_tflite.metrics import Scorer, make_scorer
from aa_tflite.precision import check_menu
from aa_tflite.runtime.interpreter import check_kernels, planning_threads, run_model
from aa_tflite.search import heap
from aa_tflite.search.calibrate import FitValues, nonzero_stats, tensor_values
from aa_tflite.search.tail import TailRunner
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import RELU_KIND, SiteGraph
from aa_tflite.tflite.kernel_math import affine_fit, affine_fit_stored
from aa_tflite.tflite.levels import Stored
from aa_tflite.tflite.safety import scale_problems
from aa_tflite.types import AAError, Kernels, MemoryMode, SiteConfig, check_sites

__all__ = ["KL_WEIGHT", "Bench", "Metrics", "UnsafeVariant", "candidates", "fit_clip",
           "kl_divergence", "min_clip", "site_edit", "sparse_bytes"]

KL_WEIGHT = 10.0  # loss points per nat of added output KL; only matters between equal top-1 losses


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What one run of a ``.tflite`` on the evaluation data gave.

    Attributes:
        accuracy: Top-1 accuracy against the labels, or None without labels.
        agreement: Top-1 agreement with the float model, or None without a reference.
        kl: Mean KL divergence (nats) from the float model's softmax, or None.
        outputs: The dequantized outputs (a list with several outputs).
        score: The score the loss is measured in (``Bench.scorer``), on a 0-1 scale.
    """

    accuracy: float | None
    agreement: float | None
    kl: float | None
    outputs: np.ndarray | list = dataclasses.field(repr=False)
    score: float = 0.0


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.reshape(len(z), -1).astype(np.float64)
    if np.all(z >= 0) and np.allclose(z.sum(axis=1), 1.0, atol=1e-2):
        p = z  # already probabilities
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    return np.clip(p, 1e-12, 1.0)


def kl_divergence(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Mean KL divergence (nats) of ``outputs``' softmax from ``reference``'s, per sample.

    Example:
        >>> kl_divergence(np.array([[2.0, 0.0]]), np.array([[2.0, 0.0]]))
        0.0
    """
    p, q = _softmax(np.asarray(reference)), _softmax(np.asarray(outputs))
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def sparse_bytes(elements: int, nonzeros: int, bits: int) -> int:
    """Zero-compressed bytes of one tensor: a bitmap plus the non-zeros, or dense if smaller."""
    dense = math.ceil(elements * bits / 8)
    return min(dense, math.ceil(elements / 8) + math.ceil(nonzeros * bits / 8))


def candidates(graph: SiteGraph, values: np.ndarray, *, memory: MemoryMode,
               sparsity_points: Sequence[float] = (10.0, 20.0, 30.0), per_channel: bool = False,
               bits: Sequence[int] | None = None) -> list[tuple[str, SiteConfig]]:
    """A site's candidate configs, labelled, from its calibration values.

    With ``memory="packed"`` only narrower precisions save memory, so the candidates are the
    ``bits`` menu (default ``precision.DEFAULT_MENU``), each at the clip ``fit_clip`` picks for it.
    With ``"packed+sparse"`` thresholds save memory too: the thresholds that add each of
    ``sparsity_points`` points of zeros, at 8 bits and at every precision of the menu.

    ``bits=()`` plans thresholds only (8-bit everywhere). With ``per_channel``, low-bit configs
    get ``clip=None``: ``Bench.build`` then gives each channel its own clip from the data
    (``SiteGraph.can_equalize`` sites only).

    Returns:
        ``(label, config)`` pairs, widest precision first; labels such as ``"4b"`` or
        ``"8b +10pt"`` are the same across sites, so reports and plots can line sites up.
    """
    menu = check_menu(bits)
    v = np.asarray(values, np.float64).reshape(-1)
    thresholds = [("", 0.0)]
    if memory == MemoryMode.PACKED_SPARSE and graph.can_threshold:
        zero = float(np.mean(v <= 0))
        for p in sparsity_points:
            t = float(np.quantile(v, min(zero + p / 100.0, 0.995)))
            if t > 0 and all(abs(t - u) > 1e-9 for _, u in thresholds):
                thresholds.append((f" +{p:g}pt", t))
    out = []
    for tag, t in thresholds:
        if t > 0:
            out.append((f"8b{tag}", SiteConfig(threshold=t)))
        if not graph.can_requantize:
            continue
        clips = {} if per_channel else fit_clip_bits(v, t, menu=menu)
        for b in menu:
            clip = None if per_channel else min_clip(clips[b], graph, b)
            out.append((f"{b}b{tag}", SiteConfig(threshold=t, clip=clip, bits=b)))
    return out


def _as_labels(y) -> np.ndarray:
    """Class indices flat; a float target (a mask, a map) as it is."""
    y = np.asarray(y)
    return y.reshape(-1) if y.dtype.kind in "iub" else y


# Positions (sample x pixel) a clip, range or correction is fitted on, at most: evenly spaced,
# so a large activation costs a fixed amount of time and memory (the digits models have 4,096).
FIT_POSITIONS = 200_000

# Runs of the same bytes (a plan the search verified, then a narrower menu's or the curve's equal
# plan; the curve's first step, one option already measured) are measured once: the last runs'
# metrics are kept, up to this many bytes of outputs.
MEASURED_BYTES = 64 << 20
# A whole run of the evaluation data longer than this makes variants, and the corrections'
# prefix runs, start from cuts.
TAIL_SECONDS = 0.25
# A fit that reads more values than this takes the fit lock. The fits read the stored int8
# values (a correction a block of rows at a time, a clip as counts per level), so what one holds
# is little more than its inputs: on MobileNetV2 at 224 (200,000 positions x at most 192
# channels) two fits run side by side.
_LOCKED_VALUES = 64 << 20


def _consumer_fit(got: FitValues, base: FitValues, tensor: int, *, common_slope: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel fit of ``base``'s values of ``tensor`` against ``got``'s: on the stored
    int8 values (exact sums) where both are int8, else on the dequantized values."""
    (g, g_quant), (t, t_quant) = got.stored(tensor), base.stored(tensor)
    if g.dtype == t.dtype == np.int8:
        return affine_fit_stored(g, g_quant, t, t_quant, common_slope=common_slope)
    return affine_fit(got.positions(tensor), base.positions(tensor), common_slope=common_slope)


class UnsafeVariant(AAError):
    """A variant whose scales a runtime cannot set up (it could abort the process)."""


class Bench:
    """Builds variants of one baseline ``.tflite`` and measures them in the interpreter.

    Args:
        base: The int8 baseline ``.tflite``.
        graphs: Its planning units (``aa_tflite.lowering.reach_all``).
        x_fit: Representative inputs: consumer corrections are fitted on them.
        x_eval: Inputs the loss is measured on.
        y_eval: Their labels, or None (with several outputs, a list of one or None per output).
        reference: The float model's outputs on ``x_eval`` (a list with several), or None.
        batch_size: Samples per invocation.
        equalize: Give low-bit ReLU sites without a clip per-channel ranges where the graph
            allows (``SiteGraph.can_equalize``).
        share_weights: Keep every int8 kernel of the baseline bit for bit, so the points of
            one file share their weights: a per-channel factor a site's readers would absorb
            (a correction's slope, an equalized range, a signed half-range) is fitted per
            channel only where every reader is depthwise (its filter scales take it), else as
            one factor for all channels. False folds them into the readers' kernels.
        kernels: The kernels losses are measured on: ``"builtin"`` (LiteRT's), ``"xnnpack"``
            or ``"tflm"``. Corrections are fitted on LiteRT's builtin kernels, which can show
            intermediate tensors.
        scorer: The metric per output (``aa_tflite.metrics.make_scorer``); None: the default.

    Example:
        >>> bench = Bench(base, graphs, x_fit=x_cal, x_eval=x_val, y_eval=y_val,
        ...               reference=None)  # doctest: +SKIP
        >>> bench.loss(bench.measure(bench.build({"conv1_relu": cfg})))  # doctest: +SKIP
    """

    def __init__(self, base: bytes, graphs: Mapping[str, SiteGraph], *,
                 x_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray | None,
                 reference: np.ndarray | list | None, batch_size: int = 64,
                 equalize: bool = True, kernels: str = "builtin",
                 scorer: Scorer | None = None, share_weights: bool = True) -> None:
        if y_eval is None and reference is None:
            raise AAError("Sensitivity needs labels or the float model's outputs to compare to.")
        self.base, self.graphs = bytes(base), dict(graphs)
        self.x_fit, self.x_eval = np.asarray(x_fit, np.float32), np.asarray(x_eval, np.float32)
        several = isinstance(reference, list) or isinstance(y_eval, list)
        self.references = (None if reference is None else
                           [np.asarray(r) for r in reference] if several else
                           [np.asarray(reference)])
        n = len(self.references) if self.references is not None else len(y_eval) if several else 1
        self.labels = (list(y_eval) if isinstance(y_eval, list) else
                       [None if y_eval is None else _as_labels(y_eval)] * n)
        self.y_eval = None if several else self.labels[0]
        self.reference = None if reference is None or several else self.references[0]
        self.scorer = scorer or make_scorer(
            None, None, shapes=[tuple(r.shape[1:]) for r in self.references or []] or [(2,)],
            labelled=[y is not None for y in self.labels])
        self.batch_size = batch_size
        self.equalize = equalize
        self.share_weights = share_weights
        # Interpreter threads per run; ``search.measure`` lowers it while it runs options on
        # several threads at once. Outputs do not depend on it (integer kernels).
        self.threads = planning_threads()
        ops, tensors = flatbuffer.describe(flatbuffer.read(self.base))
        self._op_names = [op.name for op in ops]
        self.kernels = check_kernels(kernels)
        # One preserved-tensor run of the baseline gives every value the bench needs from it:
        # site tensors and their groups (clips, sparsity) and consumer inputs (correction targets).
        needed = {t for g in self.graphs.values() for t in (g.tensor, *g.group)}
        needed |= {g.correction_consumer[1] for g in self.graphs.values()
                   if g.correction_consumer is not None}
        # A fit over _LOCKED_VALUES values (clips, corrections) waits for the other's to end.
        self._fit_lock = threading.Lock()
        self._measured = Kept()  # sha256 of a file -> its Metrics
        if len(self.x_fit) * sum(tensors[t].elements for t in needed) > heap.LARGE_PLAN:
            heap.map_large_allocations()  # a large model: its arrays go back when freed
        self.base_values = FitValues(self.base, sorted(needed), self.x_fit, limit=FIT_POSITIONS,
                                     batch_size=batch_size)
        self._tail: TailRunner | None = None
        start = time.perf_counter()
        self.baseline = self.measure(self.base)  # a whole run
        # Variants run from the latest cut before their first change (``search.tail``), where a
        # whole run takes long enough for that to pay (reading and cutting a variant costs ms).
        slow = time.perf_counter() - start > TAIL_SECONDS
        cut_values = functools.partial(tensor_values, batch_size=batch_size, keep_quantized=True)
        if self.kernels == Kernels.BUILTIN and slow:
            self._tail = TailRunner(self.base, self.x_eval, cut_values)
        # The corrections' prefix runs (on ``x_fit``, builtin kernels) start from cuts too.
        corrected = any(g.correction_consumer is not None for g in self.graphs.values())
        self._fit_tail = TailRunner(self.base, self.x_fit, cut_values, before=[
            g.producer for g in self.graphs.values()]) if slow and corrected else None
        # A consumer correction depends only on the configs of its site and the sites before it
        # in execution order: the key. Plans that share such a prefix (the curve's steps, the
        # single-site measurements) reuse the fit instead of running the model again.
        self._corrections: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._fitted: dict[tuple, Any] = {}  # (site, config, per channel) -> its lowering's edit

    def per_channel(self, graph: SiteGraph) -> bool:
        """Whether a low-bit unit without a clip gets per-channel ranges: equalized clips at a
        ReLU site, half-ranges at a signed tensor (else one for the tensor)."""
        if graph.lowering == RELU_KIND:
            return self.equalize and graph.can_equalize and self.absorbs(
                graph.correction_consumer[:1])
        return self.absorbs(graph.requant_consumers)

    def absorbs(self, readers: Sequence[int]) -> bool:
        """Whether ops ``readers`` may take a per-input-channel factor: always when kernels may
        change (``share_weights=False``), else only if each is depthwise (its filter scales
        take it)."""
        return not self.share_weights or all(
            self._op_names[k] == "DEPTHWISE_CONV_2D" for k in readers)

    def site_values(self, site: str) -> np.ndarray:
        """The baseline's values of a site's tensor on ``x_fit``, as ``(positions, channels)``,
        at most ``FIT_POSITIONS`` of them (``calibrate.fit_positions``): what clips and ranges
        are fitted on."""
        return self.base_values.positions(self.graphs[site].tensor)

    def unit_values(self, sites: Sequence[str], *, stored: bool = False) -> np.ndarray | Stored:
        """The baseline's values of a planning unit's site tensors: the site's own for one site,
        all of a tie's side by side (flattened) for several. ``stored``: one int8 site's as
        stored (``levels.Stored``)."""
        if stored and len(sites) == 1:
            raw, quant = self.base_values.stored(self.graphs[sites[0]].tensor)
            if raw.dtype == np.int8:
                return Stored(raw, *quant)
        if len(sites) == 1:
            return self.site_values(sites[0])
        return np.concatenate([self.site_values(s).reshape(-1) for s in sites])

    def order(self, sites) -> list[str]:
        """Sites in execution order (by their producer op)."""
        return sorted(sites, key=lambda s: (self.graphs[s].producer, s))

    def build(self, configs: Mapping[str, SiteConfig], *, correct: bool = True) -> bytes:
        """The baseline with ``configs`` written in, each site by its lowering, in the order of
        ``LOWERINGS``; each corrected lowering's (ReLU) site has its consumer corrected in turn.

        Sites are taken in execution order. Each one's correction is a per-channel least-squares
        fit, on ``x_fit``, of the baseline's consumer input against the consumer input of the model
        with this site (and the corrected sites before it) changed, so it also absorbs drift from
        upstream sites.

        Raises:
            AAError: A site is unknown, or its lowering cannot write its config.
            UnsafeVariant: The result has a scale a runtime cannot set up.
        """
        check_sites(configs, self.graphs, "The plan")
        choices: dict[str, dict[str, Any]] = {form.kind: {} for form in LOWERINGS}
        prefix: tuple = ()
        for site in self.order(configs):
            config, graph = configs[site], self.graphs[site]
            if config == SiteConfig():
                continue
            form = lowering_of(graph)
            chosen = choices[form.kind]
            key = (site, config, correct and self.per_channel(graph))
            if key not in self._fitted:  # the same config fits the same edit: fit it once
                with self._fitting(graph.tie or (site,)):
                    self._fitted[key] = form.fit(functools.partial(
                        self.unit_values, graph.tie or (site,)), config, graph,
                        per_channel=key[2])
            chosen[site] = self._fitted[key]
            if form.corrected:
                prefix += ((site, config),)
                if correct:
                    self._correct(site, configs, form, chosen, prefix)
        out = self.base
        for form in LOWERINGS:
            out = form.apply(out, self.graphs, choices[form.kind])
        problems = scale_problems(out)
        if problems:
            raise UnsafeVariant(f"The plan {sorted(s for c in choices.values() for s in c)} "
                                f"gives tensor {problems[0][0]} a scale the runtimes cannot run: "
                                f"{problems[0][2]}.")
        return out

    def _correct(self, site: str, configs: Mapping[str, SiteConfig], form: LoweringForm,
                 chosen: dict[str, Any], prefix: tuple) -> None:
        """Folds into ``site``'s choice the correction of its consumer, fitted with the choices
        so far written; a tie waits until all its sites are in (their scale is shared)."""
        graph = self.graphs[site]
        waiting = [m for m in graph.tie if m not in chosen and configs.get(m, SiteConfig())
                   != SiteConfig()]
        if graph.correction_consumer is None or waiting:
            return
        if prefix not in self._corrections:
            t_in = graph.correction_consumer[1]
            trial = form.apply(self.base, self.graphs, chosen)
            start = None if self._fit_tail is None else self._fit_tail.start(trial, [t_in])
            model, x = start or (trial, self.x_fit)
            got = FitValues(model, [t_in], x, limit=FIT_POSITIONS, batch_size=self.batch_size,
                            num_threads=self.threads, stored=start is not None)
            with self._fitting([], [t_in]):
                self._corrections[prefix] = _consumer_fit(
                    got, self.base_values, t_in,
                    common_slope=not self.absorbs(graph.correction_consumer[:1]))
        chosen[site] = dataclasses.replace(chosen[site], correction=self._corrections[prefix])

    def _fitting(self, sites: Sequence[str], tensors: Sequence[int] = ()) -> Any:
        """The fit lock when the fit reads more than ``_LOCKED_VALUES`` values (of ``sites``' or
        ``tensors``' kept positions), else no lock: a small fit runs beside another."""
        kept = [self.graphs[s].tensor for s in sites] + list(tensors)
        big = sum(self.base_values.size(t) for t in kept) > _LOCKED_VALUES
        return self._fit_lock if big else contextlib.nullcontext()

    def measure(self, tflite: bytes) -> Metrics:
        """Runs ``tflite`` on the evaluation data and compares it to the labels and the float model
        (once per file: equal bytes give the metrics of their last run, see ``MEASURED_BYTES``)."""
        key = hashlib.sha256(tflite).digest()
        got = self._measured.get(key)
        if got is not None:
            return got
        got = self._run(tflite)
        size = sum(np.asarray(o).nbytes for o in
                   (got.outputs if isinstance(got.outputs, list) else [got.outputs]))
        self._measured.put(key, got, size=size, limit=MEASURED_BYTES)
        return got

    def _run(self, tflite: bytes) -> Metrics:
        every = None if self._tail is None else self._tail.run(
            tflite, batch_size=self.batch_size, num_threads=self.threads)
        if every is None:
            every = run_model(tflite, self.x_eval, kernels=self.kernels,
                              batch_size=self.batch_size, num_threads=self.threads,
                              all_outputs=True)
        score = self.scorer.score(every, self.references, self.labels)
        if not self.scorer.classifier:
            return Metrics(None, None, None, every if len(every) > 1 else every[0], score)
        outputs = every[0]
        top = np.argmax(outputs.reshape(len(outputs), -1), axis=1)
        acc = None if self.y_eval is None else float(np.mean(top == self.y_eval))
        agree = kl = None
        if self.reference is not None:
            ref = self.reference.reshape(len(self.reference), -1)
            agree = float(np.mean(top == np.argmax(ref, axis=1)))
            kl = kl_divergence(ref, outputs)
        return Metrics(acc, agree, kl, outputs, score)

    def loss(self, m: Metrics) -> float:
        """Points of score lost against the baseline, >= 0 is worse."""
        return 100.0 * (self.baseline.score - m.score)

    def planning_loss(self, m: Metrics) -> float:
        """The loss the planner ranks by: points lost (never below 0) plus the KL tie-breaker."""
        extra = 0.0
        if m.kl is not None and self.baseline.kl is not None:
            extra = KL_WEIGHT * max(m.kl - self.baseline.kl, 0.0)
        return max(self.loss(m), 0.0) + extra

    def nonzeros(self, tflite: bytes, tensors: Sequence[int]) -> dict[int, int]:
        """Worst case over ``x_fit`` of each tensor's non-zero count in one sample."""
        return self.zero_stats(tflite, tensors)[0]

    def zero_stats(self, tflite: bytes, tensors: Sequence[int]
                   ) -> tuple[dict[int, int], dict[int, float]]:
        """``nonzeros`` and each tensor's fraction of zeros over ``x_fit``, read from its int8
        values (``calibrate.nonzero_stats``)."""
        tensors = sorted(set(tensors))
        if tflite == self.base and all(t in self.base_values for t in tensors):
            return self.base_values.zero_stats(tensors)
        values = tensor_values(tflite, tensors, self.x_fit, batch_size=self.batch_size,
                               num_threads=self.threads, keep_quantized=True)
        return nonzero_stats(values, tensors)

