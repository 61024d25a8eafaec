"""The arithmetic of editing a weighted op in a ``.tflite``: its int8 kernel, filter scales and
int32 bias, in real units and back. The lowerings and the scale repair write through these. No
TensorFlow import.

A weighted op (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``) computes, in real units,
``y = w * x + bias`` with ``w = q * filter_scale`` (per output channel) and ``bias`` stored as int32
at scale ``input_scale * filter_scale``. An edit reads these as reals, changes them, and writes
them back; the int8 kernel is kept bit for bit unless the real weights themselves change.

Example:
    >>> a, b = affine_fit(np.array([[0.0], [1.0], [2.0]]), np.array([[1.0], [3.0], [5.0]]))
    >>> a.tolist(), b.tolist()
    ([2.0], [1.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.flatbuffer import OpInfo, TensorInfo
from aa_tflite.tflite.ops import WEIGHTED
from aa_tflite.types import AAError

__all__ = ["Kernel", "absorb_input", "affine_fit", "affine_fit_stored", "buffer_users",
           "channel_vector", "constant", "expand_scale", "input_scale_factor", "kernel_bytes",
           "open_model", "read_kernel", "real_bias", "requantize", "set_filter_scale",
           "set_quant", "store_bias", "store_constant", "store_kernel", "store_weights",
           "weight_notes", "write_params"]

# Activation parameters to write: tensor -> (scale, zero point).
Params = Mapping[int, tuple[float, int]]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A weighted op's int8 kernel, in int8 and real units, with its per-channel layout."""

    q: np.ndarray  # the int8 values, as float64
    w: np.ndarray  # the real weights
    scale: np.ndarray  # per output channel
    dim: int  # the quantized (output-channel) dimension
    per_tensor: bool  # one filter scale for all channels

    @property
    def n_out(self) -> int:
        return self.q.shape[self.dim]

    def broadcast(self, v: np.ndarray) -> np.ndarray:
        """A per-output-channel vector, shaped to multiply the kernel."""
        shape = [1] * self.q.ndim
        shape[self.dim] = self.n_out
        return np.asarray(v).reshape(shape)


def open_model(tflite: bytes) -> tuple[schema.ModelT, list[OpInfo], list[TensorInfo],
                                       dict[int, int]]:
    """The model to edit, its ops and tensors, and how many tensors use each buffer."""
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    return model, ops, tensors, buffer_users(model)


def buffer_users(model: schema.ModelT) -> dict[int, int]:
    """How many tensors use each buffer (a shared constant gets its own copy before an edit)."""
    users: dict[int, int] = {}
    for t in model.subgraphs[0].tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    return users


def kernel_bytes(tflite: bytes) -> dict[int, bytes]:
    """Each weighted op's kernel (input 1) as stored, by op index: what ``share_weights`` keeps
    byte for byte.

    Example:
        >>> kernel_bytes(point) == kernel_bytes(int8_baseline)  # doctest: +SKIP
        True
    """
    model = flatbuffer.read(tflite)
    ops, _ = flatbuffer.describe(model)
    graph = model.subgraphs[0]
    return {op.index: np.asarray(model.buffers[graph.tensors[op.inputs[1]].buffer].data,
                                 np.uint8).tobytes() for op in ops if op.name in WEIGHTED}


def constant(model: schema.ModelT, tensor: int, dtype) -> np.ndarray:
    """A constant tensor's values, shaped."""
    t = model.subgraphs[0].tensors[tensor]
    data = model.buffers[t.buffer].data
    if data is None:
        raise AAError(f"Tensor {tensor} has no constant data; the .tflite may store weights "
                      "outside the flatbuffer, which aa_tflite does not edit.")
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(t.shape)


def store_constant(model: schema.ModelT, tensor: int, values: np.ndarray,
                   users: Mapping[int, int]) -> None:
    """Writes a constant tensor's values (into a buffer of its own if it shared one)."""
    t = model.subgraphs[0].tensors[tensor]
    data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8).copy()
    if users.get(t.buffer, 0) > 1:  # shared constant: give this tensor its own copy
        buf = schema.BufferT()
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    model.buffers[t.buffer].data = data


def set_quant(t: schema.TensorT, scale, zero_point, dim: int | None = None) -> None:
    """Sets a tensor's quantization parameters (and quantized dimension, if given)."""
    q = t.quantization
    q.scale = np.asarray(scale, np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_point, np.int64).reshape(-1)
    if dim is not None:
        q.quantizedDimension = dim


def expand_scale(values, n: int) -> np.ndarray:
    """A scale as ``n`` per-channel values (one per-tensor value repeated)."""
    v = np.asarray(values, np.float64).reshape(-1)
    return np.full(n, v[0]) if len(v) == 1 else v


def channel_vector(v, n: int, what: str, tensor: int) -> np.ndarray:
    """A per-channel parameter of a choice as ``n`` finite values (a scalar is repeated).

    Raises:
        AAError: ``v`` is not one finite value or ``n`` of them.
    """
    a = np.asarray(v, np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n or not np.all(np.isfinite(a)):
        raise AAError(f"Tensor {tensor}: {what} must be finite, one value per channel ({n}). "
                      f"Received: {a.size} values")
    return a


def read_kernel(model: schema.ModelT, op: OpInfo, tensors: list[TensorInfo]) -> Kernel:
    """A weighted op's int8 kernel (input 1), with its real weights."""
    wt = op.inputs[1]
    info = tensors[wt]
    if info.dtype != "INT8":
        raise AAError(f"{op.name} (op {op.index}) has {info.dtype} weights; only int8 kernels "
                      "can be edited.")
    q = constant(model, wt, np.int8).astype(np.float64)
    dim = model.subgraphs[0].tensors[wt].quantization.quantizedDimension or 0
    scale = expand_scale(info.scale, q.shape[dim])
    k = Kernel(q, q, scale, dim, len(info.scale) == 1)
    return dataclasses.replace(k, w=q * k.broadcast(scale))


def real_bias(model: schema.ModelT, op: OpInfo, tensors: list[TensorInfo],
              k: Kernel) -> np.ndarray:
    """A weighted op's int32 bias in real units: at its own scale, or at input scale x filter
    scale where the file gives none."""
    b_scale = tensors[op.inputs[2]].scale
    b_scale = (expand_scale(b_scale, k.n_out) if b_scale
               else tensors[op.inputs[0]].scale[0] * k.scale)
    return constant(model, op.inputs[2], np.int32).astype(np.float64) * b_scale


def weight_notes(op: OpInfo, tensors: list[TensorInfo], what: str) -> list[str]:
    """Why a weighted op's kernel and bias cannot be edited, if they cannot; ``what`` names the
    op's role in the notes (e.g. ``"its producer"``)."""
    notes = []
    w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if w is None or w.dtype != "INT8" or not w.is_constant:
        notes.append(f"{what} {op.name} (op {op.index}) has no constant int8 kernel")
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        notes.append(f"{what} {op.name} (op {op.index}) has no bias to absorb the centre")
    elif tensors[op.inputs[2]].dtype != "INT32" or not tensors[op.inputs[2]].is_constant:
        notes.append(f"{what} {op.name} (op {op.index}) has no constant int32 bias")
    return notes


def absorb_input(op_name: str, w: np.ndarray, bias: np.ndarray, a: np.ndarray,
                 b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Folds ``x = a * x' + b`` (per channel of the op's input, last axis) into the op's real
    kernel and bias, so the op reading ``x'`` computes what it computed on ``x``. Exact except
    where a 'same' convolution larger than 1x1 reads zero padding."""
    a, b = (np.asarray(v, np.float64).reshape(-1) for v in (a, b))
    if op_name == "DEPTHWISE_CONV_2D":  # (1, kh, kw, c * mult): output o reads channel o // mult
        mult = w.shape[-1] // len(a)
        a_o, b_o = np.repeat(a, mult), np.repeat(b, mult)
        return w * a_o, bias + w.reshape(-1, w.shape[-1]).sum(axis=0) * b_o
    if op_name == "FULLY_CONNECTED":  # (units, features); NHWC flattening: feature j reads j % C
        reps = w.shape[-1] // len(a)
        a_f, b_f = np.tile(a, reps), np.tile(b, reps)
        return w * a_f[None, :], bias + w @ b_f
    # CONV_2D (out, kh, kw, in)
    return w * a, bias + w.reshape(w.shape[0], -1, w.shape[-1]).sum(axis=1) @ b


def input_scale_factor(op_name: str, k: Kernel, a: np.ndarray) -> np.ndarray | None:
    """Per-input-channel factors ``a`` as per-output-channel filter-scale factors, where the op's
    int8 kernel can stay as it is; else None (the real weights change per input channel).

    A factor common to every input channel scales every output; a depthwise op's output ``o``
    reads only input channel ``o // multiplier``. A per-tensor kernel takes one common factor.

    Example:
        >>> k = Kernel(np.ones((1, 1, 1, 4)), np.ones((1, 1, 1, 4)), np.ones(4), 3, False)
        >>> input_scale_factor("DEPTHWISE_CONV_2D", k, np.array([1.0, 2.0])).tolist()
        [1.0, 1.0, 2.0, 2.0]
        >>> input_scale_factor("CONV_2D", k, np.array([1.0, 2.0])) is None
        True
    """
    a = np.asarray(a, np.float64).reshape(-1)
    if np.all(np.abs(a - a[0]) <= 1e-12 * max(1.0, abs(float(a[0])))):
        return np.full(k.n_out, float(a[0]))
    if op_name == "DEPTHWISE_CONV_2D" and not k.per_tensor and k.n_out % len(a) == 0:
        return np.repeat(a, k.n_out // len(a))
    return None


def store_kernel(model: schema.ModelT, op: OpInfo, k: Kernel, w: np.ndarray,
                 users: Mapping[int, int]) -> np.ndarray:
    """Requantizes real weights ``w`` into the op's int8 kernel, per output channel (per tensor
    where the op had one scale); returns the new per-channel scales."""
    per = np.moveaxis(np.abs(w), k.dim, 0).reshape(k.n_out, -1).max(axis=1)
    if k.per_tensor:
        per = np.full(k.n_out, per.max())
    new_scale = np.where(per > 0, per / 127.0, k.scale)
    new_q = np.clip(np.round(w / k.broadcast(new_scale)), -127, 127)
    store_constant(model, op.inputs[1], new_q.astype(np.int8), users)
    set_filter_scale(model, op, k, new_scale)
    return new_scale


def store_weights(model: schema.ModelT, op: OpInfo, k: Kernel, w: np.ndarray,
                  factor: np.ndarray | None, users: Mapping[int, int]) -> np.ndarray:
    """Writes an op's new real weights ``w``; returns its new filter scales. Where ``w`` is the
    kernel with each output channel scaled by ``factor``, the int8 kernel stays bit for bit and
    its filter scales take the factors; ``factor`` None (the weights changed per input channel)
    requantizes the kernel from ``w``."""
    if factor is None:
        return store_kernel(model, op, k, w, users)
    if np.any(factor != 1.0):
        set_filter_scale(model, op, k, k.scale * factor)
    return k.scale * factor


def set_filter_scale(model: schema.ModelT, op: OpInfo, k: Kernel, scale: np.ndarray) -> None:
    """Sets the kernel's filter scales (the int8 values are kept)."""
    n = 1 if k.per_tensor else k.n_out
    set_quant(model.subgraphs[0].tensors[op.inputs[1]], np.asarray(scale)[:n],
              np.zeros(n, np.int64), k.dim)


def store_bias(model: schema.ModelT, op: OpInfo, tensors: list[TensorInfo], bias: np.ndarray,
               in_scale: float, filter_scale: np.ndarray, users: Mapping[int, int]) -> None:
    """Writes real ``bias`` as the op's int32 bias at scale ``in_scale * filter_scale``."""
    bias_t = op.inputs[2]
    denom = in_scale * filter_scale
    bias_q = np.clip(np.round(bias / denom), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    store_constant(model, bias_t, bias_q, users)
    if len(tensors[bias_t].scale) <= 1:
        denom = denom[:1]
    set_quant(model.subgraphs[0].tensors[bias_t], denom, np.zeros(len(denom), np.int64), 0)


def requantize(model: schema.ModelT, op: OpInfo, tensors: list[TensorInfo], new_params: Params,
               shift: float, correction, channel_scale, users: Mapping[int, int]) -> None:
    """Rewrites one weighted op for a new input scale (``new_params``), a bias ``shift`` (real
    units, subtracted), a ``correction`` ``(a, b)`` of its input (see ``absorb_input``) and
    per-output-channel factors ``channel_scale``; each may be absent. The int8 kernel is
    requantized only when a correction changes the real weights."""
    inp = op.inputs[0]
    bias_t = op.inputs[2] if len(op.inputs) > 2 else -1
    k = read_kernel(model, op, tensors)
    w, f_scale, n_out = k.w, k.scale, k.n_out
    in_old = tensors[inp].scale[0]
    in_new = new_params.get(inp, (in_old, 0))[0]
    if bias_t >= 0:
        bias = constant(model, bias_t, np.int32).astype(np.float64) * in_old * f_scale
    else:
        if shift or correction is not None:
            raise AAError(f"{op.name} (op {op.index}) has no bias to edit.")
        bias = np.zeros(n_out)
    bias = bias - shift
    factor = np.ones(n_out)  # per-output-channel filter-scale factors (None: requantize)
    if correction is not None:
        w, bias = absorb_input(op.name, w, bias, *correction)
        moved = input_scale_factor(op.name, k, correction[0])
        factor = None if moved is None else factor * moved
    if channel_scale is not None:
        if len(channel_scale) != n_out:
            raise AAError(f"{op.name} (op {op.index}) has {n_out} output channels, but "
                          f"{len(channel_scale)} channel scales were given.")
        w = w * k.broadcast(channel_scale)
        bias = bias * channel_scale
        factor = None if factor is None else factor * channel_scale
    new_scale = store_weights(model, op, k, w, factor, users)
    if bias_t >= 0:
        store_bias(model, op, tensors, bias, in_new, new_scale, users)


def write_params(model: schema.ModelT, ops: list[OpInfo], tensors: list[TensorInfo],
                 new_params: Params, shifts: Mapping[int, float],
                 corrections: Mapping[int, tuple[np.ndarray, np.ndarray]],
                 scales: Mapping[int, np.ndarray], users: Mapping[int, int]) -> None:
    """Sets new activation parameters and requantizes every weighted op they touch: the readers
    of a rescaled tensor, and the ops (by index) given a bias shift, a correction or channel
    scales."""
    rescaled = {op.index for op in ops if op.name in WEIGHTED and op.inputs[0] in new_params}
    touched = set(shifts) | set(corrections) | set(scales) | rescaled
    for k in sorted(touched):
        requantize(model, ops[k], tensors, new_params, shifts.get(k, 0.0), corrections.get(k),
                   scales.get(k), users)
    for t, (scale, zp) in new_params.items():
        set_quant(model.subgraphs[0].tensors[t], [scale], [zp], 0)


_FIT_COLUMNS = 16  # columns per block of affine_fit


def _column_blocks(columns: int) -> list[slice]:
    """``_FIT_COLUMNS`` columns at a time, none a single column unless there is one in all: a
    mean over the rows of a one-column block is summed pairwise, of a wider block row by row
    (as of the whole array), and the fit must not depend on the blocking."""
    starts = list(range(0, columns, _FIT_COLUMNS))
    if len(starts) > 1 and columns - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], columns])]


def affine_fit(got: np.ndarray, target: np.ndarray, *, per_channel: bool = True,
               positive: bool = True, common_slope: bool = False,
               dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``target ~ a * got + b``, one ``(a, b)`` per channel or per feature.

    Example:
        >>> got = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
        >>> a, b = affine_fit(got, -got)
        >>> a.tolist(), b.tolist()
        ([1.0, 1.0], [-2.0, -2.0])
        >>> a, b = affine_fit(got, -got, positive=False)
        >>> a.tolist(), b.tolist()
        ([-1.0, -1.0], [0.0, 0.0])
        >>> a, b = affine_fit(got, got * [1.0, 3.0], common_slope=True)
        >>> a.tolist(), b.tolist()
        ([2.0, 2.0], [-1.0, 1.0])

    Args:
        got: Values as they are, samples first.
        target: The values wanted, shaped like ``got``.
        per_channel: One fit per index of the last axis, over the samples and every other axis
            (a convolution's input); else one per feature, over the samples only (a dense
            layer's flattened input).
        positive: Replace a slope at or below 1e-3 by 1: the fit of a ``.tflite`` consumer's
            input, where max pooling between a site and its consumer commutes only with a
            positive scale. The Keras-level shift correction (``frontend.export``) fits without.
        common_slope: One slope for every channel (pooled over them; offsets stay per channel):
            what a reader takes in its filter scales without a change to its int8 kernel.
        dtype: The arithmetic's dtype, or None for the inputs' own.

    Returns:
        ``a`` and ``b``; ``a`` is 1 where ``got`` does not vary.
    """
    if per_channel:
        g_all, t_all = got.reshape(-1, got.shape[-1]), target.reshape(-1, target.shape[-1])
    else:
        g_all, t_all = got.reshape(len(got), -1), target.reshape(len(target), -1)
    g_type, t_type = (g_all.dtype, t_all.dtype) if dtype is None else (dtype, dtype)
    mg, var = np.empty(g_all.shape[1], g_type), np.empty(g_all.shape[1], g_type)
    mt, cov = np.empty(t_all.shape[1], t_type), np.empty(t_all.shape[1], t_type)
    for cols in _column_blocks(g_all.shape[1]):  # a few columns at a time: small copies
        g, t = g_all[:, cols].astype(g_type), t_all[:, cols].astype(t_type)
        mg[cols], mt[cols] = g.mean(axis=0), t.mean(axis=0)
        g -= mg[cols]  # in place, on the copies: the same values as g - mg
        t -= mt[cols]
        var[cols] = np.square(g).mean(axis=0)
        t *= g
        cov[cols] = t.mean(axis=0)
    return _slope_offset(mg, mt, var, cov, positive=positive, common_slope=common_slope)


def _slope_offset(mg: np.ndarray, mt: np.ndarray, var: np.ndarray, cov: np.ndarray, *,
                  positive: bool, common_slope: bool) -> tuple[np.ndarray, np.ndarray]:
    """``affine_fit``'s ``(a, b)`` from the means, the variance of ``got`` and the covariance."""
    a = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 1.0)
    if common_slope:
        live = var > 1e-12
        a = np.full_like(a, cov[live].sum() / var[live].sum() if live.any() else 1.0)
    if positive:
        a = np.where(a > 1e-3, a, 1.0)
    return a, mt - a * mg


# Rows per exact float32 sum: 1024 products of int8 values, each at most 2**14, sum to at
# most 2**24, which float32 holds exactly (as every partial sum).
_EXACT_ROWS = 1024
# Rows at most: n * sum(q * q) <= n**2 * 2**14 stays below int64's 2**63.
_EXACT_MAX_ROWS = 1 << 24


def affine_fit_stored(got: np.ndarray, got_quant: tuple[float, int], target: np.ndarray,
                      target_quant: tuple[float, int], *, positive: bool = True,
                      common_slope: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``affine_fit`` per channel of int8 values ``(positions, channels)``, each read as
    ``scale * (q - zero)`` by its ``(scale, zero)``: the sums are exact integers (in float32
    blocks of ``_EXACT_ROWS`` rows), so the fit does not depend on the order of the rows, and
    no float64 copy of the values is made.

    Example:
        >>> q = np.array([[0], [1], [2]], np.int8)
        >>> a, b = affine_fit_stored(q, (1.0, 0), q, (2.0, -1))
        >>> a.tolist(), b.tolist()
        ([2.0], [2.0])
    """
    if got.dtype != np.int8 or target.dtype != np.int8:
        raise AAError(f"affine_fit_stored takes int8 values, not {got.dtype}/{target.dtype}: "
                      "fit dequantized values with affine_fit.")
    n, c = got.shape
    if n > _EXACT_MAX_ROWS:
        raise AAError(f"affine_fit_stored sums at most {_EXACT_MAX_ROWS:,} rows exactly, not "
                      f"{n:,}: keep fewer positions (calibrate.fit_positions).")
    sums = np.zeros((4, c), np.float64)  # of g, t, g*g and g*t: exact integers
    block = 64 * _EXACT_ROWS
    for start in range(0, n, block):
        g = got[start:start + block].astype(np.float32)
        t = target[start:start + block].astype(np.float32)
        whole = len(g) // _EXACT_ROWS * _EXACT_ROWS
        for k, (x, y) in ((2, (g, g)), (3, (g, t))):
            sums[k] += np.einsum("kij,kij->kj", x[:whole].reshape(-1, _EXACT_ROWS, c),
                                 y[:whole].reshape(-1, _EXACT_ROWS, c)).sum(axis=0, dtype=np.float64)
            sums[k] += np.einsum("ij,ij->j", x[whole:], y[whole:])
        sums[0] += g.sum(axis=0, dtype=np.float64)
        sums[1] += t.sum(axis=0, dtype=np.float64)
    sg, st, sgg, sgt = sums.astype(np.int64)
    (gs, gz), (ts, tz) = got_quant, target_quant
    var = float(gs) ** 2 * (n * sgg - sg * sg).astype(np.float64) / float(n) ** 2
    cov = float(gs) * float(ts) * (n * sgt - sg * st).astype(np.float64) / float(n) ** 2
    mg, mt = float(gs) * (sg / n - gz), float(ts) * (st / n - tz)
    return _slope_offset(mg, mt, var, cov, positive=positive, common_slope=common_slope)
