"""The ReLU zero-point lowering: a ReLU output written below 8 bits by editing an int8 ``.tflite``'s
quantization parameters and constants. No op and no tensor is added, so the TFLM arena of an
edited model equals the plain int8 model's. No TensorFlow import.

Every variant of a model (one site changed for a sensitivity measurement, or a whole plan) is made
from one int8 conversion by editing its flatbuffer, never by reconverting. How each control of a
``SiteConfig`` is written:

* **b bits** (``aa_tflite.precision``; e.g. 4 bits: step ``clip / 15``): the site's output tensor
  is declared with scale ``clip / (2^b - 1)`` and zero point ``128 - 2^b``. The producer's fused
  ReLU/ReLU6 clamps below at the zero point and int8 saturates at 127, so the tensor holds the
  ``2^b`` levels ``128 - 2^b .. 127`` for any input, the top one being the clip. Ops that
  pass values through unchanged (pooling, reshape, pad, slices) carry the same parameters to
  their outputs, which stay within those levels. Weighted consumers get their
  int32 bias rescaled to the new input scale; other consumers read the parameters at run time.
* **clip** at 8 bits: scale ``clip / 255``, zero point ``-128``; int8 saturation is the clamp.
* **threshold** ``T`` (the ``shift`` form, ``max(x - T, 0)``): ``T`` is subtracted from the
  producer's bias, in its int32 units.
* **correction**: a per-channel affine ``a * y + b`` that brings the consumer's input back towards
  the baseline model's, folded into the one weighted consumer (its kernel and bias are requantized).

Sites whose tensors a ``CONCATENATION`` or ``PACK`` joins form a tie group and take one precision
and one clip together; a site feeding any other op whose inputs must share one scale cannot
change its parameters, and a site whose producer has no bias (e.g. a residual ``ADD``) cannot take
a threshold. ``aa_tflite.tflite.analyse`` says which, per site, and the report prints it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.kept import Kept
from aa_tflite.precision import precision
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import RELU_KIND, SiteGraph, analyse
from aa_tflite.tflite.kernel_math import open_model, write_params
from aa_tflite.tflite.levels import Stored, quantiles_from_counts
from aa_tflite.tflite.ops import opcode_index
from aa_tflite.types import AAError, Bits, SiteConfig, check_sites

__all__ = ["ReluZeroPoint", "SiteEdit", "apply_edits", "equalized_edit", "fit_clip", "fit_clip_bits",
           "min_clip", "site_edit"]

# TFLite Micro's standalone RELU6 clamps in the input's terms and copies (LiteRT's requantizes),
# so a RELU6 whose output gets new parameters is written as a RELU, which requantizes in both;
# int8 saturation at the clip (<= 6) is then the upper bound.
_RELU_CODE, _RELU_VERSION = schema.BuiltinOperator.RELU, 2
_CLIP_ROWS = 50_000  # values per channel a per-channel clip's error is measured on, at most
_CLIP_BLOCK = 16  # channels per error pass in fit_clips
_CLIP_QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)


@dataclasses.dataclass(frozen=True)
class SiteEdit:
    """The flatbuffer edit of one ReLU site.

    Attributes:
        threshold: Real-valued ``T`` subtracted from the producer's bias.
        scale: New scale of the site's tensors, or None to keep it.
        zero_point: New zero point (with ``scale``).
        correction: Per-channel ``(a, b)`` over the last axis of the correction consumer's input,
            folded into that consumer, or None.
        channel_scale: Per-output-channel factors ``s`` for the producer (its filter scales and
            bias are multiplied by them, the int8 kernel is unchanged), or None. With ReLU,
            ``relu(s * x) = s * relu(x)``, so this equalizes channel ranges before a per-tensor
            low-bit scale; the consumer's correction divides them out again.
    """

    threshold: float = 0.0
    scale: float | None = None
    zero_point: int | None = None
    correction: tuple[np.ndarray, np.ndarray] | None = None
    channel_scale: np.ndarray | None = None


@dataclasses.dataclass
class _Writes:
    """What a set of edits writes: activation parameters by tensor, and per weighted op (by
    index) a bias shift, a correction and channel scales."""

    params: dict[int, tuple[float, int]] = dataclasses.field(default_factory=dict)
    shifts: dict[int, float] = dataclasses.field(default_factory=dict)
    corrections: dict[int, tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict)
    scales: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def take(self, site: str, g: SiteGraph, edit: SiteEdit) -> None:
        """Adds one site's edit, refusing what its graph cannot take."""
        if edit.scale is not None:
            self.params.update(dict.fromkeys(g.group, _params(site, g, edit)))
        if edit.threshold:
            if not g.can_threshold:
                raise AAError(f"Site {site!r} cannot take a threshold: {'; '.join(g.notes)}")
            self.shifts[g.producer] = self.shifts.get(g.producer, 0.0) + float(edit.threshold)
        if edit.correction is not None:
            if g.correction_consumer is None:
                raise AAError(f"Site {site!r} has no single weighted consumer to correct.")
            self.corrections[g.correction_consumer[0]] = edit.correction
        if edit.channel_scale is not None:
            if not g.can_equalize:
                raise AAError(f"Site {site!r} cannot rescale its channels: it needs a per-channel "
                              "producer and one weighted consumer.")
            self.scales[g.producer] = np.asarray(edit.channel_scale, np.float64).reshape(-1)


def _params(site: str, g: SiteGraph, edit: SiteEdit) -> tuple[float, int]:
    """The scale and zero point an edit gives a site's tensors, if the site can take them."""
    if not g.can_requantize:
        raise AAError(f"Site {site!r} cannot change its bits or clip: {'; '.join(g.notes)}")
    if not (edit.scale > 0 and np.isfinite(edit.scale)):
        raise AAError(f"A site's scale must be a positive number. Received: {edit.scale}")
    return float(edit.scale), int(edit.zero_point if edit.zero_point is not None else -128)


def apply_edits(tflite: bytes, graphs: Mapping[str, SiteGraph],
                edits: Mapping[str, SiteEdit]) -> bytes:
    """Returns ``tflite`` with ``edits`` applied. No op or tensor is added; the input is not changed.

    Weighted ops whose kernel changes (a correction) are requantized per output channel; ops whose
    only change is a bias shift or a new input scale keep their int8 kernel bit for bit.

    Example:
        >>> four_bit = apply_edits(base, graphs, {"conv1_relu": SiteEdit(scale=0.1,
        ...                                       zero_point=112)})  # doctest: +SKIP

    Args:
        tflite: The int8 model's bytes.
        graphs: ``analyse`` of it.
        edits: Site name -> its edit.

    Raises:
        AAError: A site is unknown, or cannot take its edit.
    """
    if not edits:
        return bytes(tflite)
    check_sites(edits, graphs, "The edits")
    model, ops, tensors, users = open_model(tflite)
    writes = _Writes()
    for site, edit in edits.items():
        writes.take(site, graphs[site], edit)
    _check_ties(graphs, edits, ops)
    _relu6_as_relu(model, graphs, edits, writes.params)
    write_params(model, ops, tensors, writes.params, writes.shifts, writes.corrections,
                 writes.scales, users)
    return flatbuffer.write(model)


def _check_ties(graphs: Mapping[str, SiteGraph], edits: Mapping[str, SiteEdit], ops) -> None:
    """Refuses a tie group whose sites are not given the same scale and zero point."""
    for site, edit in edits.items():
        g = graphs[site]
        for other in g.tie:
            if edit.scale is not None and (other not in edits or (
                    edits[other].scale, edits[other].zero_point) != (edit.scale, edit.zero_point)):
                raise AAError(f"Sites {list(g.tie)} share one scale (they feed "
                              f"{', '.join(sorted({ops[k].name for k in g.joins}))}): give them "
                              f"the same bits and clip. Received a change for {site!r} only, "
                              "or different ones.")


def _relu6_as_relu(model: schema.ModelT, graphs: Mapping[str, SiteGraph],
                   edits: Mapping[str, SiteEdit], params: Mapping[int, tuple[float, int]]) -> None:
    """Writes each standalone RELU6 whose input or output gets new parameters as a RELU."""
    operators = model.subgraphs[0].operators
    for site in edits:
        g = graphs[site]
        if g.tensor not in params:
            continue
        if g.producer_op == "RELU6":
            scale, zp = params[g.tensor]
            if scale * (127 - zp) > 6.0 * (1 + 1e-6):
                raise AAError(f"Site {site!r} is a ReLU6: its clip must be at most 6. Received: "
                              f"clip={scale * (127 - zp):.4g}")
            _as_relu(model, operators[g.producer])
        for k in g.relu6_readers:
            _as_relu(model, operators[k])


def _as_relu(model: schema.ModelT, op: schema.OperatorT) -> None:
    op.opcodeIndex = opcode_index(model, _RELU_CODE, _RELU_VERSION)
    op.builtinOptionsType, op.builtinOptions = 0, None  # RELU takes no options, as RELU6


def fit_clip(values: np.ndarray, threshold: float = 0.0, *, bits: int = 4) -> float:
    """The clip that gives the ``bits``-bit quantization of ``max(v - T, 0)`` the least squared
    error.

    The candidates are quantiles of the positive values (50% ... 100%), so the clip comes from the
    data, never from a constant.

    Example:
        >>> round(fit_clip(np.linspace(0, 1, 1001)), 3)
        0.98
        >>> fit_clip(np.linspace(0, 1, 1001), bits=2) < fit_clip(np.linspace(0, 1, 1001), bits=6)
        True
    """
    return fit_clip_bits(values, threshold, menu=(bits,))[bits]


def fit_clip_bits(values: np.ndarray, threshold: float = 0.0, *,
                  menu: Sequence[int]) -> dict[int, float]:
    """``fit_clip`` at each precision of ``menu``, the positive values and their quantiles read
    once for all of them.

    Example:
        >>> v = np.linspace(0, 1, 1001)
        >>> fit_clip_bits(v, menu=(2, 6)) == {2: fit_clip(v, bits=2), 6: fit_clip(v, bits=6)}
        True
    """
    x = np.asarray(values, np.float64).reshape(-1)  # no copy of a float64 array
    pos = x[x > threshold]  # x - threshold > 0 exactly when x > threshold (IEEE)
    pos -= threshold
    if pos.size == 0:
        return dict.fromkeys(menu, 0.0)  # a dead site: callers raise it to the int8 step
    if pos.size > 200_000:  # a fixed subsample keeps this fast and deterministic
        x = x[np.linspace(0, x.size - 1, 200_000).astype(np.int64)]
    v = np.maximum(x - threshold, 0.0)
    quantiles = [float(c) for c in np.quantile(pos, _CLIP_QUANTILES, overwrite_input=True)]
    out = {}
    for bits in menu:
        top, best = precision(bits).top, None
        for c in quantiles:
            if c <= 0:
                continue
            step = c / top
            err = float(np.mean((v - np.clip(np.round(v / step), 0, top) * step) ** 2))
            if best is None or err < best[0] - 1e-15:
                best = (err, c)
        out[bits] = best[1] if best else float(pos.max())
    return out


def fit_clips(values: np.ndarray | Stored, threshold: float = 0.0, *, bits: int = 4
              ) -> np.ndarray:
    """``fit_clip`` of each channel (the last axis). A channel with no value above ``threshold``
    gets 0. The candidates are the same quantiles; their errors are measured on at most
    ``_CLIP_ROWS`` evenly spaced values per channel, so on a channel with fewer values the clip
    is ``fit_clip``'s exactly. Stored int8 values (``levels.Stored``) are counted per level
    instead: the same candidates, bit for bit, and the errors of every value.

    The values are read a channel (quantiles) or ``_CLIP_BLOCK`` channels (errors) at a time, so
    no float64 copy of the whole array is made; the quantiles of the same values at the same
    threshold are read once for every precision (``_clip_candidates``).

    Example:
        >>> v = np.stack([np.linspace(0, 1, 1001), np.linspace(0, 3, 1001)], axis=-1)
        >>> fit_clips(v).tolist() == [fit_clip(v[:, 0]), fit_clip(v[:, 1])]
        True
    """
    if isinstance(values, Stored):
        return _fit_clips_stored(values, float(threshold), precision(bits).top)
    x = np.asarray(values).reshape(-1, np.shape(values)[-1])
    cands = _clip_candidates(x, float(threshold))
    live = np.flatnonzero(cands[-1] > 0)  # the 100% quantile: the channel's largest value
    if len(x) > _CLIP_ROWS:  # a fixed subsample keeps this fast and deterministic
        x = x[np.linspace(0, len(x) - 1, _CLIP_ROWS).astype(np.int64)]
    out = np.zeros(x.shape[1])
    top = precision(bits).top
    for k in range(0, len(live), _CLIP_BLOCK):
        cols = live[k:k + _CLIP_BLOCK]
        v = np.maximum(x[:, cols].astype(np.float64) - threshold, 0.0)
        out[cols] = _best_clips(v, cands[:, cols], top)
    return out


_CANDIDATES = Kept()  # the last few _clip_candidates


def _clip_candidates(x: np.ndarray, threshold: float) -> np.ndarray:
    """The ``_CLIP_QUANTILES`` of each column's values above ``threshold`` (minus it), as
    ``(quantiles, columns)``; 0 for a column with none. Each column's are ``np.quantile`` of its
    positive values. The last few results are kept, keyed by the values' bytes: a unit's
    precisions share one read."""
    x = np.ascontiguousarray(x)
    key = (hashlib.blake2b(memoryview(x).cast("B"), digest_size=16).digest(), x.dtype.str,
           x.shape, threshold)
    cands = _CANDIDATES.get(key)
    if cands is not None:
        return cands
    cands = np.zeros((len(_CLIP_QUANTILES), x.shape[1]))
    for k in range(x.shape[1]):
        col = np.maximum(x[:, k].astype(np.float64) - threshold, 0.0)
        pos = col[col > 0]
        if pos.size:
            cands[:, k] = np.quantile(pos, _CLIP_QUANTILES, overwrite_input=True)
    _CANDIDATES.put(key, cands, limit=8)
    return cands


def _fit_clips_stored(values: Stored, threshold: float, top: int) -> np.ndarray:
    """``fit_clips`` from each channel's count of values per stored level: a value's error
    depends only on its level, so a channel's mean error is its counts' weighted mean."""
    level = np.maximum(values.level_values().astype(np.float64) - threshold, 0.0)
    counts = values.counts()
    pos = level > 0
    cands = np.array([quantiles_from_counts(level[pos], c[pos], _CLIP_QUANTILES)
                      for c in counts]).T
    weights = counts / max(int(counts[0].sum()), 1)
    best_err = np.full(len(counts), np.inf)
    best = np.zeros(len(counts))
    for c in cands:
        ok = c > 0
        step = (np.where(ok, c, 1.0) / top)[:, None]
        err = ((level - np.clip(np.round(level / step), 0, top) * step) ** 2 * weights).sum(axis=1)
        better = ok & (err < best_err - 1e-15)
        best_err, best = np.where(better, err, best_err), np.where(better, c, best)
    return np.where(cands[-1] > 0, best, 0.0)


def _best_clips(v: np.ndarray, cands: np.ndarray, top: int) -> np.ndarray:
    """Per column of ``v``, the first candidate clip (rows of ``cands``) with the least squared
    quantization error, as ``fit_clip`` picks it."""
    best_err = np.full(v.shape[1], np.inf)
    best = np.zeros(v.shape[1])
    for c in cands:
        ok = c > 0
        step = np.where(ok, c, 1.0) / top
        err = np.mean((v - np.clip(np.round(v / step), 0, top) * step) ** 2, axis=0)
        better = ok & (err < best_err - 1e-15)
        best_err, best = np.where(better, err, best_err), np.where(better, c, best)
    return best


def min_clip(clip: float, graph: SiteGraph, bits: int = 4) -> float:
    """``clip``, raised so the ``bits``-bit step is never finer than the site's int8 step (a finer
    step only spreads the same int8 values thinner, and a tiny scale overflows the kernel's
    clamp)."""
    return max(float(clip), precision(bits).top * graph.scale)


def site_edit(config: SiteConfig, graph: SiteGraph) -> SiteEdit:
    """The flatbuffer edit (without correction) that writes ``config`` at a site."""
    if config.bits != Bits.INT8 and config.clip is None:
        raise AAError(f"Site {graph.name!r}: a {int(config.bits)}-bit config needs a clip (the "
                      "value of the top level). aa_tflite.convert picks one from the data.")
    if config.clip is None:
        return SiteEdit(threshold=config.threshold)
    p = precision(config.bits)
    return SiteEdit(threshold=config.threshold, scale=p.step(config.clip),
                    zero_point=p.zero_point)


def equalized_edit(values: np.ndarray | Stored, config: SiteConfig, graph: SiteGraph
                   ) -> SiteEdit:
    """A low-bit edit with per-channel ranges equalized: each channel gets its own clip (from
    ``values``, channels on the last axis), scaled up to the largest one so one tensor scale
    serves all."""
    p = precision(config.bits)
    clips = fit_clips(values, config.threshold, bits=p.bits)
    top = min_clip(float(clips.max()), graph, p.bits)
    scale = np.where(clips > 0, top / np.maximum(clips, 1e-30), 1.0)
    scale = np.clip(scale, 1.0, 1e4)
    return SiteEdit(threshold=config.threshold, scale=p.step(top), zero_point=p.zero_point,
                    channel_scale=scale)


class ReluZeroPoint:
    """ReLU outputs below 8 bits through their zero point and scale (``apply_edits``); the one
    lowering whose choices are corrected, each consumer towards the baseline in turn."""

    kind = RELU_KIND
    corrected = True

    def reach(self, tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], dict[int, str]]:
        return analyse(tflite, site_tensors), {}

    def fit(self, values: Callable[..., Any], config: SiteConfig, unit: SiteGraph, *,
            per_channel: bool = False) -> SiteEdit:
        """The edit of ``config``; a low-bit config without a clip gets one from the data (one
        per channel, equalized, with ``per_channel``)."""
        if config.bits == Bits.INT8 or config.clip is not None:
            return site_edit(config, unit)
        if per_channel:  # the stored int8 values where there are (counted per level)
            return equalized_edit(values(stored=True), config, unit)
        b = int(config.bits)
        clip = min_clip(fit_clip(values(), config.threshold, bits=b), unit, b)
        return site_edit(dataclasses.replace(config, clip=clip), unit)

    def apply(self, tflite: bytes, units: Mapping[str, SiteGraph],
              choices: Mapping[str, SiteEdit]) -> bytes:
        return apply_edits(tflite, units, choices)

    def describe(self, config: SiteConfig, unit: SiteGraph,
                 zero_point: tuple[float, int] | None) -> str:
        q = zero_point
        parts = []
        if config.bits != Bits.INT8 and q is not None:
            p = precision(config.bits)
            how = ("per-channel clips from the data, equalized through the producer's filter "
                   "scales" if config.clip is None and unit.can_equalize else
                   "one clip for the tensor")
            parts.append(f"{p.bits}-bit: int8 tensor, zero point {q[1]}, scale {q[0]:.4g}, top "
                         f"level {p.top * q[0]:.4g} ({p.levels} levels, no op added); {how}")
        elif config.clip is not None and q is not None:
            parts.append(f"clip via int8 saturation, scale {q[0]:.4g}")
        if config.threshold:
            parts.append(f"threshold folded into {unit.producer_op} bias")
        if parts and unit.correction_consumer is not None:
            parts.append(f"consumer op {unit.correction_consumer[0]} corrected")
        return "; ".join(parts) if parts else "plain int8"
