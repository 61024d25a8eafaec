"""Channel split of pointwise -> depthwise pairs in an int8 ``.tflite``. Schema only.

In an inverted residual (MobileNetV2) or a depthwise-separable stack (MobileNet, Xception), a
1x1 CONV_2D writes a wide tensor that one DEPTHWISE_CONV_2D reads: both are alive at the
depthwise op, and that op often holds the model's activation peak (TFLite Micro's arena "head").
``split_channels`` replaces ``conv -> depthwise`` by K chains ``conv_k -> depthwise_k`` over
channel slices, run one after the other, and one CONCATENATION (channel axis) that writes the
original depthwise output. Only one slice of the wide tensor is alive at a time. There are no
extra MACs, and every op is a stock op that TFLM, LiteRT and tflite-runtime all have.

**Why the int8 flatbuffer, not the Keras graph.**
- Exactness can be proven op by op. Chunk k's conv computes output channels ``a..b`` from the
  same int8 input with those channels' weight rows, int32 biases and scales, into a tensor with
  the original output's scale and zero point: each channel's requantization multiplier, and so
  each output byte, is the unsplit op's. So for the depthwise chunk (channel c reads input
  channel c only). The CONCATENATION's inputs and output share one scale and zero point: a pure
  copy. A split in Keras is calibrated again by the converter, each chunk at its own scales, and
  comes out 1-2 steps off (``shared/notes/PEERS_2026.md`` section 4).
- Weight bytes stay the original bytes. A conv chunk's weights are a contiguous slice of the
  original buffer, and a depthwise chunk's are the original array sliced on its channel axis.
  Nothing is quantized again. The replaced tensors' buffers are emptied, so the file's weight
  bytes do not grow.
- It composes with ``aa_tflite``'s other flatbuffer edits (``static_batch``, ``offline_plan``,
  the lowerings) and works on any int8 ``.tflite``, whoever converted it, with no TensorFlow.
- Every existing tensor keeps its index (new tensors are appended), so ``aa_tflite`` metadata
  and signatures still point at the right tensors. The replaced tensors stay in the table,
  unused, with a zero-size shape: TFLM plans every unused tensor that has bytes (at lifetime -1,
  ``micro_allocation_info.cc:202-205``), which would keep the wide tensor in its head.

A split costs TFLM persistent memory (its "tail", about 330 B per added op); ``best_split`` keeps
a split only if TFLM's measured total arena goes down.

Example:
    >>> pairs = split_candidates(tflite)  # doctest: +SKIP
    >>> peak = max(pairs, key=lambda p: p.alive)  # doctest: +SKIP
    >>> smaller = split_channels(tflite, {peak.conv: 4})  # doctest: +SKIP
    >>> smaller, record = best_split(tflite, max_k=8)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.layout import TFLM_ALIGNMENT
from aa_tflite.tflite.offline_plan import OFFLINE_PLAN_NAME
from aa_tflite.tflite.ops import consumers, model_outputs, opcode_index
from aa_tflite.types import AAError, TflmArena

__all__ = ["MAX_CHUNKS", "Pair", "SplitRecord", "best_split", "chunk_sizes", "split_candidates",
           "split_channels"]

_CONCAT_VERSION = 2  # CONCATENATION's op version for int8 tensors
MAX_CHUNKS = 10  # TFLM's CONCATENATION takes at most 10 inputs (concatenation.cc:31,158)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A 1x1 CONV_2D whose output only one DEPTHWISE_CONV_2D reads, in subgraph 0.

    Attributes:
        conv, depthwise: The two ops' indices (execution order).
        input, expanded, output: Tensor indices: the conv's input, the tensor between the ops,
            the depthwise output.
        channels: The expanded tensor's channel count (the most chunks there can be).
        input_shape, expanded_shape, output_shape: Those tensors' shapes.
        alive: The most bytes of activations alive while the pair runs, each buffer rounded up
            to 16 bytes as in TFLM's head.
        at_peak: ``alive`` is the model's peak: no op has more bytes alive.
    """

    conv: int
    depthwise: int
    input: int
    expanded: int
    output: int
    channels: int
    input_shape: tuple[int, ...]
    expanded_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    alive: int
    at_peak: bool


@dataclasses.dataclass(frozen=True)
class SplitRecord:
    """What ``best_split`` split, and TFLM's arena before and after.

    Attributes:
        splits: Chunks by conv op index of the input file (empty: no split pays).
        pairs: The pairs split.
        before, after: TFLM's arena (head, tail, total) for the input file and the result.
        measured_before, measured_after: The arena ``best_split``'s ``measure`` gave them.
        tried: Every split measured, as (splits, measured arena), in the order tried.
    """

    splits: Mapping[int, int]
    pairs: tuple[Pair, ...]
    before: TflmArena
    after: TflmArena
    measured_before: int
    measured_after: int
    tried: tuple[tuple[Mapping[int, int], int], ...]


def chunk_sizes(channels: int, k: int) -> list[int]:
    """Channels per chunk when ``channels`` are split into ``k``: as even as can be, the first
    ``channels % k`` chunks one channel wider.

    Example:
        >>> chunk_sizes(48, 4), chunk_sizes(10, 4)
        ([12, 12, 12, 12], [3, 3, 2, 2])
    """
    base, extra = divmod(int(channels), int(k))
    return [base + (i < extra) for i in range(int(k))]


def _refusal(model, ops, tensors, conv: int) -> str | None:
    """Why op ``conv`` and the op reading its output cannot be split exactly, or None."""
    graph = model.subgraphs[0]
    if not 0 <= conv < len(ops) or ops[conv].name != "CONV_2D":
        what = ops[conv].name if 0 <= conv < len(ops) else "no op"
        return f"op {conv} is {what}, not a CONV_2D"
    op = ops[conv]
    w = tensors[op.inputs[1]]
    if len(w.shape) != 4 or w.shape[1:3] != (1, 1):
        return f"op {conv} is a {w.shape[1:3]} conv; only 1x1 (pointwise) convs are split"
    y = op.outputs[0]
    readers = consumers(ops).get(y, [])
    if y in model_outputs(model) or len(readers) != 1 or \
            readers[0][0].name != "DEPTHWISE_CONV_2D" or readers[0][1] != 0:
        return f"op {conv}'s output is read by {[r.name for r, _ in readers]}, not by exactly " \
               "one DEPTHWISE_CONV_2D (and it is not a model output)"
    dw = readers[0][0]
    opts = graph.operators[dw.index].builtinOptions
    if (opts.dilationHFactor, opts.dilationWFactor) != (1, 1):
        return f"the depthwise op {dw.index} is dilated; only dilation 1 is split"
    wd, c = tensors[dw.inputs[1]], tensors[y].shape[-1]
    if len(wd.shape) != 4 or wd.shape[0] != 1 or wd.shape[3] != c or \
            tensors[dw.outputs[0]].shape[-1] != c:
        return f"the depthwise op {dw.index} has a depth multiplier other than 1"
    for t in (op.inputs[0], y, dw.outputs[0]):
        if tensors[t].dtype != "INT8" or len(tensors[t].shape) != 4 or len(tensors[t].scale) != 1:
            return f"tensor {t} is not a 4-D int8 activation with one scale"
    if w.shape[3] != tensors[op.inputs[0]].shape[-1]:
        return f"op {conv} is a grouped conv; only ungrouped convs are split"
    for t, axis, dtype in ((op.inputs[1], 0, "INT8"), (op.inputs[2], 0, "INT32"),
                           (dw.inputs[1], 3, "INT8"), (dw.inputs[2], 0, "INT32")):
        if t < 0:
            continue
        info, tensor = tensors[t], graph.tensors[t]
        data = model.buffers[tensor.buffer].data
        per_tensor_or_channel = len(info.scale) <= 1 or (
            len(info.scale) == c and tensor.quantization.quantizedDimension == axis)
        if info.dtype != dtype or data is None or len(data) == 0 or \
                tensor.sparsity is not None or not per_tensor_or_channel:
            return f"constant {t} is not a dense {dtype.lower()} array quantized per tensor or " \
                   "per output channel"
    return None


def _pairs(tflite: bytes) -> dict[int, Pair | str]:
    """Every CONV_2D of subgraph 0: its pair, or why it has none."""
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    live = memory.live_bytes(tflite, alignment=TFLM_ALIGNMENT)
    peak = max(live)
    readers = consumers(ops)
    out: dict[int, Pair | str] = {}
    for op in ops:
        if op.name != "CONV_2D":
            continue
        why = _refusal(model, ops, tensors, op.index)
        if why is not None:
            out[op.index] = why
            continue
        dw = readers[op.outputs[0]][0][0]
        x, y, z = op.inputs[0], op.outputs[0], dw.outputs[0]
        alive = max(live[op.index + 1:dw.index + 2])
        out[op.index] = Pair(op.index, dw.index, x, y, z, tensors[y].shape[-1], tensors[x].shape,
                             tensors[y].shape, tensors[z].shape, alive, alive == peak)
    return out


def split_candidates(tflite: bytes) -> list[Pair]:
    """The pointwise -> depthwise pairs of subgraph 0 that ``split_channels`` can split exactly.

    A pair is a 1x1 CONV_2D whose output is read by one DEPTHWISE_CONV_2D (depth multiplier 1,
    dilation 1) and nothing else, with int8 activations, dense int8 weights and int32 biases
    quantized per tensor or per output channel.

    Args:
        tflite: An int8 ``.tflite``.

    Returns:
        The pairs in execution order, with the bytes alive at each (``Pair.alive``) and whether
        it holds the peak (``Pair.at_peak``).

    Example:
        >>> [(p.conv, p.channels, p.at_peak) for p in split_candidates(tflite)]  # doctest: +SKIP
        [(1, 48, True), (4, 24, False)]
    """
    return [p for p in _pairs(tflite).values() if isinstance(p, Pair)]


def _sliced_quantization(q, lo: int, hi: int, channels: int):
    q = copy.deepcopy(q)
    for field in ("scale", "zeroPoint", "min", "max"):
        values = getattr(q, field, None)
        if values is not None and len(values) == channels > 1:
            setattr(q, field, np.asarray(values)[lo:hi].copy())
    return q


def _slice_tensor(model, graph, t: int, axis: int, lo: int, hi: int, tag: str) -> int:
    """A new tensor: tensor ``t`` sliced to ``lo:hi`` on ``axis`` (its data too, into a new
    buffer, if it is a constant). Returns its index; -1 stays -1."""
    if t < 0:
        return t
    old = graph.tensors[t]
    new = copy.deepcopy(old)
    channels = int(old.shape[axis])
    for field in ("shape", "shapeSignature"):
        dims = getattr(old, field)
        if dims is not None and len(dims):
            setattr(new, field, np.asarray([*dims[:axis], hi - lo, *dims[axis + 1:]], np.int32))
    new.name = (old.name or b"") + tag.encode()
    if old.quantization is not None:
        new.quantization = _sliced_quantization(old.quantization, lo, hi, channels)
    data = model.buffers[old.buffer].data
    if data is not None and len(data):
        dtype = np.int8 if old.type == schema.TensorType.INT8 else np.dtype("<i4")
        array = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(
            tuple(int(d) for d in old.shape))
        part = np.take(array, np.arange(lo, hi), axis=axis)
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(part).tobytes(), np.uint8).copy()
        model.buffers.append(buf)
        new.buffer = len(model.buffers) - 1
    graph.tensors.append(new)
    return len(graph.tensors) - 1


def _chain(model, graph, pair: Pair, k: int) -> list[schema.OperatorT]:
    """The ops that replace ``pair``: conv_1, dw_1, ..., conv_k, dw_k, CONCATENATION."""
    conv, dw = graph.operators[pair.conv], graph.operators[pair.depthwise]
    out, lo = [], 0
    for i, width in enumerate(chunk_sizes(pair.channels, k)):
        hi = lo + width

        def part(t, axis: int, lo=lo, hi=hi, tag=f"/split{i}of{k}") -> int:
            return _slice_tensor(model, graph, int(t), axis, lo, hi, tag)

        new_conv, new_dw = copy.deepcopy(conv), copy.deepcopy(dw)
        y, z = part(pair.expanded, 3), part(pair.output, 3)
        new_conv.inputs = np.asarray([conv.inputs[0], part(conv.inputs[1], 0),
                                      part(conv.inputs[2], 0)], np.int32)
        new_dw.inputs = np.asarray([y, part(dw.inputs[1], 3), part(dw.inputs[2], 0)], np.int32)
        new_conv.outputs, new_dw.outputs = np.asarray([y], np.int32), np.asarray([z], np.int32)
        out += [new_conv, new_dw]
        lo = hi
    concat = schema.OperatorT()
    concat.opcodeIndex = opcode_index(model, schema.BuiltinOperator.CONCATENATION,
                                      _CONCAT_VERSION)
    concat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
    concat.builtinOptions = schema.ConcatenationOptionsT()
    concat.builtinOptions.axis = 3
    concat.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
    concat.inputs = np.asarray([int(o.outputs[0]) for o in out[1::2]], np.int32)
    concat.outputs = np.asarray([pair.output], np.int32)
    return [*out, concat]


def _retire(model, graph, tensors: list[int]) -> None:
    """Makes the replaced tensors zero-size, so TFLM plans nothing for them, and empties their
    buffers; per-channel parameters go too (LiteRT checks them against the shape). A constant
    whose buffer another tensor also uses is left as it is (constants are never planned)."""
    retired = {t for t in tensors if t >= 0}
    shared = {t.buffer for g in model.subgraphs for i, t in enumerate(g.tensors)
              if g is not graph or i not in retired}
    for t in sorted(retired):
        tensor = graph.tensors[t]
        data = model.buffers[tensor.buffer].data
        if tensor.buffer in shared and data is not None and len(data):
            continue
        if tensor.buffer not in shared:
            model.buffers[tensor.buffer].data = None
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            tensor.quantization = None
        for field in ("shape", "shapeSignature"):
            dims = getattr(tensor, field)
            if dims is not None and len(dims):
                setattr(tensor, field, np.asarray([*list(dims)[:-1], 0], np.int32))


def _check_request(tflite: bytes, model, splits: Mapping[int, int]) -> list[tuple[Pair, int]]:
    if any(getattr(m, "name", None) in (OFFLINE_PLAN_NAME, OFFLINE_PLAN_NAME.encode())
           for m in model.metadata or []):
        raise AAError("This .tflite carries an offline memory plan, which a split would make "
                      "wrong (it names every tensor). Split the file without the plan, then plan "
                      "it: offline_plan.write_offline_plan(split, plan_offsets(split)[0]).")
    pairs = _pairs(tflite)
    chosen = []
    for conv, k in sorted(splits.items()):
        found = pairs.get(int(conv), None)
        if not isinstance(found, Pair):
            ops, tensors = flatbuffer.describe(model)
            why = found or _refusal(model, ops, tensors, int(conv))
            convs = sorted(p.conv for p in pairs.values() if isinstance(p, Pair))
            raise AAError(f"Op {conv} cannot be channel-split exactly: {why}. Pick a pair's conv "
                          f"from split_candidates(tflite): {convs}.")
        most = min(found.channels, MAX_CHUNKS)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= most:
            raise AAError(f"Op {conv}: chunks must be a whole number from 2 to {most} (its "
                          f"{found.channels} channels, and TFLM's CONCATENATION takes at most "
                          f"{MAX_CHUNKS} inputs). Received: {k!r}")
        chosen.append((found, int(k)))
    return chosen


def split_channels(tflite: bytes, splits: Mapping[int, int]) -> bytes:
    """``tflite`` with pointwise -> depthwise pairs split into channel chunks.

    Each chosen pair ``conv -> depthwise`` becomes ``conv_1, dw_1, ..., conv_K, dw_K`` and a
    CONCATENATION on the channel axis that writes the original depthwise output (same tensor,
    same quantization), so the ops after it are untouched. Chunk widths follow ``chunk_sizes``
    (uneven when K does not divide the channels). Each chunk keeps the pair's options and fused
    activations; its weights, biases and per-channel scales are the original's, sliced; its
    outputs have the original outputs' scale and zero point. The outputs are therefore the
    unsplit file's, bit for bit, on every kernel set.

    Args:
        tflite: An int8 ``.tflite`` without an offline memory plan (plan after splitting).
        splits: Chunks K by the pair's conv op index, as ``split_candidates`` gives it: 2 to
            the pair's channels, and at most ``MAX_CHUNKS`` (TFLM's CONCATENATION limit).

    Returns:
        The rewritten file: existing tensor indices kept, new tensors appended, the replaced
        tensors left unused and zero-size. The same inputs give the same bytes.

    Raises:
        AAError: An index is not a splittable pair's conv (the message says why), K is out of
            range, or the file carries an offline plan.

    Example:
        >>> split = split_channels(tflite, {1: 4})  # doctest: +SKIP
    """
    model = flatbuffer.read(tflite)
    if not splits:
        raise AAError("splits is empty. Pass {conv op index: chunks}, e.g. {pair.conv: 4} for a "
                      "pair from split_candidates(tflite).")
    chosen = _check_request(tflite, model, splits)
    graph = model.subgraphs[0]
    by_conv = {pair.conv: (pair, k) for pair, k in chosen}
    skip = {pair.depthwise for pair, _ in chosen}
    operators = []
    for index, op in enumerate(graph.operators):
        if index in by_conv:
            operators += _chain(model, graph, *by_conv[index])
        elif index not in skip:
            operators.append(op)
    for pair, _ in chosen:
        conv, dw = graph.operators[pair.conv], graph.operators[pair.depthwise]
        _retire(model, graph, [pair.expanded, *map(int, conv.inputs[1:3]),
                               *map(int, dw.inputs[1:3])])
    graph.operators = operators
    return flatbuffer.write(model)


def best_split(tflite: bytes, *, max_k: int = 8,
               measure: Callable[[bytes], int] | None = None) -> tuple[bytes, SplitRecord]:
    """Splits the pairs at the peak while that makes TFLM's total arena smaller.

    Step by step: take the unsplit pairs that hold the current file's activation peak, split
    them into K = 2..``max_k`` chunks (at most their channels), measure each file, and keep the
    smallest arena if it is smaller than the current one; stop when no split pays or no pair
    holds the peak. A split that costs more tail (about 330 B per added op) than it saves in
    head is never returned.

    Args:
        tflite: An int8 ``.tflite`` without an offline memory plan.
        max_k: The most chunks to try per pair (at least 2; ``MAX_CHUNKS`` at most are tried).
        measure: The arena of a file, in bytes; default TFLM's total
            (``memory.tflm_arena(t).total``). Pass another, e.g. the smallest arena after an
            offline plan, to choose splits for that.

    Returns:
        The best file found (``tflite`` itself when no split pays) and its ``SplitRecord``.

    Raises:
        AAError: ``max_k`` below 2, or TFLM cannot allocate the model.

    Example:
        >>> smaller, record = best_split(tflite, max_k=6)  # doctest: +SKIP
        >>> record.splits, record.before.total, record.after.total  # doctest: +SKIP
        ({1: 4}, 19744, 13568)
    """
    if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 2:
        raise AAError(f"max_k must be a whole number >= 2 (a split has 2 chunks at least). "
                      f"Received: max_k={max_k!r}")
    measure = measure or (lambda t: memory.tflm_arena(t).total)
    original = {p.expanded: p for p in split_candidates(tflite)}
    chosen: dict[int, int] = {}
    current = tflite
    best = start = measure(tflite)
    tried: list[tuple[Mapping[int, int], int]] = [({}, start)]
    # the input file's pairs, matched by expanded tensor, still unsplit and at the current peak
    while group := [original[p.expanded] for p in split_candidates(current)
                    if p.at_peak and p.expanded in original]:
        options = []
        for k in range(2, int(max_k) + 1):
            trial = {**chosen, **{p.conv: min(k, p.channels, MAX_CHUNKS) for p in group}}
            if any(trial == t for t, _ in tried):
                continue
            split = split_channels(tflite, trial)
            arena = measure(split)
            tried.append((trial, arena))
            options.append((arena, len(tried), trial, split))
        if not options or min(options, key=lambda o: o[:2])[0] >= best:
            break
        best, _, chosen, current = min(options, key=lambda o: o[:2])
    before = memory.tflm_arena(tflite)
    return current, SplitRecord(
        splits=dict(chosen), pairs=tuple(p for p in original.values() if p.conv in chosen),
        before=before, after=memory.tflm_arena(current) if chosen else before,
        measured_before=start, measured_after=best, tried=tuple(tried))
