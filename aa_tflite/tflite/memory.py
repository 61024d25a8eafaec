"""Activation memory of a ``.tflite``: its tensors laid out by the TFLM-style greedy planner
(``aa_tflite.tflite.layout``), and the real TFLM arena.

The layout needs no TensorFlow. It follows TFLite Micro's rules (``micro_allocation_info.cc`` and
``greedy_memory_planner.cc``): subgraph inputs are created at scope 0, op ``k`` runs in scope
``k + 1``, a tensor lives from the scope that creates it to the scope of its last use, subgraph
outputs live to the end, constants and variables are not planned. Buffers are placed largest first,
each at the lowest offset that does not collide with a buffer alive at the same time.

With 8-bit activations and 16-byte alignment the planner's figure is what TFLM puts in its arena
"head"; ``tflm_arena`` measures that head and the persistent "tail" by running TFLM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from absl import logging

from aa_tflite.precision import packed_bytes
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.layout import TFLM_ALIGNMENT, greedy_offsets
from aa_tflite.types import AAError, Kernels, MemoryReport, TensorMemory, TflmArena

__all__ = [
    "TFLM_ALIGNMENT",
    "greedy_offsets",
    "lifetimes",
    "live_bytes",
    "memory_report",
    "plan_tensors",
    "smallest_arena",
    "tflm_arena",
    "weights_size",
]

def plan_tensors(tflite: bytes, *, bits: Mapping[int, int] | None = None,
                 alignment: int = 1) -> tuple[int, list[TensorMemory]]:
    """Lays out the activation tensors of ``tflite`` and returns the peak and the layout.

    Args:
        tflite: The model's bytes.
        bits: Bits per element by tensor index, for tensors stored narrower than their type
            (a 4-bit activation held in an int8 tensor counts 4). Others count their type's size.
        alignment: Round each buffer up to this many bytes. ``1`` is the packed figure;
            ``TFLM_ALIGNMENT`` reproduces TFLite Micro's arena head.

    Returns:
        The peak in bytes, and one ``TensorMemory`` per planned tensor.

    Example:
        >>> peak, tensors = plan_tensors(open("model.tflite", "rb").read())  # doctest: +SKIP
    """
    if alignment < 1:
        raise AAError(f"alignment must be >= 1. Received: alignment={alignment}")
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    bits = dict(bits or {})
    first, last = lifetimes(model, ops)
    planned = []
    for t in sorted(first):
        info = tensors[t]
        if info.is_constant or info.is_variable:
            continue
        b = int(bits.get(t, info.storage_bits))
        nbytes = packed_bytes(info.elements, b)
        if nbytes == 0:
            continue
        planned.append((info, b, nbytes))
    sizes = [-(-nb // alignment) * alignment for _, _, nb in planned]
    offsets, peak = greedy_offsets(sizes, [first[i.index] for i, _, _ in planned],
                                   [last[i.index] for i, _, _ in planned])
    layout = [TensorMemory(i.index, i.name, i.shape, i.dtype, b, nb, first[i.index],
                           last[i.index], off)
              for (i, b, nb), off in zip(planned, offsets)]
    return peak, layout


def lifetimes(model, ops: Sequence[flatbuffer.OpInfo]) -> tuple[dict[int, int], dict[int, int]]:
    """TFLite Micro's allocation scopes of subgraph 0's tensors: ``(first, last)``, each tensor
    index -> scope. Subgraph inputs are created at scope 0, op ``k`` runs in scope ``k + 1``, a
    tensor lives to the scope of its last use, and subgraph outputs live to the end."""
    graph = model.subgraphs[0]
    first: dict[int, int] = {}
    last: dict[int, int] = {}

    def touch(t: int, scope: int) -> None:
        first.setdefault(t, scope)
        last[t] = scope

    for t in graph.inputs if graph.inputs is not None else []:
        touch(int(t), 0)
    for op in ops:
        scope = op.index + 1
        for t in op.outputs:
            touch(t, scope)
        for t in op.inputs:
            if t >= 0:
                last[t] = scope
    end = len(ops)
    for t in graph.outputs if graph.outputs is not None else []:
        touch(int(t), end)
    return first, last


def live_bytes(tflite: bytes, *, bits: Mapping[int, int] | None = None,
               alignment: int = 1) -> list[int]:
    """Bytes of the activation tensors alive in each allocation scope (scope 0 is before the
    first op, scope ``k + 1`` while op ``k`` runs), with ``bits`` and ``alignment`` as
    ``plan_tensors`` takes them: the per-op memory timeline. Its maximum is the lower bound any
    layout of these tensors can reach; ``plan_tensors``' peak adds the layout's fragmentation.

    Example:
        >>> max(live_bytes(open("model.tflite", "rb").read()))  # doctest: +SKIP
        3072
    """
    _, layout = plan_tensors(tflite, bits=bits)
    scopes = max((t.last for t in layout), default=0) + 1
    live = [0] * scopes
    for t in layout:
        for scope in range(t.first, t.last + 1):
            live[scope] += -(-t.nbytes // alignment) * alignment
    return live


def weights_size(tflite: bytes) -> int:
    """Bytes of constant tensor data (weights, biases, constant shapes) in the model."""
    model = flatbuffer.read(tflite)
    _, tensors = flatbuffer.describe(model)
    seen: set[int] = set()
    total = 0
    graph = model.subgraphs[0]
    for info in tensors:
        buf_index = graph.tensors[info.index].buffer
        if info.is_constant and buf_index not in seen:
            seen.add(buf_index)
            buf = model.buffers[buf_index]
            total += len(buf.data) if buf.data is not None else int(getattr(buf, "size", 0))
    return total


_ARENA_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def tflm_arena(tflite: bytes, *, arena_size: int | None = None) -> TflmArena:
    """Measures the arena stock TFLite Micro needs for ``tflite``, by allocating it in TFLM.

    Args:
        tflite: The model's bytes.
        arena_size: Arena to offer TFLM. Defaults to a generous bound from the model's size.

    Returns:
        The total, head (planned activations) and tail (persistent data) in bytes.

    Raises:
        AAError: TFLM cannot allocate the model (e.g. an op TFLM has no kernel for).
    """
    from aa_tflite.runtime import guard

    peak16, _ = plan_tensors(tflite, alignment=TFLM_ALIGNMENT)
    size = arena_size or (4 * peak16 + 64 * 1024 + 2 * len(tflite))
    # In a child process: a model TFLM cannot handle may abort it, and must not take ours down.
    done = guard.probe(tflite, kernels=Kernels.TFLM, tflm_arena_size=size)
    text = done.log
    if not done.ok:
        raise AAError(f"TFLite Micro could not allocate this model with a {size}-byte arena: "
                      f"{done.reason}. Check the model's ops against TFLM's kernels.")
    found = {k: int(v) for k, v in _ARENA_RE.findall(text)}
    if set(found) != {"total", "head", "tail"}:
        raise AAError(f"Could not read TFLM's arena figures from its output: {text[:300]!r}")
    return TflmArena(total=found["total"], head=found["head"], tail=found["tail"])


def smallest_arena(tflite: bytes, *, total: int | None = None) -> int:
    """The smallest arena, in 16-byte steps, TFLite Micro allocates ``tflite`` in.

    Usually that is TFLM's own head plus tail (``tflm_arena``). It is more when an offline plan
    makes the head so small that TFLM's planner, which works in the free space between head and
    tail while it plans (one record per tensor and per buffer), does not fit there. Each try
    runs in a child process (``runtime.guard``).

    Example:
        >>> smallest_arena(open("model.tflite", "rb").read())  # doctest: +SKIP
        7040

    Args:
        tflite: The model's bytes.
        total: TFLM's head plus tail, if already measured.
    """
    from aa_tflite.runtime import guard

    def allocates(size: int) -> bool:
        return guard.probe(tflite, kernels=Kernels.TFLM, tflm_arena_size=size).ok

    hi = total or tflm_arena(tflite).total
    lo = hi - 16
    while not allocates(hi):
        lo, hi = hi, hi + 2 * (hi - lo)
    while hi - lo > 16:
        mid = (lo + hi) // 32 * 16
        lo, hi = (lo, mid) if allocates(mid) else (mid, hi)
    return hi


def memory_report(tflite: bytes, *, bits: Mapping[int, int] | None = None,
                  measure_tflm: bool = True) -> MemoryReport:
    """All memory figures of a model side by side: packed peak, int8 peak, TFLM arena, weights.
    The TFLM arena is None when not measured, or when TFLM cannot allocate the model (an op
    without a TFLM kernel: the report's runtime notes say which)."""
    int8, _ = plan_tensors(tflite)
    packed = plan_tensors(tflite, bits=bits)[0] if bits else int8
    tflm = None
    if measure_tflm:
        try:
            tflm = tflm_arena(tflite)
        except AAError as e:
            logging.info("No TFLM arena for this model: %s", e)
    return MemoryReport(packed_peak=packed, int8_peak=int8, tflm=tflm,
                        weights=weights_size(tflite), file_size=len(tflite))
