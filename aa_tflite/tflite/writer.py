"""Appending ops and tensors to subgraph 0 of an int8 ``.tflite`` (``schema.ModelT``): the
stock ``STRIDED_SLICE``, ``PAD`` and ``CONCATENATION`` ops the exact rewrites insert
(``tflite.patches``). Schema only.

Example:
    >>> w = GraphWriter(model)  # doctest: +SKIP
    >>> t = w.crop_and_pad(image, ((0, 96), (0, 96)), ((-1, 33), (-1, 33)), (96, 96),
    ...                    "/tile0")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite.ops import opcode_index

__all__ = ["GraphWriter"]

_OP = schema.BuiltinOperator
# op -> (builtin code, version for int8 tensors)
_NEW_OPS = {"STRIDED_SLICE": (_OP.STRIDED_SLICE, 2), "PAD": (_OP.PAD, 2),
            "CONCATENATION": (_OP.CONCATENATION, 2)}


class GraphWriter:
    """Appends tensors and ops to subgraph 0 of ``model``; ``ops`` collects the new ops in
    order (the caller places them in the graph). Constant int32 tensors with the same value are
    shared: TFLM's tail counts every tensor."""

    def __init__(self, model) -> None:
        self.model, self.graph, self.ops = model, model.subgraphs[0], []
        self.constants: dict[tuple, int] = {}

    def activation(self, like: int, region, tag: str) -> int:
        new = copy.deepcopy(self.graph.tensors[like])
        (r0, r1), (c0, c1) = region
        shape = [1, r1 - r0, c1 - c0, int(new.shape[3])]
        new.shape = new.shapeSignature = np.asarray(shape, np.int32)
        new.name = (new.name or b"") + tag.encode()
        new.buffer = 0
        self.graph.tensors.append(new)
        return len(self.graph.tensors) - 1

    def constant(self, values, tag: str) -> int:
        values = np.asarray(values, "<i4")
        key = (values.shape, values.tobytes())
        if key in self.constants:  # one tensor per distinct value: TFLM's tail counts tensors
            return self.constants[key]
        buf = schema.BufferT()
        buf.data = np.frombuffer(values.tobytes(), np.uint8).copy()
        self.model.buffers.append(buf)
        t = schema.TensorT()
        t.shape = np.asarray(values.shape, np.int32)
        t.type, t.buffer, t.name = schema.TensorType.INT32, len(self.model.buffers) - 1, tag.encode()
        self.graph.tensors.append(t)
        self.constants[key] = len(self.graph.tensors) - 1
        return self.constants[key]

    def op(self, name: str, inputs, output: int, options_type, options) -> int:
        op = schema.OperatorT()
        op.opcodeIndex = opcode_index(self.model, *_NEW_OPS[name])
        op.builtinOptionsType, op.builtinOptions = options_type, options
        op.inputs, op.outputs = np.asarray(inputs, np.int32), np.asarray([output], np.int32)
        self.ops.append(op)
        return output

    def crop_and_pad(self, t: int, held, box, size, tag: str) -> int:
        """Tensor ``t`` (holding region ``held``) cut to region ``box`` of a tensor of
        ``size`` (height, width): a STRIDED_SLICE for the part inside, a PAD for the rest."""
        inside = tuple((max(lo, 0), min(hi, n)) for (lo, hi), n in zip(box, size))
        if inside != held:
            begin = [0, inside[0][0] - held[0][0], inside[1][0] - held[1][0], 0]
            end = [1, inside[0][1] - held[0][0], inside[1][1] - held[1][0],
                   int(self.graph.tensors[t].shape[3])]
            options = schema.StridedSliceOptionsT()
            t = self.op("STRIDED_SLICE", [t, self.constant(begin, tag + "/begin"),
                                          self.constant(end, tag + "/end"),
                                          self.constant([1, 1, 1, 1], tag + "/strides")],
                        self.activation(t, inside, tag + "/crop"),
                        schema.BuiltinOptions.StridedSliceOptions, options)
        pads = [[inside[i][0] - box[i][0], box[i][1] - inside[i][1]] for i in range(2)]
        if any(p for pair in pads for p in pair):
            t = self.op("PAD", [t, self.constant([[0, 0], *pads, [0, 0]], tag + "/paddings")],
                        self.activation(t, box, tag + "/pad"), schema.BuiltinOptions.PadOptions,
                        schema.PadOptionsT())
        return t

    def concat(self, parts: Sequence[int], axis: int, output: int) -> int:
        options = schema.ConcatenationOptionsT()
        options.axis, options.fusedActivationFunction = axis, schema.ActivationFunctionType.NONE
        return self.op("CONCATENATION", parts, output,
                       schema.BuiltinOptions.ConcatenationOptions, options)
