"""Read and write ``.tflite`` flatbuffers through the LiteRT schema module. No TensorFlow import."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.kept import Kept
from aa_tflite.types import AAError

__all__ = ["OpInfo", "TensorInfo", "describe", "describe_bytes", "read", "write"]

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_ACT_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items()
              if not k.startswith("_")}
# Builtin-options union type -> the generated reader class (for the fused activation).
_OPTION_CLASSES = {v: getattr(schema, k) for k, v in vars(schema.BuiltinOptions).items()
                   if not k.startswith("_") and hasattr(getattr(schema, k, None), "Init")}
# Bits one element takes in memory, as TFLite Micro stores it (INT4 takes a byte there).
_TYPE_BITS = {"FLOAT32": 32, "FLOAT16": 16, "INT32": 32, "UINT8": 8, "INT64": 64, "BOOL": 8,
              "INT16": 16, "INT8": 8, "FLOAT64": 64, "UINT32": 32, "UINT16": 16, "INT4": 8,
              "BFLOAT16": 16}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of subgraph 0."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    storage_bits: int  # bits per element as stock TFLite / TFLM store it
    is_constant: bool
    is_variable: bool
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator of subgraph 0, in execution order."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    fused_activation: str | None


class _Unpacked:
    """The object trees of files read more than once, pickled (unpickling one is 5-10x quicker
    than unpacking the flatbuffer; every variant of a plan is an edit of the baseline, read again
    for each). A file is kept from its second read on; ``read`` still returns a new tree."""

    def __init__(self, max_bytes: int = 64 << 20, seen: int = 256) -> None:
        self._kept, self._seen = Kept(), Kept()
        self._max_bytes, self._seen_max = max_bytes, seen

    def get(self, key: bytes) -> schema.ModelT | None:
        kept = self._kept.get(key)
        return None if kept is None else pickle.loads(kept)

    def put(self, key: bytes, model: schema.ModelT) -> None:
        again = key in self._seen
        self._seen.put(key, True, limit=self._seen_max)
        if again:
            kept = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
            self._kept.put(key, kept, size=len(kept), limit=self._max_bytes)


_UNPACKED = _Unpacked()


def read(tflite: bytes) -> schema.ModelT:
    """Unpacks a ``.tflite`` into the schema's mutable object tree (a new one at every call: the
    caller may edit it)."""
    if not isinstance(tflite, (bytes, bytearray, memoryview)) or len(tflite) < 8 or \
            bytes(tflite[4:8]) != b"TFL3":
        raise AAError("Expected the bytes of a .tflite flatbuffer (file identifier 'TFL3'). "
                      "Pass the file's contents, e.g. open(path, 'rb').read().")
    data = bytes(tflite)
    key = hashlib.blake2b(data, digest_size=20).digest()
    model = _UNPACKED.get(key)
    if model is not None:
        return model
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        _validate(model)
    except AAError:
        raise
    except Exception as e:  # a damaged flatbuffer fails anywhere in the generated reader
        raise AAError(f"This .tflite is damaged (truncated or corrupted): {type(e).__name__} "
                      f"while reading it. Convert or copy the model again.") from e
    _UNPACKED.put(key, model)
    return model


def _validate(model: schema.ModelT) -> None:
    """Index checks the generated reader does not make, so a damaged file fails here, clearly."""
    if not model.subgraphs:
        raise AAError("This .tflite has no subgraph; it is not a runnable model.")
    n_buffers = len(model.buffers or [])
    n_codes = len(model.operatorCodes or [])
    for graph in model.subgraphs:
        n = len(graph.tensors or [])
        for t in graph.tensors or []:
            if not 0 <= t.buffer < max(n_buffers, 1):
                raise AAError(f"This .tflite is damaged: a tensor points at buffer {t.buffer} of "
                              f"{n_buffers}. Convert or copy the model again.")
        for k, op in enumerate(graph.operators or []):
            refs = [*(op.inputs if op.inputs is not None else []),
                    *(op.outputs if op.outputs is not None else [])]
            if any(not -1 <= int(i) < n for i in refs) or not 0 <= op.opcodeIndex < n_codes:
                raise AAError(f"This .tflite is damaged: op {k} refers to a tensor or operator "
                              "code that does not exist. Convert or copy the model again.")
        for i in [*(graph.inputs if graph.inputs is not None else []),
                  *(graph.outputs if graph.outputs is not None else [])]:
            if not 0 <= int(i) < n:
                raise AAError("This .tflite is damaged: a model input or output refers to a "
                              "tensor that does not exist. Convert or copy the model again.")


def write(model: schema.ModelT) -> bytes:
    """Packs a schema object tree back into ``.tflite`` bytes."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _tensor_info(index: int, name, shape, type_code: int, has_data: bool, is_variable,
                 scale, zero_point) -> TensorInfo:
    """One ``TensorInfo`` from a tensor's fields as either reader gives them."""
    dtype = _TYPE_NAMES.get(type_code, str(type_code))
    return TensorInfo(index, (name or b"").decode(errors="replace"),
                      tuple(int(d) for d in shape) if shape is not None else (), dtype,
                      _TYPE_BITS.get(dtype, 32), has_data, bool(is_variable),
                      tuple(float(s) for s in scale) if scale is not None else (),
                      tuple(int(z) for z in zero_point) if zero_point is not None else ())


def describe(model: schema.ModelT) -> tuple[list[OpInfo], list[TensorInfo]]:
    """The ops (in execution order) and tensors of subgraph 0."""
    if not model.subgraphs:
        raise AAError("This .tflite has no subgraph; it is not a runnable model.")
    graph = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(graph.tensors):
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        has_data = buf is not None and buf.data is not None and len(buf.data) > 0
        has_data = has_data or (buf is not None and bool(getattr(buf, "size", 0)))
        q = t.quantization
        tensors.append(_tensor_info(i, t.name, t.shape, t.type, has_data, t.isVariable,
                                    None if q is None else q.scale,
                                    None if q is None else q.zeroPoint))
    ops = []
    for k, op in enumerate(graph.operators):
        act = getattr(op.builtinOptions, "fusedActivationFunction", None)
        ops.append(OpInfo(k, _op_name(model, op),
                          tuple(int(i) for i in (op.inputs if op.inputs is not None else [])),
                          tuple(int(i) for i in (op.outputs if op.outputs is not None else [])),
                          None if act is None else _ACT_NAMES.get(act, str(act))))
    return ops, tensors


def describe_bytes(tflite: bytes) -> tuple[list[OpInfo], list[TensorInfo], tuple[int, ...]]:
    """``describe`` of subgraph 0 read straight from the bytes, with the subgraph's outputs.

    It reads only the fields ``describe`` gives, through the flatbuffer reader, without unpacking
    the model (an order of magnitude faster on a model of some hundred tensors): for analyses run
    once per variant. It does not make ``read``'s damage checks; give it files this package wrote
    or has read once.

    Example:
        >>> ops, tensors, outputs = describe_bytes(tflite)  # doctest: +SKIP
    """
    m = schema.Model.GetRootAsModel(bytes(tflite), 0)
    if m.SubgraphsLength() == 0:
        raise AAError("This .tflite has no subgraph; it is not a runnable model.")
    g = m.Subgraphs(0)
    tensors = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        buf = m.Buffers(t.Buffer()) if t.Buffer() < m.BuffersLength() else None
        has_data = buf is not None and (buf.DataLength() > 0 or bool(buf.Size()))
        q = t.Quantization()
        tensors.append(_tensor_info(
            i, t.Name(), t.ShapeAsNumpy() if t.ShapeLength() else None, t.Type(), has_data,
            t.IsVariable(), q.ScaleAsNumpy() if q and q.ScaleLength() else None,
            q.ZeroPointAsNumpy() if q and q.ZeroPointLength() else None))
    names = []
    for k in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(k)
        builtin = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        custom = c.CustomCode()
        names.append(f"CUSTOM:{custom.decode() if custom else '?'}"
                     if builtin == schema.BuiltinOperator.CUSTOM else
                     _OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        act = None
        cls, table = _OPTION_CLASSES.get(op.BuiltinOptionsType()), op.BuiltinOptions()
        if cls is not None and table is not None and hasattr(cls, "FusedActivationFunction"):
            options = cls()
            options.Init(table.Bytes, table.Pos)
            act = _ACT_NAMES.get(options.FusedActivationFunction())
        ops.append(OpInfo(k, names[op.OpcodeIndex()],
                          tuple(int(i) for i in op.InputsAsNumpy()) if op.InputsLength() else (),
                          tuple(int(i) for i in op.OutputsAsNumpy()) if op.OutputsLength()
                          else (), act))
    outputs = tuple(int(i) for i in g.OutputsAsNumpy()) if g.OutputsLength() else ()
    return ops, tensors, outputs
