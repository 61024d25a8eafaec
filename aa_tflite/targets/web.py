"""The browser demo (``web_demo/``, LiteRT.js): the model made LiteRT.js-ready, and the same
assets as the Android demo. No TensorFlow import."""

from __future__ import annotations

import os

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.targets import TargetExport
from aa_tflite.targets.android import with_samples, write_assets
from aa_tflite.tflite import flatbuffer, multipoint
from aa_tflite.tflite.metadata import read_metadata
from aa_tflite.tflite.ops import opcode_index
from aa_tflite.tflite.static_batch import fix_shapes
from aa_tflite.types import AAError

__all__ = ["export", "export_web", "web_model"]


def _float_twin(graph, index: int) -> int:
    """Adds a float32 tensor of tensor ``index``'s shape to ``graph``; returns its index."""
    src = graph.tensors[index]
    t = schema.TensorT()
    t.shape = np.array([int(d) for d in src.shape], np.int32)
    t.shapeSignature = t.shape.copy()
    t.type = schema.TensorType.FLOAT32
    t.buffer = 0
    t.name = (src.name or b"io") + b"_float"
    graph.tensors.append(t)
    return len(graph.tensors) - 1


def _op(model, builtin: int, version: int, source: int, result: int):
    """A one-input, one-output ``OperatorT`` of ``builtin`` (its code added if ``model`` lacks
    it)."""
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode_index(model, builtin, version), [source], \
        [result]
    return op


def _float_io(model, graph) -> dict[int, int]:
    """Puts a ``QUANTIZE`` op in front of ``graph``'s int8 input and a ``DEQUANTIZE`` op behind
    its int8 output; returns ``old io tensor -> its float32 twin``."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise AAError("The web export takes models with one input and one output.")
    ops, int8 = schema.BuiltinOperator, schema.TensorType.INT8
    i, o = int(graph.inputs[0]), int(graph.outputs[0])
    remap = {}
    if graph.tensors[i].type == int8:
        remap[i] = _float_twin(graph, i)
        graph.operators.insert(0, _op(model, ops.QUANTIZE, 1, remap[i], i))
        graph.inputs = np.array([remap[i]], np.int32)
    if graph.tensors[o].type == int8:
        remap[o] = _float_twin(graph, o)
        graph.operators.append(_op(model, ops.DEQUANTIZE, 2, o, remap[o]))
        graph.outputs = np.array([remap[o]], np.int32)
    return remap


def web_model(tflite: bytes) -> bytes:
    """The model as LiteRT.js takes it: float32 input and output, and a static batch of 1.

    LiteRT.js has no int8 tensors on its JS side and rejects a dynamic batch dimension. Each
    subgraph whose input is int8 gets a ``QUANTIZE`` op in front (float32 -> its int8 input,
    same scale and zero point) and a ``DEQUANTIZE`` op behind its int8 output, as the TFLite
    converter writes for ``io_dtype="float32"``; every tensor's shape signature becomes its
    static shape. The int8 ops inside are untouched, so the points compute the same values.

    Example:
        >>> web = web_model(open("out/digits.tflite", "rb").read())  # doctest: +SKIP

    Raises:
        AAError: A subgraph has more than one input or output.
    """
    model = flatbuffer.read(tflite)
    for graph in model.subgraphs:
        fix_shapes(graph)
        remap = _float_io(model, graph)
        for sig in model.signatureDefs or []:
            if model.subgraphs[sig.subgraphIndex] is graph:
                for m in [*(sig.inputs or []), *(sig.outputs or [])]:
                    m.tensorIndex = remap.get(int(m.tensorIndex), int(m.tensorIndex))
    return multipoint.write_shared(model)


def export_web(tflite: bytes, out_dir: str | os.PathLike, *, samples_x, samples_y=None,
               labels: list[str] | None = None) -> TargetExport:
    """Writes the browser demo's assets: ``model.tflite`` made LiteRT.js-ready (``web_model``)
    and the same metadata, labels and samples as ``export_android``.

    Example:
        >>> export_web(open("out/digits.tflite", "rb").read(), "web_demo/assets",
        ...            samples_x=x_val[:16], samples_y=y_val[:16])  # doctest: +SKIP

    Returns:
        An ``TargetExport``, as ``export_android`` returns it, for target ``web``.
    """
    web = web_model(tflite)
    if read_metadata(web) != read_metadata(tflite):
        raise AAError("The web model lost its metadata; this is a bug.")
    return write_assets(web, out_dir, samples_x=samples_x, samples_y=samples_y, labels=labels,
                        target="web")


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None) -> TargetExport:
    """The ``Target`` form of ``export_web``: ``samples`` is ``(x, y)``, or None for
    ``android.default_samples(tflite)``; ``name`` and ``source`` are not used."""
    return with_samples(export_web, tflite, out, samples)
