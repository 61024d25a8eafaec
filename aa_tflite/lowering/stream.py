"""The stream lowering: a *signed* tensor that reaches a residual ``ADD`` whose other input no
bias can offset (an identity shortcut), below 8 bits at zero cost. No TensorFlow import.

A fused ``RELU_N1_TO_1`` holds a tensor to ``2^b`` levels when its scale is ``1 / 2^(b-1)``
(``lowering.signed``), but only for values in ``[-1, 1]``. A weighted op can write ``y / m``
instead of ``y`` (its filter scales and bias scales divided by ``m``; the int8 kernel and bias
bytes stay), but the ``ADD`` that reads it cannot multiply by ``m`` back. So the whole residual
*stream* is divided by the same ``m``: every int8 tensor linked to the ``ADD`` through linear,
positively homogeneous ops (``ADD``, ``MUL`` by a constant, pooling, ``MEAN``, ``PAD``,
``RESHAPE``, ``RELU`` and fused ``RELU``) keeps its int8 values and gets its scale divided by
``m``. Where the stream begins, the weighted ops that write it divide their filter (and bias)
scales by ``m``; where it ends, the weighted ops that read it multiply their filter scales by
``m``. Every int8 value in the file is unchanged but the lowered tensor's, whose producer writes
``y / m`` at scale ``1 / 2^(b-1)``, zero point ``128 - 2^(b-1)``, under ``RELU_N1_TO_1``. The
stream's real values are ``1/m`` of the baseline's and every reader outside it undoes that, so
the model's outputs equal the baseline's wherever ``y`` stays inside ``[-m, m)``.

The stream may not reach a model output, a non-linear op (``SOFTMAX``, ``LOGISTIC``, ``RELU6``, a
fused ``RELU6``), or a tensor written by anything but the ops above and weighted ops. A stream
with two signed tensors that could be lowered this way is left alone: they would need one ``m``.
No op and no tensor is added (the TFLite Micro arena is unchanged). ``ResidualStream`` is this
lowering's entry in ``aa_tflite.lowering.LOWERINGS``; where the offset form reaches a tensor, that
form is used instead.

Example:
    >>> graphs = stream_reachable(tflite)  # doctest: +SKIP
    >>> values = tensor_values(tflite, list(graphs), x_cal)  # doctest: +SKIP
    >>> lowered = apply_stream(tflite, {t: StreamChoice(4, fit_stream(values[t], 4,
    ...                         min_step=g.scale)) for t, g in graphs.items()})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.lowering.offset import biased_linear, offset_reachable
from aa_tflite.lowering.tensor_edit import HI_QUANTILES, TensorLowering, edit_tensors, subsample
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.tflite.flatbuffer import OpInfo, TensorInfo
from aa_tflite.tflite.kernel_math import set_quant
from aa_tflite.tflite.ops import SHAPE_ONLY, WEIGHTED, consumers, producers
from aa_tflite.types import SiteConfig

__all__ = ["ResidualStream", "StreamChoice", "StreamGraph", "apply_stream", "fit_stream",
           "stream_reachable", "stream_refusals"]

_HOMOGENEOUS = frozenset({"NONE", "RELU"})  # fused activations that commute with x -> x / m
_PASS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "PAD", "RESHAPE", "RELU"})
_N1_TO_1 = schema.ActivationFunctionType.RELU_N1_TO_1


@dataclasses.dataclass(frozen=True)
class StreamGraph:
    """A signed tensor that reaches a residual ``ADD``, and the stream divided with it.

    Attributes:
        tensor: The signed tensor (a weighted op's output, read only by the ``ADD``).
        producer: Index of the weighted op that writes it.
        producer_op: That op's name.
        add: Index of the ``ADD``.
        members: The stream's other tensors (activations and constants), scales divided by m.
        writers: Weighted ops that write a stream tensor: filter and bias scales divided by m.
        readers: Weighted ops that read a stream tensor: filter scales multiplied by m.
        scale: The tensor's int8 scale in the baseline.
    """

    tensor: int
    producer: int
    producer_op: str
    add: int
    members: tuple[int, ...]
    writers: tuple[int, ...]
    readers: tuple[int, ...]
    scale: float


@dataclasses.dataclass(frozen=True)
class StreamChoice:
    """The stream lowering of one tensor: ``bits`` and the half-range ``m``: the levels are
    ``m * k / 2^(bits-1)``, ``k = -2^(bits-1) .. 2^(bits-1) - 1``."""

    bits: int
    m: float


class _Walk:
    """The stream around one ``ADD``: a breadth-first walk over the linear ops that carry it."""

    def __init__(self, ops: list[OpInfo], tensors: list[TensorInfo], outputs: set[int]) -> None:
        self.tensors, self.outputs = tensors, outputs
        self.readers, self.producer = consumers(ops), producers(ops)

    def run(self, y: int, add: OpInfo) -> tuple[set[int], set[int], set[int], str] | None:
        """(members, writers, readers, why not); None members when the stream is not linear."""
        members: set[int] = {y}
        writers: set[int] = set()
        readers: set[int] = set()
        inside = {add.index}
        frontier = [t for t in (*add.inputs, *add.outputs) if t >= 0 and t != y]
        while frontier:
            t = frontier.pop()
            if t in members:
                continue
            members.add(t)
            why = self._tensor(t)
            if why:
                return None, set(), set(), why
            if self.tensors[t].is_constant:  # an ADD's constant: divided, so read by it alone
                if len(self.readers.get(t, [])) != 1:
                    return None, set(), set(), f"constant tensor {t} is shared"
                continue
            p = self.producer.get(t)
            if p is not None and p.index not in inside:
                if self._linear(p):
                    inside.add(p.index)
                    frontier += [*self._carried(p), *p.outputs]
                elif p.name in WEIGHTED and p.fused_activation in _HOMOGENEOUS:
                    writers.add(p.index)
                else:
                    return None, set(), set(), f"{p.name} (op {p.index}) writes it"
            for r, pos in self.readers.get(t, []):
                if r.name in SHAPE_ONLY or r.index in inside:
                    continue
                if self._linear(r):
                    inside.add(r.index)
                    frontier += [*self._carried(r), *r.outputs]
                elif r.name in WEIGHTED and pos == 0:
                    readers.add(r.index)
                else:
                    return None, set(), set(), f"{r.name} (op {r.index}) reads it"
        members.discard(y)
        return members, writers, readers, ""

    def _tensor(self, t: int) -> str:
        info = self.tensors[t]
        if t in self.outputs:
            return "it reaches a model output"
        if info.dtype != "INT8" or len(info.scale) != 1:
            return f"tensor {t} is not a per-tensor int8 tensor"
        if self.producer.get(t) is None and not info.is_constant:
            return "it reaches a model input"
        return ""

    def _carried(self, op: OpInfo) -> list[int]:
        """The inputs of a linear op that are divided with the stream: all of an ADD's, a MUL's
        activation (not its constant), the first of any other."""
        if op.name == "ADD":
            return [i for i in op.inputs if i >= 0]
        if op.name == "MUL":
            return [i for i in op.inputs if i >= 0 and not self.tensors[i].is_constant]
        return [op.inputs[0]]

    def _linear(self, op: OpInfo) -> bool:
        """An op that maps ``x / m`` to ``its output / m``, every stream input divided alike."""
        if op.fused_activation not in (None, *_HOMOGENEOUS):
            return False
        if op.name == "ADD":
            return True
        if op.name == "MUL":  # one activation and one constant: the constant stays
            return sum(not self.tensors[i].is_constant for i in op.inputs if i >= 0) == 1
        return op.name in _PASS


def stream_reachable(tflite: bytes) -> dict[int, StreamGraph]:
    """The signed tensors the stream form reaches: each written by a weighted op with no
    activation and a bias, read only by one ``ADD``, not reached by the offset form, and alone
    in a linear stream (see the module's docstring).

    Example:
        >>> stream_reachable(open("mini_resnet.tflite", "rb").read())  # doctest: +SKIP
        {18: StreamGraph(tensor=18, producer=2, ...)}
    """
    return _reach(tflite)[0]


def stream_refusals(tflite: bytes) -> dict[int, str]:
    """Tensor -> why the stream form does not reach it, for signed tensors read by one ADD."""
    return _reach(tflite)[1]


def _reach(tflite: bytes, *, planning: bool = True
           ) -> tuple[dict[int, StreamGraph], dict[int, str]]:
    """The streams, and why the signed ADD inputs not reached stay int8. ``planning=False`` is
    the writer's view of a file other forms have already edited: their units were kept apart
    from this form's when planning (offset tensors and partners excluded, one such tensor per
    stream), and their edits (a fused RELU on an offset producer) must not move that line."""
    ops, tensors, returned = flatbuffer.describe_bytes(tflite)
    walk = _Walk(ops, tensors, set(returned))
    # The offset form's tensors and their partners: the offset form writes both.
    offsets = {u for t, g in offset_reachable(tflite).items() for u in (t, g.partner)} \
        if planning else set()
    found: dict[int, StreamGraph] = {}
    why: dict[int, str] = {}
    for add in ops:
        if add.name != "ADD" or add.fused_activation not in _HOMOGENEOUS:
            continue
        for y in add.inputs:
            p = walk.producer.get(y)
            if y < 0 or y in offsets or y in found or not biased_linear(p, tensors) \
                    or [r.index for r, _ in walk.readers.get(y, [])] != [add.index] \
                    or y in walk.outputs or len(tensors[y].scale) != 1:
                continue
            members, writers, readers, note = walk.run(y, add)
            if members is None:
                why[y] = f"the stream it would divide is not linear: {note}"
                continue
            found[y] = StreamGraph(y, p.index, p.name, add.index, tuple(sorted(members)),
                                   tuple(sorted(writers)), tuple(sorted(readers)),
                                   float(tensors[y].scale[0]))
    shared = {t for t, g in found.items() for u, h in found.items()
              if planning and u != t and set(g.members) & (set(h.members) | {h.tensor})}
    for t in shared:
        why[t] = "its stream holds another signed tensor that would need the same m"
        del found[t]
    return found, why


def fit_stream(values: np.ndarray, bits: int, *, min_step: float) -> float:
    """The half-range ``m`` with the least squared error over quantiles of ``|values|``; the step
    ``m / 2^(bits-1)`` is never below ``min_step``.

    Example:
        >>> round(fit_stream(np.linspace(-2, 2, 401), 4, min_step=0.01), 2)
        2.0
    """
    half = 2 ** (bits - 1)
    v = subsample(np.asarray(values, np.float64).reshape(-1, 1)).reshape(-1)
    best = None
    for q in HI_QUANTILES:
        m = max(float(np.quantile(np.abs(v), q)), min_step * half, 1e-12)
        step = m / half
        k = np.clip(np.round(v / step), -half, half - 1)
        err = float(np.mean((v - k * step) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, m)
    return best[1]


def apply_stream(tflite: bytes, choices: Mapping[int, StreamChoice]) -> bytes:
    """Writes the stream form of each chosen tensor (a key of ``stream_reachable``). No op and no
    tensor is added; the producer's fused activation becomes ``RELU_N1_TO_1``. Choices with
    ``bits=8`` are skipped.

    Raises:
        AAError: A tensor is not reachable.
    """
    return edit_tensors(tflite, choices, lambda b: _reach(b, planning=False)[0], _write, (
        "Tensor {t} is not reachable by the stream form (a signed tensor read only by one ADD, "
        "alone in a linear residual stream). Reachable: {known}"))


def _scale_by(t: schema.TensorT, factor: float) -> None:
    q = t.quantization
    set_quant(t, np.asarray(q.scale, np.float64) * factor, q.zeroPoint)


def _write(model: schema.ModelT, ops: list[OpInfo], tensors: list[TensorInfo],
           users: Mapping[int, int], chosen: list[tuple[int, StreamChoice, StreamGraph]]) -> None:
    """Writes the stream form of each chosen tensor into the unpacked ``model``."""
    graph = model.subgraphs[0]
    for t, choice, g in chosen:
        half = 2 ** (int(choice.bits) - 1)
        m = max(float(choice.m), g.scale * half)
        for u in g.members:
            _scale_by(graph.tensors[u], 1.0 / m)
        for k in (*g.writers, g.producer):
            _scale_by(graph.tensors[ops[k].inputs[1]], 1.0 / m)
            if len(ops[k].inputs) > 2 and ops[k].inputs[2] >= 0:  # a writer may have no bias
                _scale_by(graph.tensors[ops[k].inputs[2]], 1.0 / m)
        for k in g.readers:
            _scale_by(graph.tensors[ops[k].inputs[1]], m)
        graph.operators[g.producer].builtinOptions.fusedActivationFunction = _N1_TO_1
        set_quant(graph.tensors[t], [1.0 / half], [128 - half], 0)


class ResidualStream(TensorLowering):
    """Signed tensors that reach a residual ``ADD``, below 8 bits with the residual stream
    divided by one factor (``apply_stream``): units named ``stream:<tensor name>``."""

    kind = "stream"
    form = "signed, stream form"
    how = "writes y / m under RELU_N1_TO_1, the residual stream divided by m"
    apply_tensors = staticmethod(apply_stream)

    def reach(self, tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], dict[int, str]]:
        """Every tensor ``stream_reachable`` gives, as a unit. The signed form's notes say why
        the others stay int8 (``stream_refusals`` adds this form's reason to the floor's)."""
        _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        found, _ = _reach(tflite)
        units: dict[str, SiteGraph] = {}
        for t, g in sorted(found.items()):
            name = f"stream:{tensors[t].name.split(';')[0]}"
            units[name] = SiteGraph(
                name=name, lowering=self.kind, tensor=t, group=(t,), producer=g.producer,
                producer_op=g.producer_op, can_requantize=True,
                notes=(f"signed {g.producer_op} output that reaches ADD (op {g.add}) beside an "
                       f"identity: written as y / m under RELU_N1_TO_1; {len(g.members)} stream "
                       f"tensors divided by m, {len(g.writers)} writers and {len(g.readers)} "
                       "readers' filter scales rescaled",), scale=g.scale)
        return units, {}

    def fit(self, values: Callable[[], np.ndarray], config: SiteConfig, unit: SiteGraph, *,
            per_channel: bool = False) -> StreamChoice:
        """One half-range from the data: the config gives bits only."""
        b = self.bits_only(config, unit)
        return StreamChoice(b, fit_stream(values(), b, min_step=unit.scale))
