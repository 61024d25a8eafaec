"""Patch-based execution of a model's first stage in an int8 ``.tflite``. Schema only.

The first layers of a vision model run at full resolution, and their activations often hold
TensorFlow Lite Micro's arena peak (its "head"). ``patch_stage`` rewrites the ops from the input
image to a tensor ``T`` (the *split point*) so that they run tile by tile (MCUNetV2's
patch-based inference), with stock ops only: for each tile of ``T``'s grid, a ``STRIDED_SLICE``
crops the input rows and columns the tile needs (its receptive field, the *halo*), each op runs
on that crop with ``VALID`` padding and the original weight tensors (shared, not copied), a
``PAD`` adds zero-point padding only where the original padding met the true image border, and
``CONCATENATION`` ops assemble the tiles into ``T``, whose readers are untouched. Only one tile's
intermediates are alive at a time.

**Exact.** Every output element of a tile op is computed from the same int8 inputs, weights,
bias and requantization multiplier as in the original op: a ``SAME`` conv's implicit padding is
the input's zero point, which is what ``PAD`` writes; a max pool's padding is only replaced
where the input's zero point is -128 (the smallest value, so the maximum is unchanged); the
tiles and ``T`` share one scale and zero point, so the concatenations are copies. The tests
compare the rewritten file with the original bit for bit on LiteRT and TFLM.

**What it costs.** Halo rows and columns are computed more than once (more MACs, growing with
depth and grid), the input image stays alive until the last tile, and every tile op allocates
its own persistent data in TFLM (about 330 B per op plus 8 B per output channel), which can
cancel the head saving. ``best_patches`` therefore measures TFLM's arena for each split point
and grid, and keeps a patching only if the arena goes down.

Example:
    >>> points = patch_candidates(tflite)  # doctest: +SKIP
    >>> tiled = patch_stage(tflite, at=points[-1].op, grid=(3, 3))  # doctest: +SKIP
    >>> smaller, record = best_patches(tflite)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.layout import TFLM_ALIGNMENT
from aa_tflite.tflite.offline_plan import OFFLINE_PLAN_NAME
from aa_tflite.tflite.ops import consumers, model_outputs
from aa_tflite.tflite.writer import GraphWriter
from aa_tflite.types import AAError, TflmArena

__all__ = ["GRIDS", "PatchPoint", "PatchRecord", "best_patches", "patch_candidates",
           "patch_stage"]

GRIDS = ((2, 2), (3, 3), (4, 4))  # the grids best_patches tries (rows, columns)
_MAX_CONCAT = 10  # TFLM's CONCATENATION takes at most 10 inputs (concatenation.cc)
_WINDOWED = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"}
_ELEMENTWISE = {"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "RELU_N1_TO_1",
                "LEAKY_RELU", "HARD_SWISH", "LOGISTIC", "TANH", "QUANTIZE"}


@dataclasses.dataclass(frozen=True)
class PatchPoint:
    """A tensor the ops before it can be run tile by tile to.

    Attributes:
        op: The index of the op that writes it; the stage is ops ``0..op``.
        tensor: Its tensor index.
        shape: Its shape (batch, height, width, channels).
        stride: Input height over its height (its resolution, e.g. 4).
    """

    op: int
    tensor: int
    shape: tuple[int, ...]
    stride: int


@dataclasses.dataclass(frozen=True)
class PatchRecord:
    """What ``best_patches`` chose, and TFLM's arena before and after.

    Attributes:
        point: The split point (None: no patching pays).
        grid: Tile rows and columns.
        before, after: TFLM's arena (head, tail, total) for the input file and the result.
        measured_before, measured_after: The arena ``best_patches``'s ``measure`` gave them.
        tried: Every (split op, grid, measured arena) measured, in the order tried.
    """

    point: PatchPoint | None
    grid: tuple[int, int]
    before: TflmArena
    after: TflmArena
    measured_before: int
    measured_after: int
    tried: tuple[tuple[int, tuple[int, int], int], ...]


def _window(model, op, tensors) -> tuple[list[int], list[int], list[int]]:
    """(strides, effective kernel sizes, padding before) on height and width of a windowed op
    or a PAD, in the original op's coordinates."""
    opts = model.subgraphs[0].operators[op.index].builtinOptions
    x, y = tensors[op.inputs[0]].shape, tensors[op.outputs[0]].shape
    if op.name in ("PAD", "PADV2"):
        pads = _constant(model, op.inputs[1]).reshape(-1, 2)
        return [1, 1], [1, 1], [int(pads[1, 0]), int(pads[2, 0])]
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        k = tensors[op.inputs[1]].shape[1:3]
        dil = (opts.dilationHFactor, opts.dilationWFactor)
    else:
        k, dil = (opts.filterHeight, opts.filterWidth), (1, 1)
    strides = [opts.strideH, opts.strideW]
    eff = [(k[i] - 1) * dil[i] + 1 for i in range(2)]
    before = [max((y[1 + i] - 1) * strides[i] + eff[i] - x[1 + i], 0) // 2
              if opts.padding == schema.Padding.SAME else 0 for i in range(2)]
    return strides, eff, before


def _constant(model, t: int) -> np.ndarray:
    tensor = model.subgraphs[0].tensors[t]
    data = model.buffers[tensor.buffer].data
    dtype = "<i8" if tensor.type == schema.TensorType.INT64 else "<i4"
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype)


def _refusal(model, op, tensors) -> str | None:
    """Why ``op`` cannot run tile by tile exactly, or None."""
    if op.name not in _WINDOWED | _ELEMENTWISE | {"PAD", "PADV2"}:
        return f"{op.name} has no tiled form here"
    acts = [t for t in op.inputs if t >= 0 and not tensors[t].is_constant]
    if len(op.outputs) != 1 or not acts:
        return f"{op.name} is not a one-output op on activations"
    for t in (*acts, op.outputs[0]):
        if tensors[t].dtype != "INT8" or len(tensors[t].shape) != 4 or tensors[t].shape[0] != 1:
            return f"tensor {t} is not a 4-D int8 activation at batch 1"
    if op.name in _ELEMENTWISE:
        shape = tensors[op.outputs[0]].shape
        if any(tensors[t].shape != shape for t in acts) or any(
                int(np.prod(tensors[t].shape[:-1])) != 1
                for t in op.inputs if t >= 0 and tensors[t].is_constant):
            return f"{op.name} broadcasts over height or width"
        return None
    if op.name in ("PAD", "PADV2"):
        pads = _constant(model, op.inputs[1]).reshape(-1, 2)
        x, y = tensors[op.inputs[0]], tensors[op.outputs[0]]
        value = _constant_int8(model, op.inputs[2]) if len(op.inputs) > 2 else x.zero_point[0]
        if pads.shape != (4, 2) or pads[0].any() or pads[3].any() or \
                (x.scale, x.zero_point) != (y.scale, y.zero_point) or value != x.zero_point[0]:
            return f"{op.name} pads batch or channels, requantizes, or pads another value"
        return None
    if op.name == "AVERAGE_POOL_2D" and any(_window(model, op, tensors)[2]):
        return "an AVERAGE_POOL_2D with SAME padding averages over the border differently"
    if op.name == "MAX_POOL_2D" and any(_window(model, op, tensors)[2]) and \
            tensors[op.inputs[0]].zero_point[:1] != (-128,):
        return "a MAX_POOL_2D with SAME padding whose input zero point is not -128"
    return None


def _constant_int8(model, t: int) -> int:
    tensor = model.subgraphs[0].tensors[t]
    return int(np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(),
                             np.int8)[0])


def _stages(model, ops, tensors) -> tuple[dict[int, PatchPoint], dict[int, str]]:
    """Every split point of subgraph 0 by op index, and for other ops why they are not one."""
    graph = model.subgraphs[0]
    inputs = [int(t) for t in graph.inputs]
    readers = consumers(ops)
    outputs = model_outputs(model)
    if len(inputs) != 1 or len(tensors[inputs[0]].shape) != 4:
        return {}, {op.index: "the model does not take one 4-D image" for op in ops}
    height = tensors[inputs[0]].shape[1]
    produced: set[int] = set()
    points: dict[int, PatchPoint] = {}
    why: dict[int, str] = {}
    for op in ops:
        stop = _refusal(model, op, tensors)
        if stop is None and any(t not in produced and t not in inputs for t in op.inputs
                                if t >= 0 and not tensors[t].is_constant):
            stop = "it reads a tensor from outside the stage"
        if stop is not None:
            why.update({o.index: f"op {op.index}: {stop}" for o in ops[op.index:]})
            break
        produced.add(op.outputs[0])
        escaping = sorted(t for t in produced if t != op.outputs[0] and (t in outputs or any(
            r.index > op.index for r, _ in readers.get(t, []))))
        y = tensors[op.outputs[0]].shape
        if escaping:
            why[op.index] = f"tensors {escaping} of the stage are read after op {op.index}"
        elif y[1] < 2 or y[2] < 2:
            why[op.index] = f"its output {y} has less than 2x2 positions"
        else:
            points[op.index] = PatchPoint(op.index, op.outputs[0], y, max(height // y[1], 1))
    return points, why


def patch_candidates(tflite: bytes) -> list[PatchPoint]:
    """The tensors the first ops of ``tflite`` can be run tile by tile to, exactly.

    A split point is the output of op ``j`` when ops ``0..j`` read only the input image and each
    other's outputs, only that output is read after op ``j``, and each op has an exact tiled
    form: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D (SAME padding only with input zero point
    -128), AVERAGE_POOL_2D (VALID), PAD/PADV2 of height and width with the zero point, and
    elementwise ops that do not broadcast over height or width. Activations are int8 at batch 1
    (run ``static_batch`` first).

    Args:
        tflite: An int8 ``.tflite``.

    Returns:
        The split points in execution order (empty when the first op has no tiled form).

    Example:
        >>> [(p.op, p.shape, p.stride) for p in patch_candidates(tflite)]  # doctest: +SKIP
        [(0, (1, 48, 48, 16), 2), (1, (1, 48, 48, 16), 2), ...]
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    return list(_stages(model, ops, tensors)[0].values())


def _bands(size: int, parts: int) -> list[tuple[int, int]]:
    base, extra = divmod(size, parts)
    edges = np.cumsum([0] + [base + (i < extra) for i in range(parts)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _needs(model, stage, tensors, tile) -> tuple[dict[int, tuple], dict[tuple[int, int], tuple]]:
    """Back-propagates one tile: the region of each stage tensor the tile needs (clipped to the
    tensor), and for each (op, input) the region the op reads (it may reach past the border,
    where the original op pads)."""
    need = {stage[-1].outputs[0]: tile}
    reads = {}
    for op in reversed(stage):
        (r0, r1), (c0, c1) = need[op.outputs[0]]
        if op.name in _ELEMENTWISE:
            window = [[1, 1], [1, 1], [0, 0]]
        else:
            window = _window(model, op, tensors)
        (s, eff, before) = window
        box = ((r0 * s[0] - before[0], (r1 - 1) * s[0] - before[0] + eff[0]),
               (c0 * s[1] - before[1], (c1 - 1) * s[1] - before[1] + eff[1]))
        for t in op.inputs:
            if t < 0 or tensors[t].is_constant:
                continue
            reads[(op.index, t)] = box
            h, w = tensors[t].shape[1:3]
            clipped = ((max(box[0][0], 0), min(box[0][1], h)), (max(box[1][0], 0), min(box[1][1], w)))
            old = need.get(t, clipped)
            need[t] = ((min(old[0][0], clipped[0][0]), max(old[0][1], clipped[0][1])),
                       (min(old[1][0], clipped[1][0]), max(old[1][1], clipped[1][1])))
    return need, reads


def _tile(w: GraphWriter, model, stage, tensors, tile, tag: str) -> int:
    """Appends one tile's ops; returns the tensor holding the tile of the split point."""
    need, reads = _needs(model, stage, tensors, tile)
    image = int(model.subgraphs[0].inputs[0])
    held = {image: (image, tuple((0, n) for n in tensors[image].shape[1:3]))}
    for op in stage:
        original = model.subgraphs[0].operators[op.index]
        y = op.outputs[0]
        inputs = list(op.inputs)
        for i, t in enumerate(op.inputs):
            if (op.index, t) in reads:
                inputs[i] = w.crop_and_pad(*held[t], reads[(op.index, t)],
                                           tensors[t].shape[1:3], f"{tag}/op{op.index}.{i}")
        if op.name in ("PAD", "PADV2"):
            held[y] = (inputs[0], need[y])
            continue
        new = copy.deepcopy(original)
        if op.name in _WINDOWED:
            new.builtinOptions.padding = schema.Padding.VALID
        new.inputs = np.asarray(inputs, np.int32)
        out = w.activation(y, need[y], f"{tag}/op{op.index}")
        new.outputs = np.asarray([out], np.int32)
        w.ops.append(new)
        held[y] = (out, need[y])
    return held[stage[-1].outputs[0]][0]


def _check(tflite: bytes, at: int, grid) -> tuple[schema.ModelT, list, list, PatchPoint]:
    model = flatbuffer.read(tflite)
    if any(getattr(m, "name", None) in (OFFLINE_PLAN_NAME, OFFLINE_PLAN_NAME.encode())
           for m in model.metadata or []):
        raise AAError("This .tflite carries an offline memory plan, which patching would make "
                      "wrong. Patch the file without the plan, then plan it.")
    ops, tensors = flatbuffer.describe(model)
    points, why = _stages(model, ops, tensors)
    if at not in points:
        reason = why.get(at, f"the model has ops 0-{len(ops) - 1}")
        raise AAError(f"Op {at} is not a split point for patch-based execution ({reason}). Pick "
                      f"one from patch_candidates(tflite): {sorted(points)}.")
    point = points[at]
    if not (isinstance(grid, Sequence) and len(grid) == 2 and all(
            isinstance(g, (int, np.integer)) and not isinstance(g, bool) and
            1 <= g <= min(n, _MAX_CONCAT) for g, n in zip(grid, point.shape[1:3]))) or \
            tuple(grid) == (1, 1):
        raise AAError(f"grid must be (rows, columns), each 1 to {_MAX_CONCAT} and at most the "
                      f"split tensor's {point.shape[1:3]}, not (1, 1). Received: {grid!r}")
    return model, ops, tensors, point


def patch_stage(tflite: bytes, *, at: int, grid: tuple[int, int]) -> bytes:
    """``tflite`` with ops ``0..at`` run tile by tile over a ``grid`` of the split tensor.

    Args:
        tflite: An int8 ``.tflite`` at batch 1 without an offline memory plan.
        at: The split point's op index (``PatchPoint.op`` from ``patch_candidates``).
        grid: Tile rows and columns of the split tensor, each 1 to 10 (TFLM's CONCATENATION
            limit), not both 1. Uneven sizes are split as evenly as they can be.

    Returns:
        The rewritten file: tile ops first (tile by tile, row by row), then the original ops
        after ``at``. Existing tensor indices are kept, new tensors appended; the stage's old
        intermediates stay unused with a zero-size shape (TFLM would plan them otherwise). The
        outputs are the input file's, bit for bit.

    Raises:
        AAError: ``at`` is not a split point (the message says why), the grid is out of range,
            or the file carries an offline plan.

    Example:
        >>> tiled = patch_stage(tflite, at=6, grid=(3, 3))  # doctest: +SKIP
    """
    model, ops, tensors, point = _check(tflite, at, grid)
    w = GraphWriter(model)
    rows = []
    for i, band in enumerate(_bands(point.shape[1], grid[0])):
        tiles = [_tile(w, model, ops[:at + 1], tensors, (band, cols), f"/patch{i}_{j}")
                 for j, cols in enumerate(_bands(point.shape[2], grid[1]))]
        if len(tiles) == 1:
            rows.append(tiles[0])
        else:
            whole = point.tensor if grid[0] == 1 else w.activation(
                point.tensor, (band, (0, point.shape[2])), f"/patchrow{i}")
            rows.append(w.concat(tiles, 2, whole))
    if len(rows) > 1:  # else a (1, n) grid's one row concatenation wrote the split tensor
        w.concat(rows, 1, point.tensor)
    graph = model.subgraphs[0]
    for t in {o for op in ops[:at] for o in op.outputs}:
        dims = graph.tensors[t].shape
        graph.tensors[t].shape = graph.tensors[t].shapeSignature = np.asarray(
            [*list(dims)[:-1], 0], np.int32)
    graph.operators = w.ops + list(graph.operators[at + 1:])
    return flatbuffer.write(model)


def _tail_growth(before: bytes, after: bytes) -> int:
    """A rough estimate of the TFLM tail bytes ``after`` adds: about 400 B per op (node, op
    data, tensors) and 8 B per output channel of a convolution (its requantization)."""
    def cost(tflite: bytes) -> int:
        ops, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        return sum(400 + (8 * tensors[o.outputs[0]].shape[-1] if o.name in _WINDOWED else 0)
                   for o in ops)
    return cost(after) - cost(before)


def best_patches(tflite: bytes, *, grids: Sequence[tuple[int, int]] = GRIDS, max_stride: int = 8,
                 shortlist: int = 6, measure: Callable[[bytes], int] | None = None,
                 ) -> tuple[bytes, PatchRecord]:
    """Chooses the split point and grid that make TFLM's arena smallest, if any does.

    Split points whose stage does not hold the activation peak cannot lower the head, and
    points deeper than ``max_stride`` re-compute too much halo; they are skipped. For the rest,
    each grid is laid out with TFLM's planner (no TFLM run) and its tail estimated from the ops
    and conv channels it adds; the ``shortlist`` smallest estimates are measured with
    ``measure``, and the smallest is kept if it beats the input file.

    Args:
        tflite: An int8 ``.tflite`` at batch 1 without an offline memory plan.
        grids: (rows, columns) grids to try.
        max_stride: The deepest split point tried, as input height over its height.
        shortlist: How many layouts to measure in TFLM.
        measure: The arena of a file, in bytes; default TFLM's total
            (``memory.tflm_arena(t).total``).

    Returns:
        The best file (``tflite`` itself when no patching pays) and its ``PatchRecord``.

    Example:
        >>> smaller, record = best_patches(tflite)  # doctest: +SKIP
        >>> record.point.op, record.grid, record.after.total  # doctest: +SKIP
        (4, (3, 3), 166592)
    """
    measure = measure or (lambda t: memory.tflm_arena(t).total)
    live = memory.live_bytes(tflite, alignment=TFLM_ALIGNMENT)
    peak_op = int(np.argmax(live[1:]))
    layouts = []
    for point in patch_candidates(tflite):
        if point.op < peak_op or point.stride > max_stride:
            continue
        for grid in grids:
            if all(g <= n for g, n in zip(grid, point.shape[1:3])):
                tiled = patch_stage(tflite, at=point.op, grid=grid)
                estimate = memory.plan_tensors(tiled, alignment=TFLM_ALIGNMENT)[0] + _tail_growth(
                    tflite, tiled)
                layouts.append((estimate, point.op, tuple(grid), point, tiled))
    best = start = measure(tflite)
    chosen, tried = (None, (1, 1), tflite), []
    for _, op, grid, point, tiled in sorted(layouts, key=lambda x: x[:3])[:shortlist]:
        arena = measure(tiled)
        tried.append((op, grid, arena))
        if arena < best:
            best, chosen = arena, (point, grid, tiled)
    before = memory.tflm_arena(tflite)
    return chosen[2], PatchRecord(
        point=chosen[0], grid=chosen[1], before=before,
        after=memory.tflm_arena(chosen[2]) if chosen[0] else before,
        measured_before=start, measured_after=best, tried=tuple(tried))
