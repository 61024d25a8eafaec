"""One ``.tflite`` holding several operating points: one subgraph and one signature per point.

Points are edits of one int8 conversion: most have the same tensors and ops and differ only in
some constants and quantization parameters; a point planned for TFLite Micro's real arena may
have another layout (a rewrite of ``aa_tflite.tflite.firmware``: patches, a channel split, batch
1). ``combine`` keeps the first point as it is and appends each further point's subgraph, its
operator codes mapped into the file's; a constant whose bytes equal one already stored points at
that buffer, so the weights are stored once and a point with another layout adds only what
differs. LiteRT and ``tflite-runtime`` run
any point by its signature key (``get_signature_runner(key)``). TFLite Micro runs subgraph 0 only
and allocates every subgraph, so it gets one single-point file per point instead.

No TensorFlow import.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite import flatbuffer
from aa_tflite.types import AAError

__all__ = ["KEY_PATTERN", "combine", "point_key", "signature_keys", "split", "write_shared"]

KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def point_key(budget_kb: float, input_size: int | None = None) -> str:
    """The signature key of a point: readable, stable, and a valid identifier.

    Example:
        >>> point_key(1.8)
        'kib1p8'
        >>> point_key(4, 96)
        'px96_kib4'
    """
    text = f"{float(budget_kb):.4g}".replace(".", "p").replace("+", "")
    key = f"kib{text}"
    return key if input_size is None else f"px{int(input_size)}_{key}"


def signature_keys(tflite: bytes) -> list[str]:
    """The signature keys of a ``.tflite``, in subgraph order."""
    model = flatbuffer.read(tflite)
    defs = sorted(model.signatureDefs or [], key=lambda d: d.subgraphIndex)
    return [_text(d.signatureKey) for d in defs]


def split(tflite: bytes, key: str) -> bytes:
    """Point ``key`` of a multi-point file as a single-subgraph ``.tflite`` (what TFLite Micro,
    Coral and one-model runtimes take): its subgraph, the constants it uses, its signature, and
    its entry of the ``aa_tflite`` metadata as the file's own.

    Example:
        >>> small = split(open("out/digits.tflite", "rb").read(), "kib1p2")  # doctest: +SKIP
    """
    from aa_tflite.tflite.metadata import attach, read_metadata

    model = flatbuffer.read(tflite)
    keys = signature_keys(tflite)
    if key not in keys:
        raise AAError(f"No point {key!r} in this file. Its points: {keys}.")
    doc = read_metadata(tflite)
    sig = next(d for d in model.signatureDefs if _text(d.signatureKey) == key)
    graph = model.subgraphs[sig.subgraphIndex]
    remap: dict[int, int] = {0: 0}
    buffers = [model.buffers[0]]
    for t in graph.tensors:
        if t.buffer not in remap:
            remap[t.buffer] = len(buffers)
            buffers.append(model.buffers[t.buffer])
        t.buffer = remap[t.buffer]
    sig.subgraphIndex = 0
    model.subgraphs, model.buffers, model.signatureDefs = [graph], buffers, [sig]
    model.metadata, model.metadataBuffer = None, None
    if doc:
        points = doc.get("points") or []
        entry = next((p for p in points if p.get("signature") == key), None)
        top = {a: v for a, v in doc.items() if a not in ("points", "schema_version")}
        if entry is not None:
            top.update({a: entry[a] for a in ("plan", "tensor_bits", "budget_bytes", "memory",
                                              "scores", "layout") if a in entry})
        attach(model, {**top, "points": [entry] if entry is not None else []})
    return flatbuffer.write(model)


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")


def _digest(buf: schema.BufferT) -> bytes | None:
    if buf.data is None or len(buf.data) == 0:
        return None
    return hashlib.sha256(np.asarray(buf.data, np.uint8).tobytes()).digest()


def combine(points: Sequence[tuple[str, bytes]], *,
            metadata: Mapping[str, Any] | None = None) -> bytes:
    """One ``.tflite`` with each ``(key, tflite)`` point as its own subgraph and signature.

    Args:
        points: ``(signature key, single-subgraph .tflite)`` pairs, in the order the signatures
            should take; one subgraph each. Each keeps its own ops and tensors (its signature's
            tensor names where it has one, else point 0's, else ``input_k``/``output_k``).

        metadata: The combined file's ``aa_tflite`` metadata. (Writing it afterwards with
            ``write_metadata`` would work too, but repacks the file without the shared tables.)

    Returns:
        The combined file. Subgraph ``k`` is point ``k``; constants with equal bytes share one
        buffer. Metadata of the parts is dropped.

    Raises:
        AAError: No points, a bad or repeated key, or files that are not edits of one conversion.

    Example:
        >>> both = combine([("kib3", small), ("kib6", large)])  # doctest: +SKIP
        >>> signature_keys(both)  # doctest: +SKIP
        ['kib3', 'kib6']
    """
    keys = _check_keys([k for k, _ in points])
    from aa_tflite.tflite.metadata import attach, strip_metadata

    models = [flatbuffer.read(strip_metadata(t)) for _, t in points]
    _check_single(keys, models)
    base = models[0]
    # Each point's input and output names, before the parts' signatures are dropped.
    sigs = [(m.signatureDefs or [None])[0] for m in models]
    base.metadata, base.metadataBuffer, base.signatureDefs = None, None, None
    stored = {d: i for i, b in enumerate(base.buffers) if (d := _digest(b)) is not None}
    for k, m in enumerate(models[1:], start=1):
        graph = m.subgraphs[0]
        for t in graph.tensors:
            t.buffer = _shared_buffer(base, stored, m.buffers[t.buffer])
        codes = [_code_index(base, c) for c in m.operatorCodes]
        for op in graph.operators:
            op.opcodeIndex = codes[op.opcodeIndex]
        graph.name = keys[k]
        base.subgraphs.append(graph)
    base.subgraphs[0].name = keys[0]
    defs = []
    for k, key in enumerate(keys):
        d = schema.SignatureDefT()
        d.signatureKey = key
        d.subgraphIndex = k
        d.inputs, d.outputs = _maps(sigs[k] or sigs[0], base.subgraphs[k])
        defs.append(d)
    base.signatureDefs = defs
    if metadata is not None:
        attach(base, metadata)
    return write_shared(base)


def _check_keys(keys: list) -> list[str]:
    if not keys:
        raise AAError("combine needs at least one (key, tflite) point.")
    bad = [k for k in keys if not isinstance(k, str) or not KEY_PATTERN.match(k)]
    if bad:
        raise AAError(f"Signature keys must start with a letter and hold only letters, digits "
                      f"and '_' (at most 64). Received: {bad}")
    if len(set(keys)) != len(keys):
        raise AAError(f"Signature keys must be distinct. Received: {keys}")
    return keys


def _check_single(keys: Sequence[str], models: Sequence[schema.ModelT]) -> None:
    """Raises unless every model has exactly one subgraph, and takes and gives what point 0
    does: as many inputs and outputs, of the same types, inputs of the same rank and channels
    (their size may differ)."""
    def io(m: schema.ModelT) -> tuple:
        g = m.subgraphs[0]
        shapes = [list(g.tensors[i].shape if g.tensors[i].shape is not None else [])
                  for i in g.inputs]
        ins = [(len(sh), sh[-1:], g.tensors[i].type) for sh, i in zip(shapes, g.inputs)]
        return ins, [g.tensors[i].type for i in g.outputs]

    for key, m in zip(keys, models, strict=True):
        if len(m.subgraphs) != 1:
            raise AAError(f"Point {key!r} has {len(m.subgraphs)} subgraphs; each point must be "
                          "a single-subgraph file.")
        if io(m) != io(models[0]):
            raise AAError(f"Point {key!r} does not take and give what point {keys[0]!r} does "
                          "(inputs: rank, channels and type; outputs: count and type); the "
                          "points of one file must come from one model.")


def _code_index(base: schema.ModelT, code: schema.OperatorCodeT) -> int:
    """The index in ``base``'s operator codes of one equal to ``code``, appended if new."""
    def key(c):
        return (c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version)

    for i, c in enumerate(base.operatorCodes):
        if key(c) == key(code):
            return i
    base.operatorCodes.append(code)
    return len(base.operatorCodes) - 1


def _shared_buffer(base: schema.ModelT, stored: dict[bytes, int], buf: schema.BufferT) -> int:
    """The index in ``base`` of a buffer with ``buf``'s bytes, appended if new; 0 (the schema's
    empty sentinel) for an arena tensor."""
    d = _digest(buf)
    if d is None:
        return 0
    if d not in stored:
        base.buffers.append(buf)
        stored[d] = len(base.buffers) - 1
    return stored[d]


class _SharingBuilder(flatbuffers.Builder):
    """A builder that writes equal strings and equal numeric vectors once (tensor names and
    per-channel quantization arrays repeat across the points' subgraphs)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._strings: dict[bytes, int] = {}
        self._vectors: dict[tuple, int] = {}

    def CreateString(self, s, encoding="utf-8", errors="strict"):  # noqa: N802 (flatbuffers API)
        key = s.encode(encoding, errors) if isinstance(s, str) else bytes(s)
        if key not in self._strings:
            self._strings[key] = super().CreateString(s, encoding, errors)
        return self._strings[key]

    def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers API)
        key = (x.dtype.str, x.shape, x.tobytes())
        if key not in self._vectors:
            self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]


def write_shared(model: schema.ModelT) -> bytes:
    """Packs ``model`` writing equal tensor, quantization and operator tables once.

    The points' subgraphs repeat most of these tables byte for byte (only the edited tensors'
    quantization differs), and a flatbuffer may reference one table from many places. Each
    object's ``Pack`` is wrapped, on the instance only, to look its serialized bytes up in a
    cache that lives for this one write.
    """
    builder = _SharingBuilder(1024)
    cache: dict[bytes, int] = {}

    def shared(obj) -> None:
        original = type(obj).Pack

        def pack(b):
            if b is not builder:  # the scratch pack below
                return original(obj, b)
            scratch = flatbuffers.Builder(256)
            scratch.Finish(original(obj, scratch))
            key = type(obj).__name__.encode() + bytes(scratch.Output())
            if key not in cache:
                cache[key] = original(obj, builder)
            return cache[key]

        obj.Pack = pack

    for graph in model.subgraphs:
        for t in graph.tensors:
            if t.quantization is not None:
                shared(t.quantization)
            shared(t)
        for op in graph.operators:
            shared(op)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _maps(sig, graph) -> tuple[list, list]:
    """Signature tensor maps for one subgraph: the converter's names where it gave them, else
    ``input_k`` / ``output_k``."""
    def one(indices, named, stem):
        out = []
        by_tensor = {int(m.tensorIndex): _text(m.name) for m in (named or [])}
        for k, t in enumerate(int(i) for i in indices):
            m = schema.TensorMapT()
            m.name = by_tensor.get(t, f"{stem}_{k}")
            m.tensorIndex = t
            out.append(m)
        return out

    return (one(graph.inputs, sig.inputs if sig else None, "input"),
            one(graph.outputs, sig.outputs if sig else None, "output"))
