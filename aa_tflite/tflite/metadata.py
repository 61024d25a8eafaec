"""The plan travels with the file: TFLite metadata named ``aa_tflite``. No TensorFlow import.

``convert`` writes the plan and its measured figures into the ``.tflite`` it returns, as a JSON
document in one flatbuffer buffer referenced by a ``Metadata`` entry named ``aa_tflite``. Runtimes
ignore metadata, so the file runs unchanged; the TFLM arena is unchanged too (metadata is not a
tensor). Every command (``aa-tflite inspect``, the run-time API, the apps) reads the figures from
here, so they all print the same numbers for the same file.

A file without the metadata (converted elsewhere, or stripped) still gets an honest packed figure:
``stored_bits`` derives each activation tensor's level count from its producer's fused clamp and
its quantization parameters, as the kernels would apply them.

Example:
    >>> tagged = write_metadata(tflite, {"plan": {}})  # doctest: +SKIP
    >>> read_metadata(tagged)["plan"]  # doctest: +SKIP
    {}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from aa_tflite.precision import bits_for_levels
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.ops import ACTIVATION_RANGE, SAME_PARAMS
from aa_tflite.types import AAError

__all__ = ["METADATA_NAME", "METADATA_SCHEMA_VERSION", "attach", "read_metadata", "stored_bits",
           "strip_metadata", "write_metadata"]

METADATA_NAME = "aa_tflite"
METADATA_SCHEMA_VERSION = 1


def _name(entry) -> str:
    n = entry.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")


def write_metadata(tflite: bytes, payload: Mapping[str, Any]) -> bytes:
    """Returns ``tflite`` with ``payload`` stored as its ``aa_tflite`` metadata (replacing any).

    The JSON is written with sorted keys, so the same payload gives the same bytes.

    Example:
        >>> tagged = write_metadata(tflite, {"tensor_bits": {"14": 4}})  # doctest: +SKIP
    """
    model = flatbuffer.read(tflite)
    attach(model, payload)
    return flatbuffer.write(model)


def attach(model: schema.ModelT, payload: Mapping[str, Any]) -> None:
    """Stores ``payload`` as the ``aa_tflite`` metadata of an unpacked model (replacing any);
    ``write_metadata`` for a model already in the schema's object form."""
    doc = {"schema_version": METADATA_SCHEMA_VERSION, **payload}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    buf = schema.BufferT()
    buf.data = np.frombuffer(data, np.uint8).copy()
    entries = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME]
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]


def strip_metadata(tflite: bytes) -> bytes:
    """Returns ``tflite`` without its ``aa_tflite`` metadata. Its buffer is removed when it is the
    last one (as ``write_metadata`` leaves it), else emptied."""
    model = flatbuffer.read(tflite)
    keep = []
    drop = []
    for m in model.metadata or []:
        (drop if _name(m) == METADATA_NAME else keep).append(m)
    model.metadata = keep or None
    for m in sorted(drop, key=lambda m: -m.buffer):
        model.buffers[m.buffer].data = None
        if m.buffer == len(model.buffers) - 1:
            model.buffers.pop()
    return flatbuffer.write(model)


def read_metadata(tflite: bytes) -> dict[str, Any]:
    """The ``aa_tflite`` metadata of a ``.tflite``, or ``{}`` if it has none.

    Args:
        tflite: The model's bytes.

    Returns:
        The document ``convert`` wrote: ``schema_version``, ``plan``, ``tensor_bits`` (tensor
        index, as a string, -> bits), ``memory`` (the report's figures), ``scores`` and more.

    Raises:
        AAError: The file is not a ``.tflite``, or its metadata is damaged or too new.

    Example:
        >>> import aa_tflite
        >>> meta = aa_tflite.read_metadata(open("out/digits.tflite", "rb").read())  # doctest: +SKIP
        >>> meta["memory"]["packed_peak"]  # doctest: +SKIP
        1536
    """
    model = flatbuffer.read(tflite)
    for m in model.metadata or []:
        if _name(m) != METADATA_NAME:
            continue
        if not 0 <= m.buffer < len(model.buffers) or model.buffers[m.buffer].data is None:
            raise AAError("The file's aa_tflite metadata points at an empty or missing buffer; "
                          "the file is damaged. Convert the model again.")
        raw = np.asarray(model.buffers[m.buffer].data, np.uint8).tobytes()
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AAError(f"The file's aa_tflite metadata is not valid JSON ({e}); the file is "
                          "damaged. Convert the model again.") from e
        if not isinstance(doc, dict):
            raise AAError("The file's aa_tflite metadata is not a JSON object; the file is "
                          "damaged. Convert the model again.")
        if int(doc.get("schema_version", 1)) > METADATA_SCHEMA_VERSION:
            raise AAError(f"This file's aa_tflite metadata has schema_version "
                          f"{doc['schema_version']}, newer than this aa_tflite understands "
                          f"({METADATA_SCHEMA_VERSION}). Upgrade aa-tflite.")
        return doc
    return {}


def _clamp_levels(scale: float, zero_point: int, lo: float | None, hi: float | None) -> int:
    """Int8 levels a tensor with these parameters can hold under a real-valued clamp [lo, hi],
    as the kernels compute it (``zero_point + round(bound / scale)``, within -128..127)."""
    qmin, qmax = -128, 127
    if lo is not None:
        qmin = max(qmin, zero_point + int(round(lo / scale)))
    if hi is not None:
        qmax = min(qmax, zero_point + int(round(hi / scale)))
    return max(qmax - qmin + 1, 1)


def stored_bits(tflite: bytes) -> dict[int, int]:
    """Bits per activation tensor that holds fewer than 256 levels, by tensor index.

    From the ``aa_tflite`` metadata when the file has it (the plan's own figures). Otherwise
    derived from the file alone: each int8 tensor's levels come from its producer's clamp (a
    fused or standalone ``RELU``/``RELU6``/``RELU_N1_TO_1`` at its scale and zero point, and int8
    saturation at -128 and 127); ops that copy values (pooling, reshape, ...) pass their input's
    levels on. The bits are the fewest that hold those levels.

    Example:
        >>> stored_bits(open("out/digits.tflite", "rb").read())  # doctest: +SKIP
        {14: 4, 16: 4}
    """
    meta = read_metadata(tflite)
    if "tensor_bits" in meta:
        try:
            return {int(t): int(b) for t, b in meta["tensor_bits"].items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise AAError("The file's aa_tflite metadata has a damaged tensor_bits table; "
                          "convert the model again.") from e
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    levels: dict[int, int] = {}
    for op in ops:  # execution order: a pass-through op's input is settled before it
        for t in op.outputs:
            info = tensors[t]
            if info.is_constant or info.dtype != "INT8" or not info.scale:
                continue
            scale, zp = float(info.scale[0]), int(info.zero_point[0])
            if op.name in SAME_PARAMS and op.inputs and op.inputs[0] in levels:
                n = levels[op.inputs[0]]
            elif op.name in ACTIVATION_RANGE:  # a standalone RELU, RELU6, ...
                n = _clamp_levels(scale, zp, *ACTIVATION_RANGE[op.name])
            else:
                n = _clamp_levels(scale, zp, *ACTIVATION_RANGE.get(op.fused_activation or "NONE",
                                                                   (None, None)))
            levels[t] = n
    return {t: bits_for_levels(n) for t, n in sorted(levels.items()) if n < 256
            and math.isfinite(n)}
