"""Measuring a variant by running only the ops it changed, from a cached cut. No TensorFlow import.

A variant of the baseline (one option, one plan) computes exactly what the baseline computes up to
the first op it changes: the same ops, the same quantization, the same weights, the same inputs.
Where, after some op ``p``, a single tensor ``t`` is all that the later ops read of what came
before (``cuts``: the residual stream between two blocks, the output of a layer in a chain), the
ops after ``p`` are a model of their own with ``t`` as its input (``suffix``). The baseline's
values of ``t`` on the evaluation inputs are read once; a variant that changes nothing at or before
``p`` (``first_change``) then runs from them, and its outputs are the whole model's, bit for bit.
On the 24M-parameter wide ResNet, sensitivity spent 80% of its time running whole models.

The same cuts serve the consumer corrections' fits: a prefix run of a variant on the fitting
inputs starts from the cut too (``TailRunner.start``), and reads the same int8 values.

Example:
    >>> from aa_tflite.search import tail
    >>> cut = tail.TailRunner(base_tflite, x_eval)  # doctest: +SKIP
    >>> cut.run(variant, batch_size=64, num_threads=1)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aa_tflite.runtime.interpreter import make_interpreter, run
from aa_tflite.tflite import flatbuffer
from aa_tflite.types import Kernels

__all__ = ["TailRunner", "cuts", "first_change", "suffix"]

# The cut values kept, at most (bytes of int8 over the evaluation inputs), and the cuts at most.
TAIL_BYTES = 256 << 20
MAX_CUTS = 16


def _constants(model: Any) -> set[int]:
    graph = model.subgraphs[0]
    return {k for k, t in enumerate(graph.tensors)
            if 0 < t.buffer < len(model.buffers) and model.buffers[t.buffer].data is not None
            and len(model.buffers[t.buffer].data) > 0}


def _ints(values) -> list[int]:
    return [int(v) for v in (values if values is not None else []) if int(v) >= 0]


def cuts(model: Any) -> list[tuple[int, int]]:
    """``(p, t)`` for every op ``p`` after which ``t`` is the only non-constant tensor written at
    or before ``p`` (or a model input) that an op after ``p`` reads (or the model outputs)."""
    graph, const = model.subgraphs[0], _constants(model)
    ops = graph.operators or []
    last: dict[int, int] = {}
    for k, op in enumerate(ops):
        for i in _ints(op.inputs):
            if i not in const:
                last[i] = k
    for o in _ints(graph.outputs):
        last[o] = len(ops)
    live = {t for t in _ints(graph.inputs) if last.get(t, -1) >= 0}
    out = []
    for p, op in enumerate(ops[:-1]):
        live |= {t for t in _ints(op.outputs) if last.get(t, -1) > p}
        live = {t for t in live if last[t] > p}
        if len(live) == 1:
            out.append((p, next(iter(live))))
    return out


def _same_tensor(a: Any, b: Any, ma: Any, mb: Any) -> bool:
    qa, qb = a.quantization, b.quantization
    if (a.type, list(a.shape if a.shape is not None else [])) != \
            (b.type, list(b.shape if b.shape is not None else [])):
        return False
    if (qa is None) != (qb is None) or (qa is not None and not (
            np.array_equal(qa.scale, qb.scale) and np.array_equal(qa.zeroPoint, qb.zeroPoint)
            and qa.quantizedDimension == qb.quantizedDimension)):
        return False
    da = ma.buffers[a.buffer].data if 0 < a.buffer < len(ma.buffers) else None
    db = mb.buffers[b.buffer].data if 0 < b.buffer < len(mb.buffers) else None
    return (da is None) == (db is None) and (da is None or np.array_equal(da, db))


def _same_op(a: Any, b: Any, ma: Any, mb: Any) -> bool:
    ca, cb = ma.operatorCodes[a.opcodeIndex], mb.operatorCodes[b.opcodeIndex]
    return ((max(ca.builtinCode, ca.deprecatedBuiltinCode), ca.version) ==
            (max(cb.builtinCode, cb.deprecatedBuiltinCode), cb.version)
            and _ints(a.inputs) == _ints(b.inputs) and _ints(a.outputs) == _ints(b.outputs)
            and a.builtinOptionsType == b.builtinOptionsType
            and _same_fields(a.builtinOptions, b.builtinOptions))


def _same_fields(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    fa, fb = vars(a), vars(b)
    return fa.keys() == fb.keys() and all(
        np.array_equal(fa[k], fb[k]) if isinstance(fa[k], (list, np.ndarray)) else fa[k] == fb[k]
        for k in fa)


def first_change(base: Any, variant: Any) -> int:
    """The index of the first op of ``variant`` whose result may differ from ``base``'s: an op
    changed itself, or one that writes or reads a tensor whose type, shape, quantization or data
    changed. 0 when the two graphs differ in size."""
    gb, gv = base.subgraphs[0], variant.subgraphs[0]
    ops_b, ops_v = gb.operators or [], gv.operators or []
    if len(ops_b) != len(ops_v) or len(gb.tensors) != len(gv.tensors) \
            or _ints(gb.inputs) != _ints(gv.inputs) or _ints(gb.outputs) != _ints(gv.outputs):
        return 0
    changed = {k for k, (a, b) in enumerate(zip(gb.tensors, gv.tensors, strict=True))
               if not _same_tensor(a, b, base, variant)}
    for k, (a, b) in enumerate(zip(ops_b, ops_v, strict=True)):
        if changed.intersection(_ints(b.inputs) + _ints(b.outputs)) \
                or not _same_op(a, b, base, variant):
            return k
    return len(ops_v)


def suffix(variant: Any, p: int, t: int) -> bytes:
    """The ops of ``variant`` after op ``p``, as a model whose one input is tensor ``t``."""
    graph = variant.subgraphs[0]
    graph.operators = (graph.operators or [])[p + 1:]
    graph.inputs = np.array([t], np.int32)
    variant.signatureDefs = []
    return flatbuffer.write(variant)


class TailRunner:
    """Runs variants of ``base`` on ``x`` from the latest cut before their first change.

    Args:
        base: The baseline ``.tflite``.
        x: The inputs the variants run on (float): the evaluation inputs, or the fitting
            inputs of the corrections.
        values: A function ``(tflite, tensors, x) -> {tensor: int8 values}`` reading the
            baseline's cut tensors on ``x`` (``calibrate.tensor_values(..., keep_quantized)``).
        before: The ops variants change first (their sites' producers): keep the latest cut
            before each. None: cuts spread over the model, ``MAX_CUTS`` at most. Either way the
            kept values stay within ``TAIL_BYTES``, earliest cuts first.
    """

    def __init__(self, base: bytes, x: np.ndarray, values: Any, *,
                 before: Sequence[int] | None = None) -> None:
        self._base = flatbuffer.read(base)
        graph = self._base.subgraphs[0]
        n_ops, tensors = len(graph.operators or []), graph.tensors
        signature = tensors[_ints(graph.inputs)[0]].shapeSignature
        fixed = signature is not None and len(signature) > 0 and int(signature[0]) != -1
        every = [] if fixed else cuts(self._base)  # a fixed batch runs whole, one by one
        if before is None:  # cuts spread over the model, none in its first ops
            wanted = []
            for p, t in every:
                if p >= n_ops / MAX_CUTS and (not wanted or p - wanted[-1][0] >= n_ops / MAX_CUTS):
                    wanted.append((p, t))
        else:  # the latest cut before each op of ``before``
            wanted = sorted({[c for c in every if c[0] < k][-1] for k in before
                             if every and every[0][0] < k})
        kept: list[tuple[int, int]] = []
        total = 0
        for p, t in wanted:
            nbytes = len(x) * int(np.prod(tensors[t].shape[1:]))
            if total + nbytes <= TAIL_BYTES:
                kept.append((p, t))
                total += nbytes
        self.cuts = kept
        got = values(base, [t for _, t in kept], x) if kept else {}
        self._values = {t: got.raw(t) for _, t in kept}

    def start(self, tflite: bytes, needs: Sequence[int] = ()) -> tuple[bytes, np.ndarray] | None:
        """``tflite`` from the latest cut before its first change: the ops after the cut, as a
        model whose input is the cut tensor (``suffix``), and the baseline's stored values of that
        tensor on ``x``. None when no cut is before the change, or when an op at or before the cut
        writes one of ``needs`` (tensors the caller will read)."""
        if not self.cuts:
            return None
        variant = flatbuffer.read(tflite)
        first = first_change(self._base, variant)
        before = [(p, t) for p, t in self.cuts if p < first]
        if not before:
            return None
        p, t = before[-1]
        written = {o for op in (variant.subgraphs[0].operators or [])[p + 1:]
                   for o in _ints(op.outputs)}
        if not written.issuperset(int(n) for n in needs):
            return None
        return suffix(variant, p, t), self._values[t]

    def run(self, tflite: bytes, *, batch_size: int, num_threads: int) -> list[np.ndarray] | None:
        """Every output of ``tflite`` on ``x``, dequantized, in the file's order, run from the
        latest cut before its first change (``start``); None when no cut is before it (run it
        whole)."""
        start = self.start(tflite)
        if start is None:
            return None
        interp = make_interpreter(start[0], Kernels.BUILTIN, num_threads=num_threads)
        return run(interp, start[1], batch_size=batch_size, all_outputs=True, stored=True)
