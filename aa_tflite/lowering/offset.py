"""The offset lowering: a *signed* tensor that reaches a residual ``ADD``, below 8 bits at zero
cost. No TensorFlow import.

An ADD requantizes each input by that input's own scale and has no weights, so it cannot absorb
a half-range ``m``; it can absorb a per-channel offset, if its *other* input takes the opposite
offset. A signed tensor ``y`` (a weighted op's output with no activation, read only through max
pooling by one ADD) is stored as ``y - lo`` (``lo`` per channel, subtracted from the producer's
bias) under a fused RELU, scale ``W / (2^b - 1)`` and zero point ``128 - 2^b``: the ReLU clamps
at ``y = lo``, int8 saturation at ``y = lo + W``, so the tensor holds ``2^b`` levels for any
input. The ADD's other input ``o``, written by a weighted op with a bias and read by nothing
else, gets ``+ lo`` in that bias, and its int8 range moves with it (one scale and zero point
over the shifted range). The ADD then computes ``(y - lo) + (o + lo) = y + o``: its output and
everything after it are unchanged. Max pooling commutes with a per-channel shift.

No op and no tensor is added (the TFLite Micro arena is unchanged); only quantization parameters,
the two producers' biases and the first producer's fused activation change. ``ResidualOffset`` is
this lowering's entry in ``aa_tflite.lowering.LOWERINGS``.

Example:
    >>> graphs = offset_reachable(tflite)  # doctest: +SKIP
    >>> values = tensor_values(tflite, list(graphs), x_cal)  # doctest: +SKIP
    >>> lowered = apply_offset(tflite, {t: OffsetChoice(4, *fit_offset(values[t], 4,
    ...                         min_step=g.scale)) for t, g in graphs.items()})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.lowering.tensor_edit import (
    HI_QUANTILES,
    LO_QUANTILES,
    TensorLowering,
    edit_tensors,
    subsample,
)
from aa_tflite.precision import precision
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.tflite.flatbuffer import OpInfo, TensorInfo
from aa_tflite.tflite.kernel_math import (
    channel_vector,
    read_kernel,
    real_bias,
    set_quant,
    store_bias,
    weight_notes,
)
from aa_tflite.tflite.ops import SHAPE_ONLY, WEIGHTED, consumers, producers
from aa_tflite.types import SiteConfig

__all__ = ["OffsetChoice", "OffsetGraph", "ResidualOffset", "apply_offset", "biased_linear",
           "fit_offset", "offset_reachable"]

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
    ops, tensors, returned = flatbuffer.describe_bytes(tflite)  # once per variant: the fast read
    readers = consumers(ops)
    producer = producers(ops)
    outputs = set(returned)
    out: dict[int, OffsetGraph] = {}
    for op in ops:
        if not biased_linear(op, tensors) or not op.outputs:
            continue
        t = op.outputs[0]
        info = tensors[t]
        if info.dtype != "INT8" or len(info.scale) != 1 or t in outputs:
            continue
        group, add = _path_to_add(t, readers, tensors)
        if add is None or any(g in outputs for g in group):
            continue
        others = [i for i in add.inputs if i >= 0 and i not in group]
        if len(others) != 1 or len([i for i in add.inputs if i in group]) != 1:
            continue
        partner = others[0]
        q = producer.get(partner)
        p_info = tensors[partner]
        if q is None or not biased_linear(q, tensors) or partner in outputs \
                or len(p_info.scale) != 1 \
                or [r.index for r, _ in readers.get(partner, [])] != [add.index] \
                or tuple(p_info.shape) != tuple(tensors[group[-1]].shape):
            continue
        out[t] = OffsetGraph(t, tuple(group), op.index, op.name, add.index, partner, q.index,
                             int(info.shape[-1]) if info.shape else 1, float(info.scale[0]))
    # Two signed inputs of one ADD are each other's partners, but their shifts cannot both be
    # written (each would move the other's clamp): the first in tensor order is the one reached.
    return {t: g for t, g in out.items() if not (g.partner in out and g.partner < t)}


def biased_linear(op: OpInfo | None, tensors: list[TensorInfo]) -> bool:
    """A weighted op with no activation, a per-channel int8 kernel and an int32 bias."""
    if op is None:
        return False
    w = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    return (op.name in WEIGHTED and op.fused_activation == "NONE" and w is not None
            and len(w.scale) > 1 and not weight_notes(op, tensors, "op"))


def _path_to_add(t: int, readers, tensors: list[TensorInfo]) -> tuple[list[int], OpInfo | None]:
    """Tensor ``t`` and the max-pool outputs that copy it, and the one ``ADD`` they reach; None
    when anything else reads them, or more than one ``ADD`` does."""
    group, frontier, adds = [t], [t], []
    while frontier:
        u = frontier.pop()
        for r, _ in readers.get(u, []):
            if r.name in SHAPE_ONLY:
                continue
            if r.name in _OFFSET_PASS and tensors[r.outputs[0]].scale == tensors[u].scale \
                    and tensors[r.outputs[0]].zero_point == tensors[u].zero_point:
                group.append(r.outputs[0])
                frontier.append(r.outputs[0])
            elif r.name == "ADD" and r not in adds:
                adds.append(r)
            else:
                return group, None
    return group, adds[0] if len(adds) == 1 else None


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
    v = subsample(v.reshape(-1, v.shape[-1]))
    best = None
    lows = np.quantile(v, LO_QUANTILES, axis=0, method="lower")  # one sort for all quantiles
    highs = np.quantile(v, HI_QUANTILES, axis=0, method="higher")
    for low, high in zip(lows, highs):
        width = max(float(np.max(high - low)), min_step * top)
        step = width / top
        k = np.clip(np.round((v - low) / step), 0, top)
        err = float(np.mean((v - (low + k * step)) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, low, width)
    return best[1], best[2]


def apply_offset(tflite: bytes, choices: Mapping[int, OffsetChoice]) -> bytes:
    """Writes the offset form of each chosen tensor (a key of ``offset_reachable``). No op and no
    tensor is added; the producer's fused activation becomes RELU. Choices with ``bits=8`` are
    skipped.

    Raises:
        AAError: A tensor is not reachable, or a choice is malformed.
    """
    return edit_tensors(tflite, choices, offset_reachable, _write, (
        "Tensor {t} is not reachable by the offset form (a signed tensor read only by one ADD "
        "whose other input a biased conv writes). Reachable: {known}"))


def _write(model: schema.ModelT, ops: list[OpInfo], tensors: list[TensorInfo],
           users: Mapping[int, int], chosen: list[tuple[int, OffsetChoice, OffsetGraph]]) -> None:
    """Writes the offset form of each chosen tensor into the unpacked ``model``."""
    graph = model.subgraphs[0]
    for t, choice, g in chosen:
        p = precision(choice.bits)
        low = channel_vector(choice.low, g.channels, "low", t)
        width = max(float(choice.width), g.scale * p.top)
        for k, shift in ((g.producer, -low), (g.partner_producer, low)):
            op = ops[k]
            kern = read_kernel(model, op, tensors)
            bias = real_bias(model, op, tensors, kern)
            store_bias(model, op, tensors, bias + shift, tensors[op.inputs[0]].scale[0],
                       kern.scale, users)
        graph.operators[g.producer].builtinOptions.fusedActivationFunction = _RELU
        for u in g.group:
            set_quant(graph.tensors[u], [p.step(width)], [p.zero_point], 0)
        # The partner's int8 range moves by ``low`` (one scale and zero point over all channels).
        o = tensors[g.partner]
        s, z = float(o.scale[0]), int(o.zero_point[0])
        lo = min(s * (-128 - z) + float(low.min()), 0.0)
        hi = max(s * (127 - z) + float(low.max()), 0.0)
        scale = max((hi - lo) / 255.0, 1e-12)
        zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
        set_quant(graph.tensors[g.partner], [scale], [zp], 0)


class ResidualOffset(TensorLowering):
    """Signed tensors that reach a residual ``ADD``, below 8 bits as ``y - low`` under a fused
    RELU (``apply_offset``): units named ``offset:<tensor name>``."""

    kind = "offset"
    form = "signed, offset form"
    how = "stores y - low under a fused RELU, the ADD's other input takes + low"
    apply_tensors = staticmethod(apply_offset)

    def reach(self, tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], dict[int, str]]:
        """Every tensor ``offset_reachable`` gives, as a unit."""
        _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        units: dict[str, SiteGraph] = {}
        for t, g in sorted(offset_reachable(tflite).items()):
            name = f"offset:{tensors[t].name.split(';')[0]}"
            units[name] = SiteGraph(
                name=name, lowering=self.kind, tensor=t, group=g.group, producer=g.producer,
                producer_op=g.producer_op, can_requantize=True,
                notes=(f"signed {g.producer_op} output that reaches ADD (op {g.add}): stored as "
                       f"y - low under a fused RELU; the ADD's other input (tensor {g.partner}) "
                       "takes + low in its producer's bias",), scale=g.scale)
        return units, {}

    def fit(self, values: Callable[[], np.ndarray], config: SiteConfig, unit: SiteGraph, *,
            per_channel: bool = False) -> OffsetChoice:
        """Per-channel low and one width from the data: the config gives bits only."""
        b = self.bits_only(config, unit)
        low, width = fit_offset(values(), b, min_step=unit.scale)
        return OffsetChoice(b, low, width)
