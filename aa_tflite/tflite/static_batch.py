"""A ``.tflite`` fixed at batch 1, with its shape arithmetic folded away. Schema only.

Keras' ``Flatten`` (and any layer that reshapes by the run-time batch) lowers to
``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE``: the new shape is computed on every run. On a
target whose batch is fixed (TensorFlow Lite Micro, the Edge TPU) those ops cost persistent
memory in TFLM's arena and are where the Edge TPU hands the rest of the graph to the CPU.
``static_batch`` sets every shape signature to its batch-1 shape, evaluates the shape ops once,
stores their result as a constant, and removes them. The arithmetic of every other op is
untouched, so the outputs are the same bit for bit; tensor indices are kept (the removed ops'
outputs stay in the tensor table, unused and so never allocated), so the ``aa_tflite`` metadata
still refers to the right tensors.

Example:
    >>> fixed = static_batch(open("digits.tflite", "rb").read())  # doctest: +SKIP
    >>> [op.name for op in flatbuffer.describe(flatbuffer.read(fixed))[0]]  # doctest: +SKIP
    ['CONV_2D', 'CONV_2D', 'MAX_POOL_2D', 'CONV_2D', 'RESHAPE', 'FULLY_CONNECTED', ...]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer

__all__ = ["FOLDED_OPS", "fix_shapes", "static_batch"]

_OPS = schema.BuiltinOperator


def fix_shapes(graph: schema.SubGraphT) -> None:
    """Sets every tensor's shape signature of ``graph`` to its static shape, batch 1 where it
    was -1."""
    for t in graph.tensors:
        if t.shape is not None and len(t.shape):
            t.shapeSignature = np.array([max(int(d), 1) for d in t.shape], np.int32)


def _shape(graph, op, known) -> np.ndarray | None:
    shape = graph.tensors[op.inputs[0]].shape
    return None if shape is None else np.asarray(shape, np.int32)


def _strided_slice(graph, op, known) -> np.ndarray | None:
    x, begin, end, strides = (known.get(t) for t in op.inputs[:4])
    o = op.builtinOptions
    if any(v is None for v in (x, begin, end, strides)) or x.ndim != 1 or begin.size != 1 or \
            o is None or o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
        return None
    b = None if o.beginMask & 1 else int(begin[0])
    e = None if o.endMask & 1 else int(end[0])
    if o.shrinkAxisMask & 1:
        return np.asarray(x[int(begin[0])], x.dtype)
    return x[b:e:int(strides[0])]


def _pack(graph, op, known) -> np.ndarray | None:
    values = [known.get(t) for t in op.inputs]
    if any(v is None for v in values):
        return None
    axis = op.builtinOptions.axis if op.builtinOptions is not None else 0
    return np.stack(values, axis=axis)


# The ops whose outputs are evaluated once: op code -> (graph, op, known values) -> value or None.
FOLDED_OPS: dict[int, Callable] = {
    _OPS.SHAPE: _shape,
    _OPS.STRIDED_SLICE: _strided_slice,
    _OPS.PACK: _pack,
}


def _constant(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    """The value of an int32 constant tensor, or None."""
    buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    if buf is None or buf.data is None or len(buf.data) == 0 or \
            tensor.type != schema.TensorType.INT32:
        return None
    return np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), "<i4").reshape(
        tuple(tensor.shape) if tensor.shape is not None else ())


def _fold_graph(model: schema.ModelT, graph: schema.SubGraphT) -> None:
    """Folds ``graph``'s shape ops in place: their outputs that other ops read become
    constants, and the folded ops are removed."""
    known = {i: v for i, t in enumerate(graph.tensors) if (v := _constant(model, t)) is not None}
    folded = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        fold = FOLDED_OPS.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        value = None if fold is None or len(op.outputs) != 1 else fold(graph, op, known)
        if value is not None:
            known[int(op.outputs[0])] = np.asarray(value, np.int32)
            folded.append(op)
    if not folded:
        return
    kept = [op for op in graph.operators if all(op is not f for f in folded)]
    read = {int(t) for op in kept for t in op.inputs if t >= 0}
    outputs = {int(t) for t in (graph.outputs if graph.outputs is not None else [])}
    for op in folded:
        t = int(op.outputs[0])
        if t in read or t in outputs:  # a kept op reads it: it becomes a constant
            buf = schema.BufferT()
            buf.data = np.frombuffer(known[t].astype("<i4").tobytes(), np.uint8)
            model.buffers.append(buf)
            tensor = graph.tensors[t]
            tensor.buffer = len(model.buffers) - 1
            tensor.shape = np.asarray(known[t].shape, np.int32)
            tensor.shapeSignature = np.asarray(known[t].shape, np.int32)
    graph.operators = kept


def static_batch(tflite: bytes) -> bytes:
    """``tflite`` fixed at batch 1 in every subgraph, its shape ops folded into constants.

    Args:
        tflite: A ``.tflite`` (one subgraph or several).

    Returns:
        The rewritten file: the same outputs for a batch of one, fewer ops; tensor indices and
        metadata unchanged.
    """
    model = flatbuffer.read(tflite)
    for graph in model.subgraphs:
        fix_shapes(graph)
        _fold_graph(model, graph)
    return flatbuffer.write(model)
