"""Zero-cost low-bit lowering of *signed* activations: the output of a weighted op with no ReLU.

``aa_tflite.tflite.quantedit`` lowers ReLU outputs: scale ``clip / (2^b - 1)`` and zero point
``128 - 2^b``, held to ``2^b`` levels by the producer's fused ReLU clamping at the zero point.
A tensor written by a ``CONV_2D``, ``DEPTHWISE_CONV_2D`` or ``FULLY_CONNECTED`` with fused
activation ``NONE`` (the depthwise half of a separable conv, a linear bottleneck) has no such
clamp. This module gives it one, with the producer's fused ``RELU_N1_TO_1``, by rewriting only
quantization parameters, constants and that fused activation: no op and no tensor is added, so the
TFLite Micro arena is unchanged. No TensorFlow import.

The lowering of tensor ``y`` (channels ``k``) to ``b`` bits, ``b`` in 6, 5, 4, 3, 2:

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
  ``quantedit``'s consumer correction). 1x1 convolutions and fully-connected consumers are exact.

What it does not reach (``reachable`` says which, per tensor, in ``notes``): a signed tensor read
by anything but a weighted op's input 0 (``ADD`` of a residual, pooling, ``CONCATENATION``, a
reshape: they cannot absorb the half-range and centre), a model output, a producer without a bias
or with a per-tensor filter scale, and signed tensors not written by a weighted op (e.g. the
output of a residual ``ADD``).

``apply`` composes with ``quantedit.apply_edits``: it reads the current scales from the file.

Example:
    >>> graphs = reachable(tflite)  # doctest: +SKIP
    >>> ok = [t for t, g in graphs.items() if g.ok]  # doctest: +SKIP
    >>> values = tensor_values(tflite, ok, x_cal)  # doctest: +SKIP
    >>> lowered = apply(tflite, {t: SignedChoice(4, *fit(values[t], 4)) for t in ok})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.precision import precision
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.quantedit import (
    _WEIGHTED,
    _absorb_input,
    _array,
    _buffer_users,
    _kernel,
    _per_channel,
    _set_filter_scale,
    _set_quant,
    _store_bias,
    _store_kernel,
)
from aa_tflite.types import AAError

__all__ = ["SIGNED_BITS", "OffsetChoice", "OffsetGraph", "SignedChoice", "SignedGraph", "apply",
           "apply_offset", "fit", "fit_offset", "grid", "offset_reachable", "reachable"]

# Bit widths with a signed lowering (8 bits is the plain int8 tensor, left as is).
SIGNED_BITS: tuple[int, ...] = (6, 5, 4, 3, 2)
_RELU_N1_TO_1 = schema.ActivationFunctionType.RELU_N1_TO_1
_SHAPE_ONLY = {"SHAPE"}
# Quantiles tried for the bottom and top level of each channel's grid.
_LO_QUANTILES = (0.0, 0.001, 0.005, 0.02, 0.05)
_HI_QUANTILES = tuple(1.0 - q for q in _LO_QUANTILES)
_FIT_SAMPLES = 20_000


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
        bits: 6, 5, 4, 3 or 2 (8 leaves the tensor as it is).
        centre: Per-channel centre ``c`` (real units), shape ``(channels,)`` or a scalar.
        half_range: Per-channel half-range ``m`` > 0: the levels are ``c + m * (-1 .. 1 - s)``.
    """

    bits: int
    centre: np.ndarray | float
    half_range: np.ndarray | float


def _open(tflite: bytes):
    """The model to edit, its ops and tensors, and how many tensors use each buffer."""
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    return model, ops, tensors, _buffer_users(model)


def _real_bias(model, op, tensors, k) -> np.ndarray:
    """A weighted op's int32 bias in real units: at its own scale, or at input scale x filter
    scale where the file gives none."""
    b_scale = tensors[op.inputs[2]].scale
    b_scale = (_per_channel(b_scale, k.n_out) if b_scale
               else tensors[op.inputs[0]].scale[0] * k.scale)
    return _array(model, op.inputs[2], np.int32).astype(np.float64) * b_scale


def _readers(ops) -> dict[int, list[tuple[object, int]]]:
    out: dict[int, list[tuple[object, int]]] = {}
    for op in ops:
        for pos, t in enumerate(op.inputs):
            if t >= 0:
                out.setdefault(t, []).append((op, pos))
    return out


def _weight_notes(op, tensors, what: str) -> list[str]:
    """Why a weighted op's kernel and bias cannot be edited, if they cannot."""
    notes = []
    w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if w is None or w.dtype != "INT8" or not w.is_constant:
        notes.append(f"{what} {op.name} (op {op.index}) has no constant int8 kernel")
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        notes.append(f"{what} {op.name} (op {op.index}) has no bias to absorb the centre")
    elif tensors[op.inputs[2]].dtype != "INT32" or not tensors[op.inputs[2]].is_constant:
        notes.append(f"{what} {op.name} (op {op.index}) has no constant int32 bias")
    return notes


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
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    graph = model.subgraphs[0]
    readers = _readers(ops)
    outputs = {int(t) for t in (graph.outputs if graph.outputs is not None else [])}
    out: dict[int, SignedGraph] = {}
    for op in ops:
        if op.name not in _WEIGHTED or op.fused_activation != "NONE" or not op.outputs:
            continue
        t = op.outputs[0]
        info = tensors[t]
        if info.dtype != "INT8" or not info.scale:
            continue
        channels = int(info.shape[-1]) if info.shape else 1
        notes: list[str] = []
        if t in outputs:
            notes.append("graph output: its values are the model's result, not an intermediate")
        notes += _weight_notes(op, tensors, "its producer")
        w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        if w is not None and len(w.scale) <= 1 < channels:
            notes.append(f"its producer {op.name} (op {op.index}) has one filter scale for all "
                         "channels, not one per channel")
        if len(info.scale) > 1:
            notes.append("it is quantized per channel")
        users = [(c, pos) for c, pos in readers.get(t, []) if c.name not in _SHAPE_ONLY]
        if not users and t not in outputs:
            notes.append("no op reads it")
        for c, pos in users:
            if c.name not in _WEIGHTED:
                notes.append(f"read by {c.name} (op {c.index}), which cannot absorb the "
                             "half-range and centre")
                continue
            if pos != 0:
                notes.append(f"read by {c.name} (op {c.index}) as a weight, not as its input")
                continue
            notes += _weight_notes(c, tensors, "its consumer")
            cw = tensors[c.inputs[1]] if len(c.inputs) > 1 and c.inputs[1] >= 0 else None
            if cw is not None and cw.shape:
                fan = cw.shape[-1]  # CONV_2D (o, h, w, in), FC (o, in), DW (1, h, w, in * m)
                ok = fan % channels == 0 if c.name == "FULLY_CONNECTED" else (
                    fan == channels if c.name == "CONV_2D" else fan % channels == 0)
                if not ok:
                    notes.append(f"its consumer {c.name} (op {c.index}) does not read its "
                                 "channels one per kernel column (e.g. a grouped conv)")
        out[t] = SignedGraph(t, op.index, op.name, tuple(sorted({c.index for c, _ in users})),
                             channels, tuple(dict.fromkeys(notes)), float(info.scale[0]))
    return dict(sorted(out.items()))


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
        bits: 6, 5, 4, 3 or 2.
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
    if len(v) > _FIT_SAMPLES:  # a fixed subsample keeps this fast and deterministic
        v = v[np.linspace(0, len(v) - 1, _FIT_SAMPLES).astype(np.int64)]
    # Quantiles that are values of the data, so a grid floored at the int8 step from ``lo`` holds
    # the int8 values between ``lo`` and ``hi`` exactly.
    lo_q = np.quantile(v, _LO_QUANTILES, axis=0, method="lower")  # (n_lo, C)
    hi_q = np.quantile(v, _HI_QUANTILES, axis=0, method="higher")
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


def _vector(v, n: int, what: str, tensor: int) -> np.ndarray:
    a = np.asarray(v, np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n or not np.all(np.isfinite(a)):
        raise AAError(f"Tensor {tensor}: {what} must be finite, one value per channel ({n}). "
                      f"Received: {a.size} values")
    return a


def apply(tflite: bytes, choices: Mapping[int, SignedChoice]) -> bytes:
    """Returns ``tflite`` with each chosen signed tensor lowered; the input is not changed.

    No op or tensor is added: the producers' filter scales, biases and fused activation
    (``RELU_N1_TO_1``), the tensors' scale and zero point, and the consumers' kernels and biases
    change. A half-range whose step would be finer than the tensor's current int8 step is raised
    to it. Choices with ``bits=8`` are skipped. Current scales are read from ``tflite``, so this
    composes with ``quantedit.apply_edits`` (before or after it).

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
    chosen = {int(t): c for t, c in choices.items() if int(c.bits) != 8}
    if not chosen:
        return bytes(tflite)
    graphs = reachable(tflite)
    model, ops, tensors, users = _open(tflite)
    graph = model.subgraphs[0]
    new_params: dict[int, tuple[float, int]] = {}
    out_side: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    in_side: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for t, choice in chosen.items():
        g = graphs.get(t)
        if g is None:
            raise AAError(f"Tensor {t} is not a signed activation (the output of a weighted op "
                          f"with no fused activation). Signed tensors: {sorted(graphs)}")
        if not g.ok:
            raise AAError(f"Tensor {t} cannot take the signed lowering: {'; '.join(g.notes)}")
        if int(choice.bits) not in SIGNED_BITS:
            raise AAError(f"Tensor {t}: bits must be one of {[8, *SIGNED_BITS]}. Received: "
                          f"bits={choice.bits!r}")
        half = 2 ** (int(choice.bits) - 1)
        c = _vector(choice.centre, g.channels, "centre", t)
        m = _vector(choice.half_range, g.channels, "half_range", t)
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
        _set_quant(graph.tensors[t], [scale], [zp], 0)
    return flatbuffer.write(model)


def _edit_op(model, op, tensors, new_params, in_side, out_side, users) -> None:
    """Rewrites one weighted op's kernel, filter scales and bias for a lowered input and/or output.

    In real units: input side ``w[..., k] *= m_k``, ``bias += sum(w * c)``; output side
    ``w[o] /= m_o``, ``bias_o = (bias_o - c_o) / m_o``. The int8 kernel is requantized per output
    channel only when the input side changes it; otherwise the filter scales absorb ``1 / m``.
    """
    graph = model.subgraphs[0]
    inp = op.inputs[0]
    k = _kernel(model, op, tensors)
    w, f_scale = k.w, k.scale
    in_old = tensors[inp].scale[0]
    in_new = new_params.get(inp, (in_old, 0))[0]
    bias = _real_bias(model, op, tensors, k)
    new_scale = f_scale
    if in_side is not None:
        c, m = in_side
        w, bias = _absorb_input(op.name, w, bias, m, c)
    if out_side is not None:
        c, m = out_side
        bias = (bias - c) / m
        w = w / k.broadcast(m)
        if in_side is None:  # the int8 kernel stays; its per-channel scales absorb 1 / m
            new_scale = f_scale / m
            _set_filter_scale(model, op, k, new_scale)
    if in_side is not None:
        new_scale = _store_kernel(model, op, k, w, users)
    _store_bias(model, op, tensors, bias, in_new, new_scale, users)
    if out_side is not None:
        graph.operators[op.index].builtinOptions.fusedActivationFunction = _RELU_N1_TO_1


# ---------------------------------------------------------------------------------------------
# The offset form: a signed tensor that reaches a residual ADD.
#
# An ADD requantizes each input by that input's own scale and has no weights, so it cannot absorb
# a half-range ``m``; it can absorb a per-channel offset, if its *other* input takes the opposite
# offset. A signed tensor ``y`` (a weighted op's output with no activation, read only through max
# pooling by one ADD) is stored as ``y - lo`` (``lo`` per channel, subtracted from the producer's
# bias) under a fused RELU, scale ``W / (2^b - 1)`` and zero point ``128 - 2^b``: the ReLU clamps
# at ``y = lo``, int8 saturation at ``y = lo + W``, so the tensor holds ``2^b`` levels for any
# input. The ADD's other input ``o``, written by a weighted op with a bias and read by nothing
# else, gets ``+ lo`` in that bias, and its int8 range moves with it (one scale and zero point
# over the shifted range). The ADD then computes ``(y - lo) + (o + lo) = y + o``: its output and
# everything after it are unchanged. Max pooling commutes with a per-channel shift.
# ---------------------------------------------------------------------------------------------

_OFFSET_PASS = {"MAX_POOL_2D"}
_RELU = schema.ActivationFunctionType.RELU


@dataclasses.dataclass(frozen=True)
class OffsetGraph:
    """A signed tensor that reaches one residual ``ADD``, and the ADD's other input.

    Attributes:
        tensor: The signed tensor (the producer's output).
        group: It and the max-pool outputs that carry its values to the ADD.
        producer: Index of the weighted op that writes it.
        producer_op: That op's name.
        add: Index of the ADD.
        partner: The ADD's other input tensor.
        partner_producer: Index of the weighted op that writes ``partner``.
        channels: Channels (last axis) of the tensor.
        scale: The tensor's int8 scale in the baseline.
    """

    tensor: int
    group: tuple[int, ...]
    producer: int
    producer_op: str
    add: int
    partner: int
    partner_producer: int
    channels: int
    scale: float


@dataclasses.dataclass(frozen=True)
class OffsetChoice:
    """The offset lowering of one tensor: ``bits``, per-channel ``low`` and one ``width``: the
    levels are ``low + width * k / (2^bits - 1)``, ``k = 0 .. 2^bits - 1``."""

    bits: int
    low: np.ndarray | float
    width: float


def offset_reachable(tflite: bytes) -> dict[int, OffsetGraph]:
    """The signed tensors the offset form reaches: each written by a weighted op with no
    activation and a bias, read (directly or through max pooling) only by one ``ADD`` whose other
    input is written by a weighted op with no activation and a bias and read by nothing else.

    Example:
        >>> offset_reachable(open("mini_xception.tflite", "rb").read())  # doctest: +SKIP
        {37: OffsetGraph(tensor=37, group=(37, 38), producer=8, ...)}
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    graph = model.subgraphs[0]
    readers = _readers(ops)
    producer = {t: op for op in ops for t in op.outputs}
    outputs = {int(t) for t in (graph.outputs if graph.outputs is not None else [])}

    def biased_linear(op) -> bool:
        w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        return (op.name in _WEIGHTED and op.fused_activation == "NONE" and w is not None
                and len(w.scale) > 1 and not _weight_notes(op, tensors, "op"))

    out: dict[int, OffsetGraph] = {}
    for op in ops:
        if not biased_linear(op) or not op.outputs:
            continue
        t = op.outputs[0]
        info = tensors[t]
        if info.dtype != "INT8" or len(info.scale) != 1 or t in outputs:
            continue
        group, frontier, adds, bad = [t], [t], [], False
        while frontier and not bad:
            u = frontier.pop()
            for r, _ in readers.get(u, []):
                if r.name in _SHAPE_ONLY:
                    continue
                if r.name in _OFFSET_PASS and tensors[r.outputs[0]].scale == tensors[u].scale \
                        and tensors[r.outputs[0]].zero_point == tensors[u].zero_point:
                    group.append(r.outputs[0])
                    frontier.append(r.outputs[0])
                elif r.name == "ADD" and r not in adds:
                    adds.append(r)
                else:
                    bad = True
        if bad or len(adds) != 1 or any(g in outputs for g in group):
            continue
        add = adds[0]
        others = [i for i in add.inputs if i >= 0 and i not in group]
        if len(others) != 1 or len([i for i in add.inputs if i in group]) != 1:
            continue
        partner = others[0]
        q = producer.get(partner)
        p_info = tensors[partner]
        if q is None or not biased_linear(q) or partner in outputs or len(p_info.scale) != 1 \
                or [r.index for r, _ in readers.get(partner, [])] != [add.index] \
                or tuple(p_info.shape) != tuple(tensors[group[-1]].shape):
            continue
        out[t] = OffsetGraph(t, tuple(group), op.index, op.name, add.index, partner, q.index,
                             int(info.shape[-1]) if info.shape else 1, float(info.scale[0]))
    return out


def fit_offset(values: np.ndarray, bits: int, *, min_step: float) -> tuple[np.ndarray, float]:
    """Per-channel ``low`` and one ``width`` for the offset form, with the least squared error
    over low/high quantile pairs of ``values`` (channels on the last axis); the step is never
    below ``min_step``.

    Example:
        >>> v = np.stack([np.linspace(-1, 1, 101), np.linspace(2, 3, 101)], axis=-1)
        >>> low, width = fit_offset(v, 4, min_step=0.01)
        >>> np.round(low, 2).tolist(), round(width, 2)
        ([-0.96, 2.02], 1.92)
    """
    top = precision(bits).top
    v = np.asarray(values, np.float64)
    v = v.reshape(-1, v.shape[-1])
    if len(v) > _FIT_SAMPLES:
        v = v[np.linspace(0, len(v) - 1, _FIT_SAMPLES).astype(np.int64)]
    best = None
    for ql, qh in zip(_LO_QUANTILES, _HI_QUANTILES):
        low = np.quantile(v, ql, axis=0, method="lower")
        width = max(float(np.max(np.quantile(v, qh, axis=0, method="higher") - low)),
                    min_step * top)
        step = width / top
        k = np.clip(np.round((v - low) / step), 0, top)
        err = float(np.mean((v - (low + k * step)) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, low, width)
    return best[1], best[2]


def apply_offset(tflite: bytes, choices: Mapping[int, OffsetChoice]) -> bytes:
    """Writes the offset form of each chosen tensor (a key of ``offset_reachable``). No op and no
    tensor is added; the producer's fused activation becomes RELU.

    Raises:
        AAError: A tensor is not reachable, or a choice is malformed.
    """
    chosen = {int(t): c for t, c in choices.items() if int(c.bits) != 8}
    if not chosen:
        return bytes(tflite)
    graphs = offset_reachable(tflite)
    model, ops, tensors, users = _open(tflite)
    graph = model.subgraphs[0]
    for t, choice in chosen.items():
        g = graphs.get(t)
        if g is None:
            raise AAError(f"Tensor {t} is not reachable by the offset form (a signed tensor read "
                          f"only by one ADD whose other input a biased conv writes). Reachable: "
                          f"{sorted(graphs)}")
        p = precision(choice.bits)
        low = _vector(choice.low, g.channels, "low", t)
        width = max(float(choice.width), g.scale * p.top)
        for k, shift in ((g.producer, -low), (g.partner_producer, low)):
            op = ops[k]
            kern = _kernel(model, op, tensors)
            bias = _real_bias(model, op, tensors, kern)
            _store_bias(model, op, tensors, bias + shift, tensors[op.inputs[0]].scale[0],
                        kern.scale, users)
        graph.operators[g.producer].builtinOptions.fusedActivationFunction = _RELU
        for u in g.group:
            _set_quant(graph.tensors[u], [p.step(width)], [p.zero_point], 0)
        # The partner's int8 range moves by ``low`` (one scale and zero point over all channels).
        o = tensors[g.partner]
        s, z = float(o.scale[0]), int(o.zero_point[0])
        lo = min(s * (-128 - z) + float(low.min()), 0.0)
        hi = max(s * (127 - z) + float(low.max()), 0.0)
        scale = max((hi - lo) / 255.0, 1e-12)
        zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
        _set_quant(graph.tensors[g.partner], [scale], [zp], 0)
    return flatbuffer.write(model)
