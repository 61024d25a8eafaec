"""Where each ReLU site sits in an int8 ``.tflite``, and which zero-cost edits it can take. No
TensorFlow import.

A site's tensor carries its values with one set of quantization parameters through the ops that
copy values (pooling, reshape, pad, slices: ``ops.SAME_PARAMS``); ``analyse`` collects that
group, the op that applies the ReLU (the producer), the weighted ops that read the group, and why
an edit is not offered. Sites whose tensors an op joins at one scale (``CONCATENATION``,
``PACK``) become a tie group that takes one precision and one clip together, when every input of
that op is a site that can change; any other op that needs one scale on several inputs blocks a
new precision. A threshold needs a producer with a bias to fold it into (not, e.g., a residual
``ADD``).

Each ``SiteGraph`` names the lowering that writes it (``SiteGraph.lowering``, the ``kind`` of an
``aa_tflite.lowering.LOWERINGS`` entry): ``analyse`` finds the ReLU sites (kind ``RELU_KIND``);
the lowerings of signed tensors build theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.flatbuffer import OpInfo, TensorInfo
from aa_tflite.tflite.ops import (
    CLAMPING,
    JOINING,
    SAME_PARAMS,
    SHAPE_ONLY,
    TIED,
    WEIGHTED,
    DisjointSets,
    consumers,
    model_outputs,
    producers,
)

__all__ = ["RELU_KIND", "SiteGraph", "analyse"]

RELU_KIND = "relu"  # the lowering of the sites ``analyse`` finds (``lowering.relu``)
_NO_PRECISION = "no precision below 8 bits and no clip offered"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SiteGraph:
    """A planning site: where its tensor sits in the flatbuffer, and which edits it can take at
    zero cost. Built by keyword only.

    Attributes:
        name: The site.
        lowering: The kind of the lowering that writes it (an ``aa_tflite.lowering.LOWERINGS``
            entry's ``kind``): ``"relu"`` for a ReLU output (``analyse``), ``"signed"`` or
            ``"offset"`` for a weighted op's output with no activation.
        tensor: The site's tensor (as the converter's names gave it).
        group: The tensors that carry the site's values with the same quantization parameters:
            the output of the op that applies the ReLU, and what pass-through ops make of it.
        producer: Index of the op that writes ``group[0]``.
        producer_op: That op's name, e.g. ``CONV_2D``.
        requant_consumers: Weighted ops that read a group tensor (their bias follows its scale).
        correction_consumer: The one weighted op all of the site's values flow into, and the
            tensor it reads, or None when there is not exactly one.
        can_requantize: Bits and clip can change (no tied op, the producer clamps at zero).
        can_threshold: A threshold can be folded into the producer's bias.
        notes: Why an edit is not offered, in words for the report.
        scale: The baseline's scale of the site tensor (the int8 step).
        can_equalize: Its channels can be rescaled (per-channel producer, a ReLU, one weighted
            consumer that divides the scales out).
        relu6_readers: Standalone RELU6 ops that read a group tensor. TFLite Micro's RELU6
            copies values in its input's terms, so when the site's parameters change they are
            written as RELU, which requantizes on every runtime; their output's int8 range
            already ends at or below 6, so int8 saturation keeps the clamp.
        tie: The sites (this one included, sorted) whose tensors an op that needs one scale on
            all its inputs and its output (``CONCATENATION``, ``PACK``) joins: they take one
            precision and one clip together, and their groups include that op's output. Empty
            when the site is alone.
        joins: Those joining ops' indices.
    """

    name: str
    lowering: str
    tensor: int
    group: tuple[int, ...]
    producer: int
    producer_op: str
    requant_consumers: tuple[int, ...] = ()
    correction_consumer: tuple[int, int] | None = None
    can_requantize: bool = False
    can_threshold: bool = False
    notes: tuple[str, ...] = ()
    scale: float = 0.0
    can_equalize: bool = False
    relu6_readers: tuple[int, ...] = ()
    tie: tuple[str, ...] = ()
    joins: tuple[int, ...] = ()

    @property
    def signed(self) -> bool:
        """Not a ReLU output: a weighted op's signed output, lowered by a signed form."""
        return self.lowering != RELU_KIND


@dataclasses.dataclass
class _Walk:
    """What a breadth-first walk from a site's root tensor, over the ops that keep its
    parameters, finds."""

    group: list[int]
    notes: list[str] = dataclasses.field(default_factory=list)
    tied: bool = False  # an op it reaches blocks a new precision
    boundary: list[tuple[OpInfo, int, int]] = dataclasses.field(default_factory=list)
    relu6_readers: list[int] = dataclasses.field(default_factory=list)
    joins: list[int] = dataclasses.field(default_factory=list)

    def add(self, tensors) -> list[int]:
        """Puts ``tensors`` in the group; returns those that were new (to walk on from)."""
        new = []
        for o in tensors:
            if o not in self.group:
                self.group.append(o)
                new.append(o)
        return new

    def block(self, note: str) -> None:
        self.tied = True
        self.notes.append(note)


def analyse(tflite: bytes, site_tensors: Mapping[str, int | None]) -> dict[str, SiteGraph]:
    """Finds, for each site, its tensor group, producer and consumers, and what it can take.

    Example:
        >>> graphs = analyse(tflite, {"conv1_relu": 14})  # doctest: +SKIP
        >>> graphs["conv1_relu"].can_requantize  # doctest: +SKIP
        True

    Args:
        tflite: The int8 model's bytes.
        site_tensors: Site name -> its tensor; sites without one (None) are left out.

    Returns:
        Site name -> its ``SiteGraph``, in ``site_tensors`` order, for each site whose tensor (or
        the tensor it copies) an op writes.
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    producer_of = producers(ops)
    readers = consumers(ops)
    graph_outputs = model_outputs(model)
    out = {}
    for site, tensor in site_tensors.items():
        if tensor is None:
            continue
        root = tensor  # walk back through pass-through ops to the op that applies the ReLU
        while root in producer_of and producer_of[root].name in SAME_PARAMS:
            root = producer_of[root].inputs[0]
        if root in producer_of:
            out[site] = _site_graph(site, tensor, producer_of[root],
                                    _walk(root, readers, tensors), tensors, graph_outputs)
    return _tie(out, ops, tensors)


def _walk(root: int, readers, tensors: list[TensorInfo]) -> _Walk:
    walk = _Walk([root])
    frontier = [root]
    while frontier:
        t = frontier.pop(0)
        for op, pos in readers.get(t, []):
            frontier += _visit(walk, op, pos, t, tensors)
    return walk


def _visit(walk: _Walk, op: OpInfo, pos: int, t: int, tensors: list[TensorInfo]) -> list[int]:
    """Takes one op that reads group tensor ``t`` (as input ``pos``) into the walk; returns the
    tensors to walk on from."""
    if op.name in SHAPE_ONLY:
        return []
    if op.name in JOINING and all(tensors[o].scale == tensors[t].scale and
                                  tensors[o].zero_point == tensors[t].zero_point
                                  for o in op.outputs):
        if op.index in walk.joins:
            return []
        walk.joins.append(op.index)  # a tie: its output joins the group
        return walk.add(op.outputs)
    if op.name in SAME_PARAMS and pos == 0:
        new = []
        for o in op.outputs:
            if tensors[o].scale != tensors[t].scale:
                walk.block(f"{_NO_PRECISION}: {op.name} (op {op.index}) copies values but has "
                           "its own output scale")
            else:
                new += walk.add([o])
        return new
    if op.name in TIED:
        walk.block(f"{_NO_PRECISION}: feeds {op.name} (op {op.index}), whose inputs must share "
                   "one scale")
    if op.name == "RELU6":  # TFLM's copies: written as RELU, if that is exact
        r6 = tensors[op.outputs[0]]
        top = r6.scale[0] * (127 - r6.zero_point[0]) if r6.scale else float("inf")
        if top <= 6.0 * (1 + 1e-6):
            walk.relu6_readers.append(op.index)
        else:
            walk.block(f"{_NO_PRECISION}: feeds a standalone RELU6 (op {op.index}), which "
                       "TFLite Micro runs without requantizing")
    walk.boundary.append((op, pos, t))
    return []


def _site_graph(site: str, tensor: int, prod: OpInfo, walk: _Walk, tensors: list[TensorInfo],
                graph_outputs: set[int]) -> SiteGraph:
    """The ReLU site whose walk from its producer's output found ``walk``."""
    notes = walk.notes
    act = prod.fused_activation if prod.name in WEIGHTED or prod.name == "ADD" else None
    clamps = act in CLAMPING or prod.name in CLAMPING
    if not clamps:
        notes.append(f"{_NO_PRECISION}: {prod.name} (op {prod.index}) does not clamp at zero")
    if any(t in graph_outputs for t in walk.group):
        notes.append("is a model output: its parameters change with the plan")
    can_threshold = (prod.name in WEIGHTED and act in CLAMPING and len(prod.inputs) > 2
                     and prod.inputs[2] >= 0)
    if not can_threshold:
        notes.append(f"threshold not offered: its producer {prod.name} (op {prod.index}) has "
                     "no bias to fold it into")
    weighted = [(op, pos, t) for op, pos, t in walk.boundary if op.name in WEIGHTED]
    if any(pos != 0 for _, pos, _ in weighted):
        walk.block(f"{_NO_PRECISION}: used as a weight tensor")
    corr = _correction_consumer(walk.boundary, weighted, notes)
    root = walk.group[0]
    can_requantize = clamps and not walk.tied
    return SiteGraph(
        name=site, lowering=RELU_KIND, tensor=tensor, group=tuple(walk.group),
        producer=prod.index, producer_op=prod.name,
        requant_consumers=tuple(sorted({op.index for op, _, _ in weighted})),
        correction_consumer=corr, can_requantize=can_requantize, can_threshold=can_threshold,
        notes=tuple(notes),
        scale=float(tensors[root].scale[0]) if tensors[root].scale else 0.0,
        can_equalize=(can_requantize and can_threshold and corr is not None
                      and len(tensors[prod.inputs[1]].scale) > 1 and not walk.joins),
        relu6_readers=tuple(walk.relu6_readers), joins=tuple(walk.joins))


def _correction_consumer(boundary, weighted, notes: list[str]) -> tuple[int, int] | None:
    """The one weighted op (and the tensor it reads) that all of a site's values reach, with a
    bias to fold a correction into; else None, with a note on why."""
    if len(boundary) == 1 and len(weighted) == 1 and weighted[0][1] == 0:
        consumer = weighted[0][0]
        if len(consumer.inputs) > 2 and consumer.inputs[2] >= 0:
            return consumer.index, weighted[0][2]
        # e.g. use_bias=False, or an all-zero bias the converter dropped
        notes.append(f"no consumer correction: its consumer {consumer.name} (op "
                     f"{consumer.index}) has no bias to fold it into")
        return None
    notes.append(f"no consumer correction: its values reach {len(boundary)} rescaling ops, "
                 "not one weighted op")
    return None


def _tie(graphs: dict[str, SiteGraph], ops: list[OpInfo],
         tensors: list[TensorInfo]) -> dict[str, SiteGraph]:
    """Joins the sites that feed one ``CONCATENATION``/``PACK`` into tie groups. A tie is offered
    only when every input of every joining op in it is a site tensor (or a pass-through copy of
    one) that can change; otherwise its sites are not offered a new precision, and the notes say
    which input blocks it."""
    sets = DisjointSets(graphs)
    by_op: dict[int, list[str]] = {}
    for s, g in graphs.items():
        for k in g.joins:
            by_op.setdefault(k, []).append(s)
    for members in by_op.values():
        sets.join(members)
    units: dict[str, list[str]] = {}
    for s in graphs:
        if graphs[s].joins:
            units.setdefault(sets.find(s), []).append(s)
    out = dict(graphs)
    for members in units.values():
        out.update(_tied(sorted(members), graphs, ops, tensors))
    return out


def _tied(members: list[str], graphs: Mapping[str, SiteGraph], ops: list[OpInfo],
          tensors: list[TensorInfo]) -> dict[str, SiteGraph]:
    """The sites of one tie group, with the tie (or what blocks it) written in."""
    covered = {t for s in members for t in graphs[s].group}
    blocked = [f"input {pos} of {ops[k].name} (op {k}) is not a ReLU output that can change"
               for k in sorted({k for s in members for k in graphs[s].joins})
               for pos, t in enumerate(ops[k].inputs)
               if t >= 0 and not tensors[t].is_constant and t not in covered]
    blocked += [f"{s} cannot change: {'; '.join(graphs[s].notes)}" for s in members
                if not graphs[s].can_requantize]
    out = {}
    for s in members:
        g = graphs[s]
        others = [m for m in members if m != s]
        joined = ", ".join(sorted({ops[k].name for k in g.joins}))
        if blocked:
            note = ("precision and clip not offered: tied to " + ", ".join(others)
                    + " by one scale, and " + "; ".join(blocked))
            out[s] = dataclasses.replace(g, can_requantize=False, tie=tuple(members),
                                         notes=(*g.notes, note))
        else:
            note = (f"tied to {', '.join(others)} by one scale ({joined}): they take one "
                    "precision and one clip together" if others else
                    f"its {joined} output takes its precision too")
            out[s] = dataclasses.replace(g, tie=tuple(members), notes=(*g.notes, note))
    return out
