"""Zero-cost lowering of a plan: edits to an int8 ``.tflite``'s quantization parameters and constants.

Every variant of a model (one site changed for a sensitivity measurement, or a whole plan) is made
from one int8 conversion by editing its flatbuffer, never by reconverting. No op and no tensor is
added, so the TFLM arena of an edited model equals the plain int8 model's. No TensorFlow import.

How each control is written:

* **b bits** (``aa_tflite.precision``; e.g. 4 bits: step ``clip / 15``): the site's output tensor
  is declared with scale ``clip / (2^b - 1)`` and zero point ``128 - 2^b``. The producer's fused
  ReLU/ReLU6 clamps below at the zero point and int8 saturates at 127, so the tensor holds the
  ``2^b`` levels ``128 - 2^b .. 127`` for any input, the top one being the clip. Ops that
  pass values through unchanged (pooling, reshape, pad, slices) carry the same parameters to
  their outputs, which stay within those levels. Weighted consumers get their
  int32 bias rescaled to the new input scale; other consumers read the parameters at run time.
* **clip** at 8 bits: scale ``clip / 255``, zero point ``-128``; int8 saturation is the clamp.
* **threshold** ``T`` (the ``shift`` lowering, ``max(x - T, 0)``): ``T`` is subtracted from the
  producer's bias, in its int32 units.
* **correction**: a per-channel affine ``a * y + b`` that brings the consumer's input back towards
  the baseline model's, folded into the one weighted consumer (its kernel and bias are requantized).

A site cannot change its parameters when one of its tensors feeds an op whose inputs must share one
scale (``CONCATENATION``), and cannot take a threshold when its producer has no bias (e.g. a
residual ``ADD``). ``analyse`` says which, per site, and the report prints it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer
from aa_tflite.types import AAError

__all__ = ["MIN_ACTIVATION_SCALE", "SiteEdit", "SiteGraph", "analyse",
           "apply_edits", "repair_scales", "rescale_tensors", "scale_problems"]


_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
# Ops whose int8 kernels copy or pick input values without requantizing, in LiteRT and in TFLite
# Micro (read from both runtimes' kernels; several check input and output params are equal,
# e.g. REDUCE_MAX, EXPAND_DIMS, BATCH_TO_SPACE_ND, pooling in TFLM): output params = input's.
_SAME_PARAMS = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
                "STRIDED_SLICE", "SLICE", "PAD", "TRANSPOSE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
                "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "REDUCE_MAX", "REDUCE_MIN",
                "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "MIRROR_PAD", "TILE", "BROADCAST_TO",
                "REVERSE_V2", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "UNPACK"}
# Ops that need one scale on several inputs (checked, or implied by a raw pick between inputs):
# a site feeding one cannot change alone. The joining ops below are planned as one tie group
# when every input is a site that can change; the others block a change.
_TIED = {"CONCATENATION", "PACK", "PADV2", "MAXIMUM", "MINIMUM", "SELECT", "SELECT_V2",
         "DYNAMIC_UPDATE_SLICE", "ADD_N", "FILL"}
_JOINING = {"CONCATENATION", "PACK"}  # output = the inputs side by side, one scale for all
_SHAPE_ONLY = {"SHAPE"}  # read a tensor's shape, not its values
_CLAMPING = {"RELU", "RELU6"}
# TFLite Micro's standalone RELU6 clamps in the input's terms and copies (LiteRT's requantizes),
# so a RELU6 whose output gets new parameters is written as a RELU, which requantizes in both;
# int8 saturation at the clip (<= 6) is then the upper bound.
_RELU_CODE, _RELU_VERSION = schema.BuiltinOperator.RELU, 2
# A scale below this is a tensor that was (nearly) constant zero on the calibration data; the
# runtimes' fixed-point setup can fail or abort on such scales (e.g. SOFTMAX needs
# beta * scale > 2^-26 in TFLM, fused RELU6 needs scale >= 6 / 2^31).
MIN_ACTIVATION_SCALE = 2.0 ** -23

@dataclasses.dataclass(frozen=True)
class SiteGraph:
    """Where a site sits in the flatbuffer, and which edits it can take at zero cost.

    Attributes:
        name: The site.
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
        signed: A signed tensor (a weighted op's output with no activation), lowered by
            ``aa_tflite.lowering.signed`` rather than by these edits; its name is ``signed:<tensor>``.
        offset: With ``signed``: lowered by the offset form (``signed.apply_offset``), for a
            signed tensor that reaches a residual ``ADD``; its name is ``offset:<tensor>``.
    """

    name: str
    tensor: int
    group: tuple[int, ...]
    producer: int
    producer_op: str
    requant_consumers: tuple[int, ...]
    correction_consumer: tuple[int, int] | None
    can_requantize: bool
    can_threshold: bool
    notes: tuple[str, ...]
    scale: float = 0.0
    can_equalize: bool = False
    relu6_readers: tuple[int, ...] = ()
    tie: tuple[str, ...] = ()
    joins: tuple[int, ...] = ()
    signed: bool = False
    offset: bool = False


@dataclasses.dataclass(frozen=True)
class SiteEdit:
    """The flatbuffer edit of one site.

    Attributes:
        threshold: Real-valued ``T`` subtracted from the producer's bias.
        scale: New scale of the site's tensors, or None to keep it.
        zero_point: New zero point (with ``scale``).
        correction: Per-channel ``(a, b)`` over the last axis of the correction consumer's input,
            folded into that consumer, or None.
        channel_scale: Per-output-channel factors ``s`` for the producer (its filter scales and
            bias are multiplied by them, the int8 kernel is unchanged), or None. With ReLU,
            ``relu(s * x) = s * relu(x)``, so this equalizes channel ranges before a per-tensor
            4-bit scale; the consumer's correction divides them out again.
    """

    threshold: float = 0.0
    scale: float | None = None
    zero_point: int | None = None
    correction: tuple[np.ndarray, np.ndarray] | None = None
    channel_scale: np.ndarray | None = None


def _buffer_users(model: schema.ModelT) -> dict[int, int]:
    """How many tensors use each buffer (a shared constant gets its own copy before an edit)."""
    users: dict[int, int] = {}
    for t in model.subgraphs[0].tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    return users


def _consumers(ops) -> dict[int, list]:
    out: dict[int, list] = {}
    for op in ops:
        for pos, t in enumerate(op.inputs):
            if t >= 0:
                out.setdefault(t, []).append((op, pos))
    return out


def analyse(tflite: bytes, site_tensors: Mapping[str, int | None]) -> dict[str, SiteGraph]:
    """Finds, for each site, its tensor group, producer and consumers, and what it can take.

    Example:
        >>> graphs = analyse(tflite, {"conv1_relu": 14})  # doctest: +SKIP
        >>> graphs["conv1_relu"].can_requantize  # doctest: +SKIP
        True
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    producer_of = {t: op for op in ops for t in op.outputs}
    readers = _consumers(ops)
    graph_outputs = set(int(t) for t in (model.subgraphs[0].outputs if model.subgraphs[0].outputs
                                         is not None else []))
    out = {}
    for site, tensor in site_tensors.items():
        if tensor is None:
            continue
        root = tensor  # walk back through pass-through ops to the op that applies the ReLU
        while root in producer_of and producer_of[root].name in _SAME_PARAMS:
            root = producer_of[root].inputs[0]
        if root not in producer_of:
            continue
        prod = producer_of[root]
        group, frontier, notes = [root], [root], []
        tied = False
        boundary: list[tuple[object, int, int]] = []  # (op, pos, tensor) of ops that rescale
        relu6_readers: list[int] = []
        joins: list[int] = []
        while frontier:
            t = frontier.pop(0)
            for op, pos in readers.get(t, []):
                if op.name in _SHAPE_ONLY:
                    continue
                if op.name in _JOINING and all(tensors[o].scale == tensors[t].scale and
                                               tensors[o].zero_point == tensors[t].zero_point
                                               for o in op.outputs):
                    if op.index not in joins:  # a tie: its output joins the group
                        joins.append(op.index)
                        for o in op.outputs:
                            if o not in group:
                                group.append(o)
                                frontier.append(o)
                    continue
                if op.name in _SAME_PARAMS and pos == 0:
                    for o in op.outputs:
                        if tensors[o].scale != tensors[t].scale:
                            tied = True
                            notes.append(f"4-bit and clip not offered: {op.name} (op {op.index}) "
                                         "copies values but has its own output scale")
                        elif o not in group:
                            group.append(o)
                            frontier.append(o)
                    continue
                if op.name in _TIED:
                    tied = True
                    notes.append(f"4-bit and clip not offered: feeds {op.name} (op {op.index}), "
                                 "whose inputs must share one scale")
                if op.name == "RELU6":  # TFLM's copies: written as RELU, if that is exact
                    r6 = tensors[op.outputs[0]]
                    top = r6.scale[0] * (127 - r6.zero_point[0]) if r6.scale else float("inf")
                    if top <= 6.0 * (1 + 1e-6):
                        relu6_readers.append(op.index)
                    else:
                        tied = True
                        notes.append(f"4-bit and clip not offered: feeds a standalone RELU6 (op "
                                     f"{op.index}), which TFLite Micro runs without requantizing")
                boundary.append((op, pos, t))
        act = prod.fused_activation if prod.name in _WEIGHTED or prod.name == "ADD" else None
        clamps = act in _CLAMPING or prod.name in _CLAMPING
        if not clamps:
            notes.append(f"4-bit and clip not offered: {prod.name} (op {prod.index}) does not "
                         "clamp at zero")
        if any(t in graph_outputs for t in group):
            notes.append("is a model output: its parameters change with the plan")
        can_threshold = (prod.name in _WEIGHTED and act in _CLAMPING and len(prod.inputs) > 2
                         and prod.inputs[2] >= 0)
        if not can_threshold:
            notes.append(f"threshold not offered: its producer {prod.name} (op {prod.index}) has "
                         "no bias to fold it into")
        weighted = [(op, pos, t) for op, pos, t in boundary if op.name in _WEIGHTED]
        bad_weighted = [op for op, pos, _ in weighted if pos != 0]
        if bad_weighted:
            tied = True
            notes.append("4-bit and clip not offered: used as a weight tensor")
        corr = None
        if len(boundary) == 1 and len(weighted) == 1 and weighted[0][1] == 0:
            consumer = weighted[0][0]
            if len(consumer.inputs) > 2 and consumer.inputs[2] >= 0:
                corr = (consumer.index, weighted[0][2])
            else:  # e.g. use_bias=False, or an all-zero bias the converter dropped
                notes.append(f"no consumer correction: its consumer {consumer.name} (op "
                             f"{consumer.index}) has no bias to fold it into")
        else:
            notes.append(f"no consumer correction: its values reach {len(boundary)} rescaling ops, "
                         "not one weighted op")
        out[site] = SiteGraph(site, tensor, tuple(group), prod.index, prod.name,
                              tuple(sorted({op.index for op, _, _ in weighted})), corr,
                              clamps and not tied, can_threshold, tuple(notes),
                              float(tensors[root].scale[0]) if tensors[root].scale else 0.0,
                              clamps and not tied and can_threshold and corr is not None
                              and len(tensors[prod.inputs[1]].scale) > 1 and not joins,
                              tuple(relu6_readers), (), tuple(joins))
    return _tie(out, ops, tensors)


def _tie(graphs: dict[str, SiteGraph], ops, tensors) -> dict[str, SiteGraph]:
    """Joins the sites that feed one ``CONCATENATION``/``PACK`` into tie groups. A tie is offered
    only when every input of every joining op in it is a site tensor (or a pass-through copy of
    one) that can change; otherwise its sites are not offered a new precision, and the notes say
    which input blocks it."""
    parent = {s: s for s in graphs}

    def find(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    by_op: dict[int, list[str]] = {}
    for s, g in graphs.items():
        for k in g.joins:
            by_op.setdefault(k, []).append(s)
    for members in by_op.values():
        for s in members[1:]:
            parent[find(s)] = find(members[0])
    units: dict[str, list[str]] = {}
    for s in graphs:
        if graphs[s].joins:
            units.setdefault(find(s), []).append(s)
    out = dict(graphs)
    for members in units.values():
        members = sorted(members)
        covered = {t for s in members for t in graphs[s].group}
        blocked = [f"input {pos} of {ops[k].name} (op {k}) is not a ReLU output that can change"
                   for k in sorted({k for s in members for k in graphs[s].joins})
                   for pos, t in enumerate(ops[k].inputs)
                   if t >= 0 and not tensors[t].is_constant and t not in covered]
        blocked += [f"{s} cannot change: {'; '.join(graphs[s].notes)}" for s in members
                    if not graphs[s].can_requantize]
        for s in members:
            g = graphs[s]
            if blocked:
                note = ("precision and clip not offered: tied to " + ", ".join(
                    m for m in members if m != s) + " by one scale, and " + "; ".join(blocked))
                out[s] = dataclasses.replace(g, can_requantize=False, tie=tuple(members),
                                             notes=(*g.notes, note))
            else:
                others = [m for m in members if m != s]
                note = (f"tied to {', '.join(others)} by one scale "
                        f"({', '.join(sorted({ops[k].name for k in g.joins}))}): they take one "
                        "precision and one clip together" if others else
                        f"its {', '.join(sorted({ops[k].name for k in g.joins}))} output takes "
                        "its precision too")
                out[s] = dataclasses.replace(g, tie=tuple(members), notes=(*g.notes, note))
    return out


def _array(model: schema.ModelT, tensor: int, dtype) -> np.ndarray:
    t = model.subgraphs[0].tensors[tensor]
    data = model.buffers[t.buffer].data
    if data is None:
        raise AAError(f"Tensor {tensor} has no constant data; the .tflite may store weights "
                      "outside the flatbuffer, which aa_tflite does not edit.")
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(t.shape)


def _store(model: schema.ModelT, tensor: int, values: np.ndarray, users: Mapping[int, int]) -> None:
    t = model.subgraphs[0].tensors[tensor]
    data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8).copy()
    if users.get(t.buffer, 0) > 1:  # shared constant: give this tensor its own copy
        buf = schema.BufferT()
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    model.buffers[t.buffer].data = data


def _set_quant(t, scale, zero_point, dim: int | None = None) -> None:
    q = t.quantization
    q.scale = np.asarray(scale, np.float32).reshape(-1)
    q.zeroPoint = np.asarray(zero_point, np.int64).reshape(-1)
    if dim is not None:
        q.quantizedDimension = dim


def _per_channel(values, n: int) -> np.ndarray:
    v = np.asarray(values, np.float64).reshape(-1)
    return np.full(n, v[0]) if len(v) == 1 else v


def apply_edits(tflite: bytes, graphs: Mapping[str, SiteGraph],
                edits: Mapping[str, SiteEdit]) -> bytes:
    """Returns ``tflite`` with ``edits`` applied. No op or tensor is added; the input is not changed.

    Weighted ops whose kernel changes (a correction) are requantized per output channel; ops whose
    only change is a bias shift or a new input scale keep their int8 kernel bit for bit.

    Example:
        >>> four_bit = apply_edits(base, graphs, {"conv1_relu": SiteEdit(scale=0.1,
        ...                                       zero_point=112)})  # doctest: +SKIP
    """
    if not edits:
        return bytes(tflite)
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    graph = model.subgraphs[0]
    users = _buffer_users(model)
    new_params: dict[int, tuple[float, int]] = {}
    shifts: dict[int, float] = {}
    scales: dict[int, np.ndarray] = {}
    corrections: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for site, edit in edits.items():
        g = graphs.get(site)
        if g is None:
            raise AAError(f"Unknown site {site!r}: not among the analysed sites {sorted(graphs)}.")
        if edit.scale is not None:
            if not g.can_requantize:
                raise AAError(f"Site {site!r} cannot change its bits or clip: {'; '.join(g.notes)}")
            if not (edit.scale > 0 and np.isfinite(edit.scale)):
                raise AAError(f"A site's scale must be a positive number. Received: {edit.scale}")
            for t in g.group:
                new_params[t] = (float(edit.scale), int(edit.zero_point if edit.zero_point
                                                        is not None else -128))
        if edit.threshold:
            if not g.can_threshold:
                raise AAError(f"Site {site!r} cannot take a threshold: {'; '.join(g.notes)}")
            shifts[g.producer] = shifts.get(g.producer, 0.0) + float(edit.threshold)
        if edit.correction is not None:
            if g.correction_consumer is None:
                raise AAError(f"Site {site!r} has no single weighted consumer to correct.")
            corrections[g.correction_consumer[0]] = edit.correction
        if edit.channel_scale is not None:
            if not g.can_equalize:
                raise AAError(f"Site {site!r} cannot rescale its channels: it needs a per-channel "
                              "producer and one weighted consumer.")
            scales[g.producer] = np.asarray(edit.channel_scale, np.float64).reshape(-1)
    for site, edit in edits.items():
        g = graphs[site]
        for other in g.tie:
            if edit.scale is not None and (other not in edits or (
                    edits[other].scale, edits[other].zero_point) != (edit.scale, edit.zero_point)):
                raise AAError(f"Sites {list(g.tie)} share one scale (they feed "
                              f"{', '.join(sorted({ops[k].name for k in g.joins}))}): give them "
                              f"the same bits and clip. Received a change for {site!r} only, "
                              "or different ones.")
    for site in edits:
        g = graphs[site]
        if g.producer_op == "RELU6" and g.tensor in new_params:
            scale, zp = new_params[g.tensor]
            if scale * (127 - zp) > 6.0 * (1 + 1e-6):
                raise AAError(f"Site {site!r} is a ReLU6: its clip must be at most 6. Received: "
                              f"clip={scale * (127 - zp):.4g}")
            _set_opcode(model, graph.operators[g.producer], _RELU_CODE, _RELU_VERSION)
        if g.tensor in new_params:
            for k in g.relu6_readers:
                _set_opcode(model, graph.operators[k], _RELU_CODE, _RELU_VERSION)
    _write_params(model, ops, tensors, new_params, shifts, corrections, scales, users)
    return flatbuffer.write(model)


def _write_params(model, ops, tensors, new_params, shifts, corrections, scales, users) -> None:
    """Sets new activation parameters and requantizes every weighted op they touch."""
    rescaled = {op.index for op in ops if op.name in _WEIGHTED and op.inputs[0] in new_params}
    touched = set(shifts) | set(corrections) | set(scales) | rescaled
    for k in sorted(touched):
        _requantize(model, ops[k], tensors, new_params, shifts.get(k, 0.0), corrections.get(k),
                    scales.get(k), users)
    for t, (scale, zp) in new_params.items():
        _set_quant(model.subgraphs[0].tensors[t], [scale], [zp], 0)


def _set_opcode(model: schema.ModelT, op: schema.OperatorT, code: int, version: int) -> None:
    for k, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            op.opcodeIndex = k
            return
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    model.operatorCodes.append(oc)
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None


def _param_groups(ops, tensors) -> dict[int, int]:
    """Activation tensors that must keep equal parameters, as tensor -> group id: the inputs and
    outputs of ops that copy values (pass-through, tied, TFLM's standalone RELU6)."""
    parent = {t.index: t.index for t in tensors}

    def find(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for op in ops:
        if op.name in _SAME_PARAMS or op.name == "RELU6":
            linked = [op.inputs[0], *op.outputs]
        elif op.name in _TIED:
            linked = [t for t in (*op.inputs, *op.outputs) if t >= 0 and not tensors[t].is_constant]
        else:
            continue
        linked = [t for t in linked if t >= 0 and tensors[t].scale]
        for t in linked[1:]:
            parent[find(t)] = find(linked[0])
    return {t: find(t) for t in parent}


def _activation_tensors(tensors) -> list:
    return [t for t in tensors if not t.is_constant and t.dtype in ("INT8", "UINT8") and t.scale]


def scale_problems(tflite: bytes) -> list[tuple[int, float, str]]:
    """Activation scales the runtimes cannot set up: ``(tensor, smallest safe scale, why)``.

    The rules come from LiteRT's and TFLite Micro's int8 kernels, where these cases abort the
    process (``ADD``: output scale > largest input scale * 2^-19; ``SOFTMAX``: beta * input scale
    > 2^-26) or fail (fused ``RELU6``: scale >= 6 / 2^31; XNNPACK's conv and fully-connected:
    a requantization multiplier below 256). Any scale below ``MIN_ACTIVATION_SCALE`` is reported
    too.

    Example:
        >>> scale_problems(open("model.tflite", "rb").read())  # doctest: +SKIP
        []
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    out = []
    for t in _activation_tensors(tensors):
        if t.scale[0] < MIN_ACTIVATION_SCALE:
            out.append((t.index, MIN_ACTIVATION_SCALE,
                        f"scale {t.scale[0]:.3g} (the tensor was ~0 on the calibration data)"))
    for op in ops:
        ins = [tensors[i] for i in op.inputs if i >= 0 and tensors[i].scale]
        if op.name in ("ADD", "SUB", "ADD_N", "CUMSUM") and ins and tensors[op.outputs[0]].scale:
            need = max(t.scale[0] for t in ins) * 2.0 ** -18
            if tensors[op.outputs[0]].scale[0] < need:
                out.append((op.outputs[0], need, f"{op.name} (op {op.index}) output scale below its "
                            "inputs' * 2^-19"))
        if op.name in _WEIGHTED and len(ins) >= 2 and tensors[op.outputs[0]].scale:
            need = ins[0].scale[0] * max(ins[1].scale) / 255.0
            if tensors[op.outputs[0]].scale[0] < need:
                out.append((op.outputs[0], need, f"{op.name} (op {op.index}) output scale so "
                            "small that its requantization multiplier reaches 256 (XNNPACK "
                            "refuses the op)"))
        if op.name in ("SOFTMAX", "LOG_SOFTMAX") and ins:
            beta = float(getattr(model.subgraphs[0].operators[op.index].builtinOptions, "beta",
                                 1.0) or 1.0)
            need = 2.0 ** -25 / beta
            if ins[0].scale[0] < need:
                out.append((ins[0].index, need, f"{op.name} (op {op.index}) input scale * beta "
                            "below 2^-26"))
    return out


def rescale_tensors(tflite: bytes, scales: Mapping[int, float]) -> bytes:
    """Gives activation tensors new scales (zero points kept), with every tensor that must share
    their parameters, and requantizes the biases of the weighted ops that read them. No op or
    tensor is added.

    Example:
        >>> fixed = rescale_tensors(tflite, {22: 1e-6})  # doctest: +SKIP
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    group = _param_groups(ops, tensors)
    wanted: dict[int, float] = {}
    for t, sc in scales.items():
        wanted[group[t]] = max(wanted.get(group[t], 0.0), float(sc))
    new_params = {t.index: (max(wanted[group[t.index]], t.scale[0]), t.zero_point[0])
                  for t in _activation_tensors(tensors) if group[t.index] in wanted}
    users = _buffer_users(model)
    _write_params(model, ops, tensors, new_params, {}, {}, {}, users)
    return flatbuffer.write(model)


def repair_scales(tflite: bytes) -> tuple[bytes, list[str]]:
    """Raises the activation scales ``scale_problems`` finds, until there are none.

    Returns:
        The repaired model (``tflite`` itself when nothing was wrong) and one note per repair.

    Raises:
        AAError: The scales could not be repaired.
    """
    notes: list[str] = []
    for _ in range(8):
        problems = scale_problems(tflite)
        if not problems:
            return tflite, notes
        _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        need: dict[int, float] = {}
        for t, sc, why in problems:
            need[t] = max(need.get(t, 0.0), sc * 1.0001)
            notes.append(f"tensor {t} ({tensors[t].name.split(';')[0][-60:]}): {why}; its scale "
                         f"was raised to {need[t]:.3g} so every runtime can run it")
        tflite = rescale_tensors(tflite, need)
    raise AAError("The int8 model has activation scales the TFLite runtimes cannot set up, and "
                  f"raising them did not settle: {problems[:3]}. Check the model for layers whose "
                  "outputs are constant zero on the representative data.")


@dataclasses.dataclass(frozen=True)
class _Kernel:
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


def _kernel(model: schema.ModelT, op, tensors) -> _Kernel:
    wt = op.inputs[1]
    info = tensors[wt]
    if info.dtype != "INT8":
        raise AAError(f"{op.name} (op {op.index}) has {info.dtype} weights; only int8 kernels "
                      "can be edited.")
    q = _array(model, wt, np.int8).astype(np.float64)
    dim = model.subgraphs[0].tensors[wt].quantization.quantizedDimension or 0
    scale = _per_channel(info.scale, q.shape[dim])
    k = _Kernel(q, q, scale, dim, len(info.scale) == 1)
    return dataclasses.replace(k, w=q * k.broadcast(scale))


def _absorb_input(op_name: str, w: np.ndarray, bias: np.ndarray, a: np.ndarray,
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


def _store_kernel(model, op, k: _Kernel, w: np.ndarray, users) -> np.ndarray:
    """Requantizes real weights ``w`` into the op's int8 kernel, per output channel (per tensor
    where the op had one scale); returns the new per-channel scales."""
    per = np.moveaxis(np.abs(w), k.dim, 0).reshape(k.n_out, -1).max(axis=1)
    if k.per_tensor:
        per = np.full(k.n_out, per.max())
    new_scale = np.where(per > 0, per / 127.0, k.scale)
    new_q = np.clip(np.round(w / k.broadcast(new_scale)), -127, 127)
    _store(model, op.inputs[1], new_q.astype(np.int8), users)
    _set_filter_scale(model, op, k, new_scale)
    return new_scale


def _set_filter_scale(model, op, k: _Kernel, scale: np.ndarray) -> None:
    n = 1 if k.per_tensor else k.n_out
    _set_quant(model.subgraphs[0].tensors[op.inputs[1]], np.asarray(scale)[:n],
               np.zeros(n, np.int64), k.dim)


def _store_bias(model, op, tensors, bias: np.ndarray, in_scale: float, filter_scale: np.ndarray,
                users) -> None:
    """Writes real ``bias`` as the op's int32 bias at scale ``in_scale * filter_scale``."""
    bias_t = op.inputs[2]
    denom = in_scale * filter_scale
    bias_q = np.clip(np.round(bias / denom), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    _store(model, bias_t, bias_q, users)
    if len(tensors[bias_t].scale) <= 1:
        denom = denom[:1]
    _set_quant(model.subgraphs[0].tensors[bias_t], denom, np.zeros(len(denom), np.int64), 0)


def _requantize(model, op, tensors, new_params, shift: float, correction, channel_scale,
                users) -> None:
    inp = op.inputs[0]
    bias_t = op.inputs[2] if len(op.inputs) > 2 else -1
    k = _kernel(model, op, tensors)
    w, f_scale, n_out = k.w, k.scale, k.n_out
    in_old = tensors[inp].scale[0]
    in_new = new_params.get(inp, (in_old, 0))[0]
    if bias_t >= 0:
        bias = _array(model, bias_t, np.int32).astype(np.float64) * in_old * f_scale
    else:
        if shift or correction is not None:
            raise AAError(f"{op.name} (op {op.index}) has no bias to edit.")
        bias = np.zeros(n_out)
    bias = bias - shift
    new_scale = f_scale
    if correction is not None:
        w, bias = _absorb_input(op.name, w, bias, *correction)
    if channel_scale is not None:
        if len(channel_scale) != n_out:
            raise AAError(f"{op.name} (op {op.index}) has {n_out} output channels, but "
                          f"{len(channel_scale)} channel scales were given.")
        w = w * k.broadcast(channel_scale)
        bias = bias * channel_scale
        if correction is None:  # the int8 kernel stays; its per-channel scales absorb s
            new_scale = f_scale * channel_scale
            _set_quant(model.subgraphs[0].tensors[op.inputs[1]], new_scale,
                       np.zeros(n_out, np.int64), k.dim)
    if correction is not None:
        new_scale = _store_kernel(model, op, k, w, users)
    if bias_t >= 0:
        _store_bias(model, op, tensors, bias, in_new, new_scale, users)
