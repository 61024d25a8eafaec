"""Zero-cost low-bit lowering of *signed* activations: the output of a weighted op with no ReLU.

``aa_tflite.lowering.relu`` lowers ReLU outputs: scale ``clip / (2^b - 1)`` and zero point
``128 - 2^b``, held to ``2^b`` levels by the producer's fused ReLU clamping at the zero point.
A tensor written by a ``CONV_2D``, ``DEPTHWISE_CONV_2D`` or ``FULLY_CONNECTED`` with fused
activation ``NONE`` (the depthwise half of a separable conv, a linear bottleneck) has no such
clamp. This module gives it one, with the producer's fused ``RELU_N1_TO_1``, by rewriting only
quantization parameters, constants and that fused activation: no op and no tensor is added, so the
TFLite Micro arena is unchanged. No TensorFlow import.

The lowering of tensor ``y`` (channels ``k``) to ``b`` bits, ``b`` below 8 (``LOW_BITS``):

* ``fit`` picks per channel a centre ``c_k`` and half-range ``m_k`` so the grid
  ``c_k + m_k * (-1, -1 + s, ..., 1 - s)``, ``s = 1 / 2^(b-1)`` (``2^b`` levels, step
  ``m_k * s``, from ``lo`` to ``hi``) has the least squared error on calibration values; ``lo`` and
  ``hi`` are quantiles of the channel's values, never a constant. The step is never below the
  baseline's int8 step.
* Producer: its per-channel filter scales become ``f_k / m_k`` (the int8 kernel is unchanged, bit
  for bit; it is requantized only when the producer also reads another lowered tensor) and its
  real bias ``(bias_k - c_k) / m_k``, so it computes ``y'_k = (y_k - c_k) / m_k``; its fused
  activation becomes ``RELU_N1_TO_1``. The tensor gets scale ``s`` and zero point
  ``z = 128 - 2^(b-1)``. The kernels clamp to ``[z + round(-1 / s), z + round(1 / s)]`` intersected
  with ``[-128, 127]``, i.e. ``[128 - 2^b, 128]`` then ``[128 - 2^b, 127]``: exactly the ``2^b``
  levels of the ReLU zero-point form, for any input. ``1 / s = 2^(b-1)`` is an exact integer, so
  every runtime's rounding gives the same bounds: LiteRT's builtin kernels and TFLite Micro
  (``CalculateActivationRangeQuantized`` in ``tensorflow/lite/kernels/kernel_util.cc``:
  ``zero_point + TfLiteRound(-1.0 / scale)`` and ``... (1.0 / scale)``, clamped to int8), and
  XNNPACK (the delegate maps ``kTfLiteActReluN1To1`` to ``output_min = -1``, ``output_max = +1``,
  which XNNPACK quantizes with ``xnn_qs8_quantize``: ``lrintf(clamp(v / scale + zero_point,
  -128, 127))``).
* Every consumer (a weighted op reading the tensor as input 0, with a bias) absorbs
  ``y = m * y' + c``: its kernel's weights on input channel ``k`` are multiplied by ``m_k``
  (requantized per output channel) and its bias gains ``sum(w * c)``. That is exact except where a
  ``'same'`` convolution with a kernel larger than 1x1 reads zero padding: the padding is now
  ``y' = 0``, i.e. ``y = c``, where the baseline read ``y = 0`` (the same approximation as
  the ReLU lowering's consumer correction). 1x1 convolutions and fully-connected consumers are exact.

What it does not reach (``reachable`` says which, per tensor, in ``notes``): a signed tensor read
by anything but a weighted op's input 0 (``ADD`` of a residual, pooling, ``CONCATENATION``, a
reshape: they cannot absorb the half-range and centre), a model output, a producer without a bias
or with a per-tensor filter scale, and signed tensors not written by a weighted op (e.g. the
output of a residual ``ADD``).

``apply`` composes with ``relu.apply_edits``: it reads the current scales from the file.
``SignedClamp`` is this lowering's entry in ``aa_tflite.lowering.LOWERINGS``; a signed tensor
read by a residual ``ADD`` may take the offset form instead (``aa_tflite.lowering.offset``).

Example:
    >>> graphs = reachable(tflite)  # doctest: +SKIP
    >>> ok = [t for t, g in graphs.items() if g.ok]  # doctest: +SKIP
    >>> values = tensor_values(tflite, ok, x_cal)  # doctest: +SKIP
    >>> lowered = apply(tflite, {t: SignedChoice(4, *fit(values[t], 4)) for t in ok})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.lowering.offset import fit_offset
from aa_tflite.lowering.tensor_edit import (
    HI_QUANTILES,
    LO_QUANTILES,
    TensorLowering,
    edit_tensors,
    subsample,
)
from aa_tflite.precision import LOW_BITS, precision
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.tflite.flatbuffer import OpInfo, TensorInfo
from aa_tflite.tflite.kernel_math import (
    absorb_input,
    channel_vector,
    input_scale_factor,
    read_kernel,
    real_bias,
    set_quant,
    store_bias,
    store_weights,
    weight_notes,
)
from aa_tflite.tflite.ops import SHAPE_ONLY, WEIGHTED, consumers
from aa_tflite.types import AAError, SiteConfig

__all__ = ["SIGNED_BITS", "SignedChoice", "SignedClamp", "SignedGraph", "apply", "fit", "grid",
           "reachable"]

# Bit widths with a signed lowering (8 bits is the plain int8 tensor, left as is).
SIGNED_BITS: tuple[int, ...] = LOW_BITS  # every precision below 8
_RELU_N1_TO_1 = schema.ActivationFunctionType.RELU_N1_TO_1
_NOT_SIGNED = ("Tensor {t} is not a signed activation (the output of a weighted op with no fused "
               "activation). Signed tensors: {known}")


@dataclasses.dataclass(frozen=True)
class SignedGraph:
    """A signed activation tensor (a weighted op's output with fused ``NONE``) and its readers.

    Attributes:
        tensor: Index of the tensor in subgraph 0.
        producer: Index of the op that writes it.
        producer_op: That op's name, e.g. ``DEPTHWISE_CONV_2D``.
        consumers: Indices of the ops that read it.
        channels: Size of its last axis (the per-channel centre and half-range have this length).
        notes: Why it cannot be lowered, in words; empty when it can.
        scale: Its current int8 scale (the baseline's step).
    """

    tensor: int
    producer: int
    producer_op: str
    consumers: tuple[int, ...]
    channels: int
    notes: tuple[str, ...]
    scale: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the signed lowering can be applied to this tensor."""
        return not self.notes


@dataclasses.dataclass(frozen=True)
class SignedChoice:
    """The lowering of one signed tensor.

    Attributes:
        bits: One of ``LOW_BITS`` (8 leaves the tensor as it is).
        centre: Per-channel centre ``c`` (real units), shape ``(channels,)`` or a scalar.
        half_range: Per-channel half-range ``m`` > 0: the levels are ``c + m * (-1 .. 1 - s)``.
    """

    bits: int
    centre: np.ndarray | float
    half_range: np.ndarray | float


def reachable(tflite: bytes) -> dict[int, SignedGraph]:
    """Every int8 tensor written by a weighted op with fused activation ``NONE``, and whether the
    signed lowering reaches it.

    A tensor is reachable (``notes`` empty) when its producer has a per-channel int8 filter and a
    bias, it is not a model output, and every op that reads it is a ``CONV_2D``,
    ``DEPTHWISE_CONV_2D`` or ``FULLY_CONNECTED`` reading it as input 0, with a bias.

    Example:
        >>> graphs = reachable(open("mini_xception.tflite", "rb").read())  # doctest: +SKIP
        >>> [(t, g.producer_op) for t, g in graphs.items() if g.ok]  # doctest: +SKIP
        [(28, 'DEPTHWISE_CONV_2D'), (30, 'DEPTHWISE_CONV_2D'), ...]
        >>> graphs[33].notes  # doctest: +SKIP
        ('read by ADD (op 7), which cannot absorb the half-range and centre',)

    Args:
        tflite: The model's bytes.

    Returns:
        Tensor index -> ``SignedGraph``, in tensor order.
    """
    ops, tensors, returned = flatbuffer.describe_bytes(tflite)  # once per variant: the fast read
    readers = consumers(ops)
    outputs = set(returned)
    out: dict[int, SignedGraph] = {}
    for op in ops:
        if op.name not in WEIGHTED or op.fused_activation != "NONE" or not op.outputs:
            continue
        t = op.outputs[0]
        info = tensors[t]
        if info.dtype != "INT8" or not info.scale:
            continue
        channels = int(info.shape[-1]) if info.shape else 1
        notes: list[str] = []
        if t in outputs:
            notes.append("graph output: its values are the model's result, not an intermediate")
        notes += weight_notes(op, tensors, "its producer")
        w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        if w is not None and len(w.scale) <= 1 < channels:
            notes.append(f"its producer {op.name} (op {op.index}) has one filter scale for all "
                         "channels, not one per channel")
        if len(info.scale) > 1:
            notes.append("it is quantized per channel")
        users = [(c, pos) for c, pos in readers.get(t, []) if c.name not in SHAPE_ONLY]
        if not users and t not in outputs:
            notes.append("no op reads it")
        for c, pos in users:
            notes += _reader_notes(c, pos, tensors, channels)
        out[t] = SignedGraph(t, op.index, op.name, tuple(sorted({c.index for c, _ in users})),
                             channels, tuple(dict.fromkeys(notes)), float(info.scale[0]))
    return dict(sorted(out.items()))


def _reader_notes(c: OpInfo, pos: int, tensors: list[TensorInfo], channels: int) -> list[str]:
    """Why op ``c``, reading a signed tensor of ``channels`` channels as input ``pos``, cannot
    absorb its centre and half-range, if it cannot."""
    if c.name not in WEIGHTED:
        return [f"read by {c.name} (op {c.index}), which cannot absorb the half-range and centre"]
    if pos != 0:
        return [f"read by {c.name} (op {c.index}) as a weight, not as its input"]
    notes = weight_notes(c, tensors, "its consumer")
    cw = tensors[c.inputs[1]] if len(c.inputs) > 1 and c.inputs[1] >= 0 else None
    if cw is not None and cw.shape:
        fan = cw.shape[-1]  # CONV_2D (o, h, w, in), FC (o, in), DW (1, h, w, in * m)
        ok = fan % channels == 0 if c.name == "FULLY_CONNECTED" else (
            fan == channels if c.name == "CONV_2D" else fan % channels == 0)
        if not ok:
            notes.append(f"its consumer {c.name} (op {c.index}) does not read its "
                         "channels one per kernel column (e.g. a grouped conv)")
    return notes


def _int8_step(v: np.ndarray) -> float:
    """The smallest gap between distinct values: the int8 step of dequantized int8 values."""
    u = np.unique(v)
    d = np.diff(u)
    d = d[d > 1e-12 * max(1.0, float(np.abs(u).max()) if u.size else 1.0)]
    return float(d.min()) if d.size else 0.0


def fit(values: np.ndarray, bits: int, *, min_step: float | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(centre, half_range)`` with the least squared ``bits``-bit error on ``values``.

    For each channel, the candidate grids run from a low quantile ``lo`` (0, 0.1, 0.5, 2, 5 %) to
    a high one ``hi`` (100 ... 95 %) in ``2^bits`` levels; the one with the least squared error
    wins. Its step ``(hi - lo) / (2^bits - 1)`` is raised to ``min_step`` when finer (the grid then
    starts at ``lo`` and reaches past ``hi``).

    Example:
        >>> v = np.stack([np.linspace(-1, 3, 1001), np.linspace(0, 1, 1001)], axis=-1)
        >>> c, m = fit(v, 4)
        >>> np.round(c, 3).tolist(), np.round(m, 3).tolist()
        ([1.128, 0.532], [2.048, 0.512])

    Args:
        values: Calibration values of the tensor, channels on the last axis (e.g. from
            ``calibrate.tensor_values``).
        bits: One of ``LOW_BITS``.
        min_step: The smallest step allowed, e.g. the baseline's int8 scale. Defaults to the
            smallest gap between distinct values (the int8 step, for dequantized int8 values).

    Returns:
        ``centre`` and ``half_range``, each shaped ``(channels,)``; the grid's levels are
        ``centre + half_range * k / 2^(bits-1)``, ``k = -2^(bits-1) .. 2^(bits-1) - 1``.
    """
    if int(bits) not in SIGNED_BITS:
        raise AAError(f"bits must be one of {list(SIGNED_BITS)} for a signed lowering. "
                      f"Received: bits={bits!r}")
    levels = precision(bits).levels
    v = np.asarray(values, np.float64)
    if v.ndim == 0 or v.size == 0 or not np.all(np.isfinite(v)):
        raise AAError("values must be a non-empty finite array with channels on the last axis.")
    v = v.reshape(-1, v.shape[-1])
    floor = _int8_step(v) if min_step is None else float(min_step)
    v = subsample(v)
    # Quantiles that are values of the data, so a grid floored at the int8 step from ``lo`` holds
    # the int8 values between ``lo`` and ``hi`` exactly.
    lo_q = np.quantile(v, LO_QUANTILES, axis=0, method="lower")  # (n_lo, C)
    hi_q = np.quantile(v, HI_QUANTILES, axis=0, method="higher")
    best_err = np.full(v.shape[1], np.inf)
    best_lo, best_step = lo_q[0].copy(), np.zeros(v.shape[1])
    for lo in lo_q:
        for hi in hi_q:
            step = np.maximum((hi - lo) / (levels - 1), floor)
            start = lo
            safe = np.where(step > 0, step, 1.0)
            k = np.clip(np.round((v - start) / safe), 0, levels - 1)
            err = np.mean((v - (start + k * step)) ** 2, axis=0)
            better = err < best_err - 1e-15
            best_err = np.where(better, err, best_err)
            best_lo = np.where(better, start, best_lo)
            best_step = np.where(better, step, best_step)
    # A dead channel (one value, and no floor): any positive step keeps it exact.
    best_step = np.where(best_step > 0, best_step, np.maximum(np.abs(best_lo), 1.0) * 2.0 ** -10)
    half = best_step * levels / 2
    return best_lo + half, half


def grid(centre: np.ndarray | float, half_range: np.ndarray | float, bits: int) -> np.ndarray:
    """The real values the lowered tensor can take, per channel: shape ``(2^bits, channels)``.

    Example:
        >>> grid(0.0, 1.0, 2).ravel().tolist()
        [-1.0, -0.5, 0.0, 0.5]
    """
    half = 2 ** (int(bits) - 1)
    k = np.arange(-half, half, dtype=np.float64)[:, None] / half
    return np.atleast_1d(np.asarray(centre, np.float64))[None, :] + k * np.atleast_1d(
        np.asarray(half_range, np.float64))[None, :]


def _write(model: schema.ModelT, ops: list[OpInfo], tensors: list[TensorInfo],
           users: Mapping[int, int], chosen: list[tuple[int, SignedChoice, SignedGraph]]) -> None:
    """Writes the signed lowering of each chosen tensor into the unpacked ``model``."""
    new_params: dict[int, tuple[float, int]] = {}
    out_side: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    in_side: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for t, choice, g in chosen:
        if not g.ok:
            raise AAError(f"Tensor {t} cannot take the signed lowering: {'; '.join(g.notes)}")
        if int(choice.bits) not in SIGNED_BITS:
            raise AAError(f"Tensor {t}: bits must be one of {[8, *SIGNED_BITS]}. Received: "
                          f"bits={choice.bits!r}")
        half = 2 ** (int(choice.bits) - 1)
        c = channel_vector(choice.centre, g.channels, "centre", t)
        m = channel_vector(choice.half_range, g.channels, "half_range", t)
        if np.any(m <= 0):
            raise AAError(f"Tensor {t}: half_range must be positive. Received: min {m.min():.3g}")
        m = np.maximum(m, g.scale * half)  # the step m / 2^(b-1) is never below the int8 step
        new_params[t] = (1.0 / half, 128 - half)
        out_side[g.producer] = (c, m)
        for k in g.consumers:
            in_side[k] = (c, m)
    for k in sorted(set(out_side) | set(in_side)):
        _edit_op(model, ops[k], tensors, new_params, in_side.get(k), out_side.get(k), users)
    for t, (scale, zp) in new_params.items():
        set_quant(model.subgraphs[0].tensors[t], [scale], [zp], 0)


def apply(tflite: bytes, choices: Mapping[int, SignedChoice]) -> bytes:
    """Returns ``tflite`` with each chosen signed tensor lowered; the input is not changed.

    No op or tensor is added: the producers' filter scales, biases and fused activation
    (``RELU_N1_TO_1``), the tensors' scale and zero point, and the consumers' kernels and biases
    change. A half-range whose step would be finer than the tensor's current int8 step is raised
    to it. Choices with ``bits=8`` are skipped. Current scales are read from ``tflite``, so this
    composes with ``relu.apply_edits`` (before or after it).

    Example:
        >>> c, m = fit(values, 4)  # doctest: +SKIP
        >>> four_bit = apply(tflite, {28: SignedChoice(4, c, m)})  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        choices: Tensor index (a key of ``reachable``) -> its lowering.

    Returns:
        The edited model's bytes.

    Raises:
        AAError: A tensor is not reachable, or a choice is malformed.
    """
    return edit_tensors(tflite, choices, reachable, _write, _NOT_SIGNED)


def _edit_op(model: schema.ModelT, op: OpInfo, tensors: list[TensorInfo],
             new_params: Mapping[int, tuple[float, int]], in_side, out_side,
             users: Mapping[int, int]) -> None:
    """Rewrites one weighted op's kernel, filter scales and bias for a lowered input and/or output.

    In real units: input side ``w[..., k] *= m_k``, ``bias += sum(w * c)``; output side
    ``w[o] /= m_o``, ``bias_o = (bias_o - c_o) / m_o``. The int8 kernel is requantized per output
    channel only when the input side changes it; otherwise the filter scales absorb ``1 / m``.
    """
    graph = model.subgraphs[0]
    inp = op.inputs[0]
    k = read_kernel(model, op, tensors)
    w = k.w
    in_old = tensors[inp].scale[0]
    in_new = new_params.get(inp, (in_old, 0))[0]
    bias = real_bias(model, op, tensors, k)
    factor = np.ones(k.n_out)  # per-output-channel filter-scale factors (None: requantize)
    if in_side is not None:
        c, m = in_side
        w, bias = absorb_input(op.name, w, bias, m, c)
        moved = input_scale_factor(op.name, k, m)  # a common half-range moves to the scales
        factor = None if moved is None else factor * moved
    if out_side is not None:
        c, m = out_side
        bias = (bias - c) / m
        w = w / k.broadcast(m)
        factor = None if factor is None else factor / m
    new_scale = store_weights(model, op, k, w, factor, users)
    store_bias(model, op, tensors, bias, in_new, new_scale, users)
    if out_side is not None:
        graph.operators[op.index].builtinOptions.fusedActivationFunction = _RELU_N1_TO_1


class SignedClamp(TensorLowering):
    """Signed tensors below 8 bits under a fused ``RELU_N1_TO_1`` (``apply``): units named
    ``signed:<tensor name>``."""

    kind = "signed"
    form = "signed"
    how = ("clamps with a fused RELU_N1_TO_1 around per-channel centres, its consumers absorb "
           "them")
    apply_tensors = staticmethod(apply)

    def reach(self, tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], dict[int, str]]:
        """Every signed tensor ``reachable`` takes, as a unit; a note for each one it does not."""
        _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        units: dict[str, SiteGraph] = {}
        unreached: dict[int, str] = {}
        for t, g in sorted(reachable(tflite).items()):
            name = f"signed:{tensors[t].name.split(';')[0]}"
            if name in units:
                name = f"{name}#{t}"
            if not g.ok:
                unreached[t] = (f"{name} (tensor {t}, {g.producer_op} output, signed): stays "
                                "int8: " + "; ".join(g.notes))
                continue
            units[name] = SiteGraph(
                name=name, lowering=self.kind, tensor=t, group=(t,), producer=g.producer,
                producer_op=g.producer_op, requant_consumers=g.consumers, can_requantize=True,
                notes=(f"signed {g.producer_op} output: its producer gets a fused RELU_N1_TO_1 "
                       "clamp and its consumers absorb the per-channel centre and half-range",),
                scale=g.scale)
        return units, unreached

    def fit(self, values: Callable[[], np.ndarray], config: SiteConfig, unit: SiteGraph, *,
            per_channel: bool = True) -> SignedChoice:
        """Per-channel centre and half-range from the data, or one half-range ``clip`` about
        zero when the config gives one. Without ``per_channel``, the half-range is one for all
        channels (per-channel centres), so a reader that is not depthwise keeps its int8 kernel
        bit for bit."""
        if config.threshold:
            raise AAError(f"{unit.name!r} is a signed tensor: it takes bits (and a clip), not a "
                          f"threshold. Received: threshold={config.threshold}")
        b = int(config.bits)
        if b == 8:
            raise AAError(f"{unit.name!r} is a signed tensor: give it bits below 8, or leave it "
                          "out of the plan to keep it at int8.")
        if config.clip is not None:
            return SignedChoice(b, 0.0, float(config.clip))
        if not per_channel:  # one half-range: its readers take it in their filter scales
            low, width = fit_offset(values(), b, min_step=unit.scale)
            half = width / precision(b).top * precision(b).levels / 2
            return SignedChoice(b, low + half, half)
        centre, half = fit(values(), b, min_step=unit.scale)
        return SignedChoice(b, centre, half)
