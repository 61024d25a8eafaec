"""TFLite Micro's offline memory plan: write, read, check and make one. No TensorFlow import.
TFLM reads model metadata named ``OfflineMemoryAllocation`` (tflite-micro@90b983c2
``micro_allocation_info.cc:338-373``, ``docs/memory_management.md:64-105``): int32 words ``version,
subgraphs, n``, then per tensor of every subgraph a byte offset into the arena's head, or -1 for
TFLM to plan it; ``n`` must be the tensor count. TFLM fits its own buffers (kernel scratch) around
the offsets (``greedy_memory_planner.cc:174-265``) and checks nothing: live tensors given the same
bytes corrupt each other silently. So ``write_offline_plan`` runs ``check_plan`` first.

A plan can let an op's output overwrite an input that dies at that op, where the kernel's loop
order makes it safe (``IN_PLACE``, one rule per op with the source lines that prove it, per kernel
library). The default, ``library="all"``, allows only what holds on TFLM's reference kernels,
CMSIS-NN and ESP-NN alike.

Example:
    >>> offsets, head = plan_offsets(tflite, in_place="auto")  # doctest: +SKIP
    >>> planned = write_offline_plan(tflite, offsets, overlaps="auto")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.layout import TFLM_ALIGNMENT, greedy_offsets
from aa_tflite.tflite.memory import lifetimes
from aa_tflite.types import AAError

__all__ = ["IN_PLACE", "LIBRARIES", "OFFLINE_PLAN_NAME", "OFFLINE_PLAN_VERSION", "InPlaceRule",
           "Overlap", "check_library", "check_plan", "in_place_candidates", "plan_offsets",
           "read_offline_plan", "write_offline_plan"]

OFFLINE_PLAN_NAME = "OfflineMemoryAllocation"
OFFLINE_PLAN_VERSION = 0  # as Arm Vela 3.11 writes it; TFLM ignores words 0 and 1
LIBRARIES = ("reference", "cmsis-nn", "esp-nn")
_ALL = LIBRARIES


@dataclasses.dataclass(frozen=True)
class InPlaceRule:
    """An op whose output may overwrite a dying input, for which libraries, and the proof.
    ``kind``: ``"elementwise"``: output at the input's offset; ``"depthwise"`` (k whole pixels)
    and ``"conv"``: input the least shift past the output's start at which no output pixel
    overwrites an input pixel that a later one (conv: or itself) still reads."""

    kind: str
    libraries: tuple[str, ...]
    evidence: tuple[str, ...]


# The one table of allowed overlaps. Sources: tflite-micro@90b983c2 (TFLM, in tensorflow/lite/),
# CMSIS-NN@99f736a6 (in Source/), esp-nn@d45b843c (ESP-NN, in src/), esp-tflite-micro@99f49e14 (ESP).
# A library's build runs TFLM's reference kernel for an op it has no kernel for (listed in TFLM
# micro/kernels/cmsis_nn/ and ESP micro/kernels/esp_nn/), so the reference proof covers it there.
IN_PLACE: dict[str, InPlaceRule] = {
    "ADD": InPlaceRule("elementwise", _ALL, (
        "TFLM kernels/internal/reference/integer_ops/add.h:62-73,128-145: out[i] from in1[i], "
        "in2[i], i ascending (micro/kernels/add.cc:124 when the shapes match)",
        "CMSIS-NN BasicMathFunctions/arm_elementwise_add_s8.c:72-103 (MVE), 124-196 (DSP), "
        "204-224: 4 read, then written, ascending (TFLM micro/kernels/cmsis_nn/add.cc:145)",
        "ESP-NN basic_math/esp_nn_add_s8_esp32s3.S:119-507 (8 loaded, then ee.vst), 516-622 (tail),"
        " _esp32p4.c:55-86, esp_nn_add_ansi.c:76-95 (ESP micro/kernels/esp_nn/add.cc:135)")),
    "RELU": InPlaceRule("elementwise", _ALL, (
        "TFLM micro/kernels/activations.h:40-55: out[i] from in[i] (activations.cc:56-57)",)),
    "RELU6": InPlaceRule("elementwise", _ALL, (
        "TFLM micro/kernels/activations.h:68-78: out[i] from in[i] (activations.cc:104-105)",)),
    "RESHAPE": InPlaceRule("elementwise", _ALL, (
        "TFLM micro/kernels/reshape.cc:45-47: copies only when the buffers differ",)),
    "EXPAND_DIMS": InPlaceRule("elementwise", _ALL, (
        "TFLM micro/kernels/expand_dims.cc:113-117,135-137: out[i] = in[i], i ascending",)),
    "DEPTHWISE_CONV_2D": InPlaceRule("depthwise", _ALL, (
        "TFLM kernels/internal/reference/integer_ops/depthwise_conv.h:63-116: output pixels in "
        "raster order; channel c, from input channel c only, written after its window is read",
        "CMSIS-NN ConvolutionFunctions/arm_depthwise_conv_wrapper_s8.c:126-174 (ch_mult 1, "
        "dilation 1, batch 1) -> arm_depthwise_conv_3x3_s8.c:95-235 (raster, 4 channels read "
        "then written), arm_depthwise_conv_s8_opt.c:108-208 (MVE: per 124-channel block, 4 "
        "pixels' windows copied before written; arm_nn_depthwise_conv_nt_t_s8.c:121-145 "
        "predicated stores), 220-402 (DSP: whole window copied, then written), "
        "arm_depthwise_conv_s8.c:76-145 (raster, per channel)",
        "ESP-NN convolution/esp_nn_depthwise_conv_s8_esp32s3.c:510-808: each path copies the "
        "input (all of it, or one output row's rows) to scratch before writing, but 576-583: "
        "esp_nn_depthwise_conv_s8_mult1_3x3_padded_esp32s3.S:105-496 (16-channel blocks; rows "
        "255, columns 272; ee.vst 463 after the window); esp_nn_depthwise_conv_opt.c:60-154, "
        "_ansi.c:61-95, _esp32p4.c:113-256: raster (ESP esp_nn/depthwise_conv.cc:62,140)")),
    "CONV_2D": InPlaceRule("conv", ("reference",), (
        "TFLM kernels/internal/reference/integer_ops/conv.h:72-135: output pixels in raster "
        "order; every output channel re-reads the pixel's whole window before it is written",
        "Not CMSIS-NN: NNSupportFunctions/arm_nn_mat_mult_nt_t_s8.c:626-751 (DSP and C, from "
        "arm_convolve_1x1_s8_fast.c:176) loops over output-channel pairs outermost, re-reading "
        "every input pixel for each pair. ESP-NN's conv kernels: not verified")),
}


@dataclasses.dataclass(frozen=True)
class Overlap:
    """One allowed overlap: op ``op``'s ``input`` may share bytes with its ``output`` when
    ``offsets[input] - offsets[output]`` equals ``shift`` (``exact``) or exceeds it."""

    op: int
    input: int
    output: int
    shift: int
    exact: bool


def check_library(library: str) -> tuple[str, ...]:
    """The libraries ``library`` names (``"all"``: ``LIBRARIES``), or an ``AAError``."""
    if library == "all" or library in LIBRARIES:
        return _ALL if library == "all" else (library,)
    raise AAError(f"library must be 'all' (overlaps proven for every kernel library) or one of "
                  f"{list(LIBRARIES)}. Received: library={library!r}")


def _plan_entry(model: schema.ModelT):
    names = [m.name.decode("utf-8", "replace") if isinstance(m.name, bytes) else m.name
             for m in model.metadata or []]
    return model.metadata[names.index(OFFLINE_PLAN_NAME)] if OFFLINE_PLAN_NAME in names else None


def write_offline_plan(tflite: bytes, offsets: Mapping[int, int], *,
                       overlaps: Iterable | str = (), library: str = "all",
                       check: bool = True) -> bytes:
    """Returns ``tflite`` with TFLM's ``OfflineMemoryAllocation`` metadata (replacing any).

    Args:
        tflite: The model's bytes.
        offsets: Offset in the head by tensor index of subgraph 0; absent or -1: TFLM plans it.
        overlaps, library: The in-place overlaps the plan uses (see ``check_plan``).
        check: Refuse a plan ``check_plan`` finds a problem in (off only to test the checker).

    Returns:
        The model's bytes with the plan; the same inputs give the same bytes.

    Raises:
        AAError: The plan would corrupt tensors, or names a tensor that does not exist.

    Example:
        >>> planned = write_offline_plan(tflite, plan_offsets(tflite)[0])  # doctest: +SKIP
    """
    model = flatbuffer.read(tflite)
    counts = [len(g.tensors or []) for g in model.subgraphs]
    words = np.full(3 + sum(counts), -1, np.int64)
    words[:3] = (OFFLINE_PLAN_VERSION, len(counts), sum(counts))
    for t, off in offsets.items():
        if not 0 <= int(t) < counts[0] or not -1 <= int(off) < 2 ** 31:
            raise AAError(f"Offset {off} for tensor {t}: subgraph 0 has tensors 0..{counts[0] - 1}"
                          " and offsets run from -1 (planned by TFLM) to 2**31 - 1.")
        words[3 + int(t)] = int(off)
    problems = check_plan(tflite, offsets, overlaps=overlaps, library=library) if check else []
    if problems:
        raise AAError("This memory plan is unsafe; TFLM would run it and corrupt tensors: "
                      + "; ".join(problems[:5]) + ". Plan again with plan_offsets.")
    entry = _plan_entry(model)
    if entry is None:
        entry = schema.MetadataT()
        entry.name, entry.buffer = OFFLINE_PLAN_NAME, -1
        model.metadata = [*(model.metadata or []), entry]
    used = {t.buffer for g in model.subgraphs for t in g.tensors or []}
    if entry.buffer in used or not 0 < entry.buffer < len(model.buffers):  # else reuse it
        model.buffers.append(schema.BufferT())
        entry.buffer = len(model.buffers) - 1
    model.buffers[entry.buffer].data = np.frombuffer(words.astype("<i4").tobytes(), np.uint8).copy()
    return flatbuffer.write(model)


def read_offline_plan(tflite: bytes) -> dict[int, int] | None:
    """The offline plan of a ``.tflite``: offset by tensor index of subgraph 0, tensors TFLM
    plans itself left out; ``None`` if the file has no plan.

    Raises:
        AAError: The plan is damaged, or its tensor count is not the model's (TFLM would fail).

    Example:
        >>> read_offline_plan(open("model.tflite", "rb").read())  # doctest: +SKIP
        {0: 0, 1: 3072, 2: 0}
    """
    model = flatbuffer.read(tflite)
    entry = _plan_entry(model)
    if entry is None:
        return None
    buf = model.buffers[entry.buffer] if 0 <= entry.buffer < len(model.buffers) else None
    raw = b"" if buf is None or buf.data is None else np.asarray(buf.data, np.uint8).tobytes()
    total = sum(len(g.tensors or []) for g in model.subgraphs)
    words = np.frombuffer(raw[:len(raw) // 4 * 4], "<i4")
    if len(raw) % 4 or len(words) < 3 or words[2] != total or len(words) != 3 + total:
        raise AAError(f"The file's {OFFLINE_PLAN_NAME} metadata does not hold one int32 offset "
                      f"for each of its {total} tensors; TFLM would refuse it. Write the plan "
                      "again with write_offline_plan.")
    n0 = len(model.subgraphs[0].tensors or [])
    return {t: int(off) for t, off in enumerate(words[3:3 + n0]) if off != -1}


def _last_reader(model, op, tensors) -> np.ndarray:
    """For each input pixel (raster order), the last output pixel that reads it (-1: none)."""
    opts = model.subgraphs[0].operators[op.index].builtinOptions
    (_, ih, iw, _), (_, oh, ow, _) = tensors[op.inputs[0]].shape, tensors[op.outputs[0]].shape
    _, kh, kw, _ = tensors[op.inputs[1]].shape
    sh, sw, dh, dw = opts.strideH, opts.strideW, opts.dilationHFactor, opts.dilationWFactor
    same = opts.padding == schema.Padding.SAME
    pt = max((oh - 1) * sh + (kh - 1) * dh + 1 - ih, 0) // 2 if same else 0  # TFLM's padding
    pl = max((ow - 1) * sw + (kw - 1) * dw + 1 - iw, 0) // 2 if same else 0
    last = np.full(ih * iw, -1, np.int64)
    oy, ox = (g.ravel() for g in np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij"))
    p = oy * ow + ox
    for ky in range(kh):
        for kx in range(kw):  # one tap reads each input pixel at most once
            r, c = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
            ok = (r >= 0) & (r < ih) & (c >= 0) & (c < iw)
            q = r[ok] * iw + c[ok]
            last[q] = np.maximum(last[q], p[ok])
    return last


def _admit(model, op, tensors, inp: int, out: int) -> tuple[int, bool] | str:
    """The shift at which ``op``'s ``out`` may overwrite ``inp`` (and whether it is exact), or
    why it may not."""
    rule, a, b = IN_PLACE[op.name], tensors[inp], tensors[out]
    if a.dtype != "INT8" or b.dtype != "INT8" or a.is_constant:
        return "only int8 activations are covered"
    if rule.kind == "elementwise":
        data = op.inputs[:2] if op.name == "ADD" else op.inputs[:1]
        same = (a.elements == b.elements if op.name in ("RESHAPE", "EXPAND_DIMS")
                else all(tensors[t].shape == b.shape for t in data))
        return (0, True) if inp in data and same else \
            "its inputs and output differ in shape (a broadcast reads out of step)"
    if inp != op.inputs[0] or len(a.shape) != 4 or a.shape[0] != 1 or \
            tensors[op.inputs[1]].dtype != "INT8":
        return "only the data input of a batch-1 conv with int8 filters is covered"
    opts = model.subgraphs[0].operators[op.index].builtinOptions
    last, n_out = _last_reader(model, op, tensors), b.shape[1] * b.shape[2]
    ci, co = a.shape[3], b.shape[3]
    if rule.kind == "depthwise":
        if ci != co or (opts.dilationHFactor, opts.dilationWFactor) != (1, 1):
            return "covered for depth multiplier 1 and dilation 1 only"
        # output pixel p overwrites input pixel p - k (same channels): no later pixel reads it
        n, step = min(n_out, len(last)), TFLM_ALIGNMENT // np.gcd(ci, TFLM_ALIGNMENT)
        lag = int(np.max(last[:n] - np.arange(n), initial=0))
        return int(-(-lag // step) * step * ci), True
    # conv: output pixel p must not overwrite input pixels q with last[q] >= p, i.e. stay
    # below first[p] = min{q : last[q] >= p}: shift >= (p + 1) * co - first[p] * ci for all p.
    first = np.full(n_out + 1, len(last), np.int64)
    np.minimum.at(first, last[last >= 0], np.nonzero(last >= 0)[0])
    first = np.minimum.accumulate(first[::-1])[::-1][:n_out]
    need = int(np.max((np.arange(n_out) + 1) * co - first * ci)) if n_out else 0
    return -(-need // TFLM_ALIGNMENT) * TFLM_ALIGNMENT, False


def _schedule(ops, order):
    """Ops in execution order with ``index`` = their step, and each op's step by original index."""
    n = len(ops)
    order = list(range(n)) if order is None else [int(k) for k in order]
    if sorted(order) != list(range(n)):
        raise AAError(f"order must list every op index 0..{n - 1} once. Received: {order}")
    produced = {t for op in ops for t in op.outputs}
    made: set[int] = set()
    for k in order:
        missing = [t for t in ops[k].inputs if t in produced and t not in made]
        if missing:
            raise AAError(f"order runs op {k} before the op that makes its input {missing[0]}. "
                          "Give a topological order of the ops.")
        made.update(ops[k].outputs)
    return ([dataclasses.replace(ops[k], index=s) for s, k in enumerate(order)],
            {k: s for s, k in enumerate(order)})


def _context(tflite: bytes, order=None):
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    sched, step = _schedule(ops, order)
    first, last = lifetimes(model, sched)
    outputs = set(map(int, [] if model.subgraphs[0].outputs is None else model.subgraphs[0].outputs))
    return model, ops, tensors, step, first, last, outputs


def _overlaps(ctx, wanted: Iterable | str, library: str) -> tuple[list[Overlap], list[str]]:
    """The overlaps ``wanted`` names ((op, input, output) triples, ``Overlap``s or ``"auto"``
    for every one the table allows for ``library``), and why any of them is refused."""
    model, ops, tensors, step, _, last, outputs = ctx
    libs = check_library(library)
    auto = isinstance(wanted, str)
    if auto and wanted != "auto":
        raise AAError(f"in_place/overlaps takes 'auto' or (op, input, output) triples: {wanted!r}")
    triples = [(op.index, t, o) for op in ops if op.name in IN_PLACE for t in op.inputs
               for o in op.outputs[:1] if t >= 0] if auto else \
        [(w.op, w.input, w.output) if isinstance(w, Overlap) else tuple(w) for w in wanted]
    found, refused = [], []
    for k, t, o in triples:
        op = ops[k] if 0 <= k < len(ops) else None
        why = ("no such op" if op is None else "not one of the op's inputs and outputs"
               if t not in op.inputs or o not in op.outputs else
               f"no rule in IN_PLACE for {op.name}" if op.name not in IN_PLACE else
               f"proven for {list(IN_PLACE[op.name].libraries)} only, not {list(libs)}"
               if not set(libs) <= set(IN_PLACE[op.name].libraries) else
               "the input is used after this op (or is a model output)"
               if last.get(t) != step[k] + 1 or t in outputs or op.inputs.count(t) > 1 else
               _admit(model, op, tensors, t, o))
        if isinstance(why, tuple):
            found.append(Overlap(k, t, o, *why))
        elif not auto:
            refused.append(f"op {k} ({'?' if op is None else op.name}) may not write tensor {o} "
                           f"over tensor {t}: {why}")
    return found, refused


def in_place_candidates(tflite: bytes, *, library: str = "all", order=None) -> list[Overlap]:
    """Every in-place overlap ``IN_PLACE`` allows in ``tflite`` for ``library``.

    Example:
        >>> [(o.op, o.shift) for o in in_place_candidates(tflite)]  # doctest: +SKIP
        [(3, 0)]
    """
    return _overlaps(_context(tflite, order), "auto", library)[0]


def check_plan(tflite: bytes, offsets: Mapping[int, int], *, overlaps: Iterable | str = (),
               library: str = "all") -> list[str]:
    """Our own lifetime-overlap check of a memory plan; TFLM checks nothing.

    Two tensors with offsets alive in one of TFLM's allocation scopes must not share a byte,
    unless they are an op's input and output in ``overlaps`` whose ``IN_PLACE`` rule holds for
    ``library`` at the shift the plan gives them.

    Args:
        tflite: The model's bytes, in the op order the plan was made for.
        offsets: Byte offset by tensor index; -1 or absent: planned by TFLM at run time.
        overlaps: (op, input, output) triples (or ``Overlap``s) allowed to share bytes, or
            ``"auto"``: every overlap ``IN_PLACE`` allows.
        library: ``"all"`` (safe on TFLM's reference kernels, CMSIS-NN and ESP-NN) or the
            library the firmware links: ``"reference"``, ``"cmsis-nn"`` or ``"esp-nn"``.

    Returns:
        The problems, in words; empty when the plan is safe.

    Example:
        >>> check_plan(tflite, {0: 0, 1: 0})  # doctest: +SKIP
        ['tensors 0 and 1 are both alive in scope 1 and share bytes 0..783']
    """
    ctx = _context(tflite)
    tensors, first, last = ctx[2], ctx[4], ctx[5]
    allowed, problems = _overlaps(ctx, overlaps, library)
    rules = {(o.input, o.output): o for o in allowed}
    placed = []
    for t, off in sorted((int(t), int(o)) for t, o in offsets.items()):
        if off != -1 and (not 0 <= t < len(tensors) or tensors[t].is_variable):
            problems.append(f"tensor {t} does not exist or is a variable; give it no offset")
            continue
        nbytes = tensors[t].elements * tensors[t].storage_bits // 8 if off != -1 else 0
        if nbytes == 0 or tensors[t].is_constant or t not in first:
            continue  # TFLM does not plan it, and ignores the offset
        if off < 0 or off % TFLM_ALIGNMENT:
            problems.append(f"tensor {t} is at offset {off}; offsets must be >= 0 and multiples"
                            f" of {TFLM_ALIGNMENT} (TFLM's buffer alignment)")
        placed.append((t, off, nbytes))
    for i, (t, a, na) in enumerate(placed):
        for u, b, nb in placed[i + 1:]:
            if first[t] > last[u] or first[u] > last[t] or a + na <= b or b + nb <= a:
                continue
            if _admitted(rules.get((t, u)), a, b) or _admitted(rules.get((u, t)), b, a):
                continue
            problems.append(f"tensors {t} and {u} are both alive in scope "
                            f"{max(first[t], first[u])} and share bytes "
                            f"{max(a, b)}..{min(a + na, b + nb) - 1}")
    return problems


def _admitted(o: Overlap | None, input_offset: int, output_offset: int) -> bool:
    shift = input_offset - output_offset
    return o is not None and (shift == o.shift if o.exact else shift >= o.shift)


def _fits(c: int, i: int, live, offsets, sizes, pairs) -> bool:
    """Buffer ``i`` at offset ``c`` clashes with no live placed buffer, bar allowed overlaps."""
    for j in live:
        if c + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= c:
            continue
        if not (_admitted(pairs[i, j], c, offsets[j]) if (i, j) in pairs
                else _admitted(pairs.get((j, i)), offsets[j], c)):
            return False
    return True


def _place(sizes, first, last, pairs, later_first: bool) -> tuple[list[int], int]:
    """TFLM's greedy order and rule (largest first, lowest offset that fits), plus the offsets
    allowed overlaps give, even below 0 (the arena is shifted after): the smallest extent wins.
    ``pairs`` maps (input, output) positions to ``Overlap``s; ``later_first`` breaks size ties
    by placing the later-created buffer first (an output before the input it overwrites)."""
    n, lo, hi = len(sizes), 0, 0
    offsets: list = [None] * n
    for i in sorted(range(n), key=lambda i: (-sizes[i], -first[i] if later_first else 0)):
        live = [j for j in range(n) if offsets[j] is not None
                and not (first[j] > last[i] or first[i] > last[j])]
        cands = {0, *(offsets[j] + sizes[j] for j in live)}
        for (a, b), o in pairs.items():
            if b == i and offsets[a] is not None:
                cands.add(offsets[a] - o.shift)
            if a == i and offsets[b] is not None:
                cands.add(offsets[b] + o.shift)
        _, offsets[i] = min((max(hi, c + sizes[i]) - min(lo, c), c) for c in cands
                            if _fits(c, i, live, offsets, sizes, pairs))
        lo, hi = min(lo, offsets[i]), max(hi, offsets[i] + sizes[i])
    return [off - lo for off in offsets], hi - lo


def plan_offsets(tflite: bytes, *, order: Sequence[int] | None = None,
                 in_place: Iterable | str = (), library: str = "all"
                 ) -> tuple[dict[int, int], int]:
    """Our planner over the execution order: TFLM's greedy placement plus allowed overlaps.

    Args:
        tflite: The model's bytes.
        order: Plan for this op order (a topological order of op indices) instead of the
            file's. TFLM runs ops in file order: only a file in that order can carry the plan.
        in_place: (op, input, output) triples that may overlap, or ``"auto"``: every overlap
            ``IN_PLACE`` allows for ``library``. ``()`` gives TFLM's own plan.
        library: The kernel library the overlaps must be safe for (see ``check_plan``).

    Returns:
        The offset of every planned tensor, and the head (highest buffer end, buffers rounded
        up to 16 bytes as in TFLM); never above TFLM's own greedy head.

    Raises:
        AAError: An overlap in ``in_place`` is not proven safe for ``library``.

    Example:
        >>> offsets, head = plan_offsets(tflite, in_place="auto", library="reference")  # doctest: +SKIP
    """
    ctx = _context(tflite, order)
    _, _, tensors, _, first, last, _ = ctx
    overlaps, refused = _overlaps(ctx, in_place, library)
    if refused:
        raise AAError("; ".join(refused) + ". Leave these out of in_place, or pass library= "
                      "naming the one kernel library the firmware links if it is proven there.")
    planned = [t for t in sorted(first) if not (tensors[t].is_constant or tensors[t].is_variable)
               and tensors[t].elements * tensors[t].storage_bits // 8 > 0]
    raw = [tensors[t].elements * tensors[t].storage_bits // 8 for t in planned]
    sizes = [-(-nb // TFLM_ALIGNMENT) * TFLM_ALIGNMENT for nb in raw]
    f, la = [first[t] for t in planned], [last[t] for t in planned]
    offsets, head = greedy_offsets(sizes, f, la)
    index = {t: i for i, t in enumerate(planned)}
    pairs = {(index[o.input], index[o.output]): o for o in overlaps
             if o.input in index and o.output in index}
    for later_first in (False, True) if pairs else ():
        ours, our_head = _place(sizes, f, la, pairs, later_first)
        if our_head < head:
            offsets, head = ours, our_head
    return {t: int(off) for t, off in zip(planned, offsets)}, int(head)

