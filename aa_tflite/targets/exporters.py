"""Exports for the targets a ``.tflite`` ships to. No TensorFlow import.

``export_tflm`` writes what a TensorFlow Lite Micro firmware build needs: one single-subgraph
``.tflite`` per operating point, a C++ source with each model as a byte array, and a header with
the arena size to reserve and the op resolver entries the models need.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from aa_tflite.files import atomic_write_all
from aa_tflite.tflite import flatbuffer, memory, multipoint
from aa_tflite.types import AAError

__all__ = ["TFLM_MARGIN_FRACTION", "TFLM_MARGIN_MIN", "AndroidExport", "TflmExport",
           "EDGETPU_OPS", "EdgeTpuCheck", "check_edgetpu", "export_android", "export_edgetpu",
           "export_tflm", "export_web", "resolver_entries", "web_model"]

# The arena is measured by TFLM's host build (64-bit pointers), which needs more persistent
# memory than a 32-bit microcontroller; the margin covers allocator differences between builds.
TFLM_MARGIN_FRACTION = 0.05
TFLM_MARGIN_MIN = 1024


@dataclasses.dataclass(frozen=True)
class TflmExport:
    """What ``export_tflm`` wrote.

    Attributes:
        files: Paths written.
        arena_size: The ``...ArenaSize`` constant: the largest measured arena plus the margin.
        measured: Point key -> its measured TFLM arena (bytes).
        ops: The op resolver methods the models need (``AddConv2D`` ...), sorted.
        models: Point key -> the C array's name.
    """

    files: tuple[str, ...]
    arena_size: int
    measured: dict[str, int]
    ops: tuple[str, ...]
    models: dict[str, str]


def resolver_entries(tflite: bytes) -> list[str]:
    """The ``MicroMutableOpResolver`` methods a model's ops need, sorted.

    Example:
        >>> resolver_entries(tflite)  # doctest: +SKIP
        ['AddConv2D', 'AddFullyConnected', 'AddMaxPool2D', 'AddReshape']
    """
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    names = set()
    for op in ops:
        if op.name.startswith("CUSTOM:") or op.name.startswith("BUILTIN_"):
            raise AAError(f"Op {op.name} has no TFLite Micro resolver entry; TFLM cannot run "
                          "this model as it is.")
        names.add("Add" + "".join(part.upper() if part[:1].isdigit() else part.capitalize()
                                  for part in op.name.split("_")))  # CONV_2D -> AddConv2D
    return sorted(names)


def _point_files(tflite: bytes) -> dict[str, bytes]:
    """Point key -> its single-subgraph file: each signature of a multi-point file split out,
    or the file itself (keyed by its one signature, else ``"model"``)."""
    keys = multipoint.signature_keys(tflite)
    if len(keys) > 1:
        return {k: multipoint.split(tflite, k) for k in keys}
    return {keys[0] if keys else "model": bytes(tflite)}


def _static_shapes(graph) -> None:
    """Every tensor's shape signature set to its static shape (batch 1 where it was -1)."""
    for t in graph.tensors:
        if t.shape is not None and len(t.shape):
            t.shapeSignature = np.array([max(int(d), 1) for d in t.shape], np.int32)


def _ident(text: str) -> str:
    out = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return out if out and not out[0].isdigit() else f"m_{out}"


def _camel(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9A-Za-z]+", text) if p)


def _c_array(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    body = ",\n  ".join(rows)
    return (f"alignas(16) const unsigned char {name}[] = {{\n  {body}\n}};\n"
            f"const unsigned int {name}_len = {len(data)};\n")


def export_tflm(tflite: bytes, out_dir: str | os.PathLike, *, name: str = "model",
                source: str = "") -> TflmExport:
    """Writes a TFLite Micro build's inputs for every operating point of ``tflite``.

    For each point (each signature of a multi-point file, or the file itself): ``NAME_KEY.tflite``
    (single subgraph: TFLM runs subgraph 0 only and allocates every subgraph). Then
    ``NAME_model_data.cc`` with each model as an aligned byte array, and ``NAME_model_data.h``
    declaring them with ``kNameArenaSize`` (the largest arena TFLM measured for the points, plus
    ``max(5%, 1 KiB)``, rounded up to 16 bytes) and ``RegisterNameOps(resolver)``, which adds
    exactly the kernels the models use, so the firmware links only those.

    Args:
        tflite: A ``.tflite`` written by ``convert`` (one point or several).
        out_dir: Folder to write into (created if needed). Files are written atomically.
        name: Stem for the files and the C identifiers.
        source: Where the model came from, for the generated files' header comment.

    Returns:
        A ``TflmExport``.

    Raises:
        AAError: TFLM cannot allocate a point, or an op has no TFLM kernel.

    Example:
        >>> export_tflm(open("out/digits.tflite", "rb").read(), "firmware/model",
        ...             name="digits")  # doctest: +SKIP
    """
    stem = _ident(name)
    camel = _camel(name) or "Model"
    points = _point_files(tflite)
    measured = {k: memory.tflm_arena(b).total for k, b in points.items()}
    worst = max(measured.values())
    margin = max(TFLM_MARGIN_MIN, math.ceil(worst * TFLM_MARGIN_FRACTION))
    arena = 16 * math.ceil((worst + margin) / 16)
    ops = sorted({op for b in points.values() for op in resolver_entries(b)})
    arrays = {k: f"g_{stem}_{_ident(k)}" for k in points}
    files: dict[str, bytes | str] = {}
    for k, b in points.items():
        files[f"{stem}_{_ident(k)}.tflite" if len(points) > 1 else f"{stem}.tflite"] = b
    note = f"// Generated by aa_tflite from {source or 'a .tflite'}. Do not edit.\n"
    guard = f"{stem.upper()}_MODEL_DATA_H_"
    header = [note, f"#ifndef {guard}", f"#define {guard}", "", "#include <cstddef>", "",
              "// The TFLite Micro arena to reserve for any model below: the largest arena TFLM",
              f"// measured for them ({worst} B, host build) plus a margin of {margin} B, "
              "rounded up to 16.",
              f"constexpr size_t k{camel}ArenaSize = {arena};", ""]
    for k in points:
        header += [f"// Operating point {k}: TFLM arena {measured[k]} B.",
                   f"extern const unsigned char {arrays[k]}[];",
                   f"extern const unsigned int {arrays[k]}_len;"]
    header += ["", f"// The kernels these models use: pass a "
               f"tflite::MicroMutableOpResolver<k{camel}OpCount>.",
               f"constexpr int k{camel}OpCount = {len(ops)};",
               "template <typename Resolver>",
               f"bool Register{camel}Ops(Resolver& resolver) {{",
               "  // Each Add*() returns kTfLiteOk (0) on success.",
               "  return " + "\n      && ".join(f"static_cast<int>(resolver.{op}()) == 0"
                                                for op in ops) + ";",
               "}", "", f"#endif  // {guard}", ""]
    files[f"{stem}_model_data.h"] = "\n".join(header)
    files[f"{stem}_model_data.cc"] = (note + f'#include "{stem}_model_data.h"\n\n'
                                      + "\n".join(_c_array(arrays[k], b)
                                                  for k, b in points.items()))
    out = os.fspath(out_dir)
    written = atomic_write_all({os.path.join(out, f): data for f, data in files.items()})
    return TflmExport(tuple(written), arena, measured, tuple(ops), arrays)


@dataclasses.dataclass(frozen=True)
class AndroidExport:
    """What ``export_android`` wrote: the paths, the point keys and the sample count."""

    files: tuple[str, ...]
    points: tuple[str, ...]
    samples: int


def export_android(tflite: bytes, out_dir: str | os.PathLike, *, samples_x, samples_y=None,
                   labels: list[str] | None = None) -> AndroidExport:
    """Writes the assets the Android demo (``android_demo/``) loads.

    Files: ``model.tflite`` (the multi-point file, unchanged: the app switches its signatures),
    ``metadata.json`` (its ``aa_tflite`` metadata, for reading without the app), ``labels.txt``
    (one class name per line), ``samples.bin`` (the sample inputs, float32 little-endian,
    ``N x H x W x C``) and ``samples.json`` (their shape and labels).

    Args:
        tflite: A ``.tflite`` written by ``convert``.
        out_dir: The app's assets folder, e.g. ``android_demo/app/src/main/assets``.
        samples_x: Sample inputs ``(N, *input_shape)`` in the model's float domain.
        samples_y: Their labels, or None.
        labels: Class names; defaults to ``"0"``, ``"1"``, ... for the model's outputs.

    Example:
        >>> export_android(open("out/digits.tflite", "rb").read(), "android_demo/app/src/main/"
        ...                "assets", samples_x=x_val[:16], samples_y=y_val[:16])  # doctest: +SKIP
    """
    import json

    from aa_tflite.tflite.metadata import read_metadata

    model = flatbuffer.read(tflite)
    graph = model.subgraphs[0]
    ins = graph.inputs if graph.inputs is not None else []
    outs = graph.outputs if graph.outputs is not None else []
    if len(ins) != 1 or len(outs) != 1:
        raise AAError("The Android demo runs models with one input and one output.")
    in_shape = tuple(int(d) for d in graph.tensors[int(ins[0])].shape)
    classes = int(np.prod([int(d) for d in graph.tensors[int(outs[0])].shape][1:]))
    x = np.asarray(samples_x, np.float32)
    if x.ndim < 2 or x.shape[1:] != in_shape[1:]:
        raise AAError(f"Samples have shape {x.shape}; the model takes (N, "
                      f"{', '.join(map(str, in_shape[1:]))}). Pass samples of that shape.")
    labels = list(labels) if labels is not None else [str(k) for k in range(classes)]
    if len(labels) != classes:
        raise AAError(f"{len(labels)} labels for a model with {classes} outputs.")
    y = None if samples_y is None else [int(v) for v in np.asarray(samples_y).reshape(-1)]
    keys = multipoint.signature_keys(tflite) or ["serving_default"]
    files = {"model.tflite": bytes(tflite),
             "metadata.json": json.dumps(read_metadata(tflite), indent=2, sort_keys=True),
             "labels.txt": "\n".join(labels) + "\n",
             "samples.bin": x.astype("<f4").tobytes(),
             "samples.json": json.dumps({"shape": list(x.shape), "dtype": "float32",
                                         "byte_order": "little", "labels": y}, indent=2)}
    out = os.fspath(out_dir)
    written = atomic_write_all({os.path.join(out, f): data for f, data in files.items()})
    return AndroidExport(tuple(written), tuple(keys), len(x))


def web_model(tflite: bytes) -> bytes:
    """The model as LiteRT.js takes it: float32 input and output, and a static batch of 1.

    LiteRT.js has no int8 tensors on its JS side and rejects a dynamic batch dimension. Each
    subgraph whose input is int8 gets a ``QUANTIZE`` op in front (float32 -> its int8 input,
    same scale and zero point) and a ``DEQUANTIZE`` op behind its int8 output, as the TFLite
    converter writes for ``io_dtype="float32"``; every tensor's shape signature becomes its
    static shape. The int8 ops inside are untouched, so the points compute the same values.

    Example:
        >>> web = web_model(open("out/digits.tflite", "rb").read())  # doctest: +SKIP
    """
    from ai_edge_litert import schema_py_generated as schema

    model = flatbuffer.read(tflite)
    ops = schema.BuiltinOperator

    def code(builtin: int, version: int) -> int:
        for k, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
                return k
        c = schema.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = builtin
        c.version = version
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def float_twin(graph, index: int, suffix: str) -> int:
        src = graph.tensors[index]
        t = schema.TensorT()
        t.shape = np.array([int(d) for d in src.shape], np.int32)
        t.shapeSignature = t.shape.copy()
        t.type = schema.TensorType.FLOAT32
        t.buffer = 0
        t.name = (src.name or b"io") + suffix.encode()
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    for graph in model.subgraphs:
        _static_shapes(graph)
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise AAError("The web export takes models with one input and one output.")
        i, o = int(graph.inputs[0]), int(graph.outputs[0])
        remap = {}
        if graph.tensors[i].type == schema.TensorType.INT8:
            f_in = float_twin(graph, i, "_float")
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = code(ops.QUANTIZE, 1), [f_in], [i]
            graph.operators.insert(0, op)
            graph.inputs = np.array([f_in], np.int32)
            remap[i] = f_in
        if graph.tensors[o].type == schema.TensorType.INT8:
            f_out = float_twin(graph, o, "_float")
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = code(ops.DEQUANTIZE, 2), [o], [f_out]
            graph.operators.append(op)
            graph.outputs = np.array([f_out], np.int32)
            remap[o] = f_out
        for sig in model.signatureDefs or []:
            if model.subgraphs[sig.subgraphIndex] is graph:
                for m in [*(sig.inputs or []), *(sig.outputs or [])]:
                    m.tensorIndex = remap.get(int(m.tensorIndex), int(m.tensorIndex))
    return multipoint._write_shared(model)


def export_web(tflite: bytes, out_dir: str | os.PathLike, *, samples_x, samples_y=None,
               labels: list[str] | None = None) -> AndroidExport:
    """Writes the browser demo's assets: ``model.tflite`` made LiteRT.js-ready (``web_model``)
    and the same metadata, labels and samples as ``export_android``.

    Example:
        >>> export_web(open("out/digits.tflite", "rb").read(), "web_demo/assets",
        ...            samples_x=x_val[:16], samples_y=y_val[:16])  # doctest: +SKIP
    """
    from aa_tflite.tflite.metadata import read_metadata

    web = web_model(tflite)
    if read_metadata(web) != read_metadata(tflite):
        raise AAError("The web model lost its metadata; this is a bug.")
    return export_android(web, out_dir, samples_x=samples_x, samples_y=samples_y, labels=labels)


# The Edge TPU's supported operations and their documented limits, transcribed from
# coral.ai/docs/edgetpu/models-intro ("Supported operations"); not verified against
# edgetpu_compiler here (it is not installable on this machine).
EDGETPU_OPS = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation", "CONCATENATION": "no fused activation",
    "CONV_2D": "", "DEPTHWISE_CONV_2D": "", "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "output one-dimensional (per sample)", "L2_NORMALIZATION": "",
    "LOGISTIC": "", "MAXIMUM": "", "MAX_POOL_2D": "no fused activation",
    "MEAN": "reduction along x and/or y only", "MINIMUM": "", "MUL": "", "PACK": "",
    "PAD": "padding along x and/or y only", "PRELU": "", "QUANTIZE": "", "REDUCE_MAX": "",
    "REDUCE_MIN": "", "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "",
    "RESIZE_BILINEAR": "", "RESIZE_NEAREST_NEIGHBOR": "", "RSQRT": "", "SLICE": "",
    "SOFTMAX": "", "SPACE_TO_DEPTH": "", "SPLIT": "", "SQUEEZE": "", "STRIDED_SLICE": "",
    "SUB": "", "SUM": "", "SQUARED_DIFFERENCE": "", "TANH": "", "TRANSPOSE": "",
    "TRANSPOSE_CONV": "", "HARD_SWISH": "",
}
_NO_FUSED = {"AVERAGE_POOL_2D", "CONCATENATION", "MAX_POOL_2D"}


@dataclasses.dataclass(frozen=True)
class EdgeTpuCheck:
    """The Edge TPU check of one single-subgraph model.

    Attributes:
        ops: ``(index, op name, maps to the Edge TPU, reason if not)`` in execution order.
        first_fallback: Index of the first op the Edge TPU cannot run (the compiler maps the ops
            before it and leaves this one and everything after it to the CPU), or None.
        problems: Model-wide problems (non-8-bit tensors, dynamic shapes, tensor ranks).
    """

    ops: tuple[tuple[int, str, bool, str], ...]
    first_fallback: int | None
    problems: tuple[str, ...]

    def summary(self) -> str:
        mapped = sum(1 for _, _, ok, _ in self.ops[:self.first_fallback]
                     if ok) if self.first_fallback is not None else len(self.ops)
        lines = [f"{mapped} of {len(self.ops)} ops would map to the Edge TPU."]
        if self.first_fallback is not None:
            k, name, _, why = self.ops[self.first_fallback]
            lines.append(f"First CPU fallback: op {k} ({name}): {why}. It and every op after it "
                         "run on the CPU.")
        lines += [f"Problem: {p}" for p in self.problems]
        return "\n".join(lines)


def check_edgetpu(tflite: bytes) -> EdgeTpuCheck:
    """Checks a single-subgraph model's ops and tensors against the Edge TPU's documented
    constraints: 8-bit tensors (int32 biases), static shapes, at most 3 dimensions above 1, and
    the supported ops with their limits (``EDGETPU_OPS``).

    Example:
        >>> tflite = open("digits.kib1p2.tflite", "rb").read()  # doctest: +SKIP
        >>> print(check_edgetpu(tflite).summary())  # doctest: +SKIP
    """

    model = flatbuffer.read(tflite)
    if len(model.subgraphs) != 1:
        raise AAError(f"The Edge TPU compiler takes one subgraph; this file has "
                      f"{len(model.subgraphs)}. Export per point: --target edgetpu does.")
    ops, tensors = flatbuffer.describe(model)
    graph = model.subgraphs[0]
    problems = []
    for t, raw in zip(tensors, graph.tensors, strict=True):
        sig = raw.shapeSignature
        if sig is not None and any(int(d) < 0 for d in sig):
            problems.append(f"tensor {t.index} `{t.name[-40:]}` has a dynamic shape "
                            f"{[int(d) for d in sig]} (the export fixes the batch at 1)")
            break
    out = []
    for op in ops:
        why = ""
        if op.name not in EDGETPU_OPS:
            why = "not a supported operation"
        elif op.name in _NO_FUSED and op.fused_activation not in (None, "NONE"):
            why = f"fused {op.fused_activation}, which it does not take"
        for t in (*op.inputs, *op.outputs):
            if t < 0 or why:
                continue
            info = tensors[t]
            if info.dtype not in ("INT8", "UINT8") and not (info.dtype == "INT32"
                                                              and info.is_constant):
                if not (op.name == "QUANTIZE" and t in op.inputs):
                    why = f"tensor {t} is {info.dtype}, not 8-bit"
            elif not info.is_constant and len(info.shape) > 3 and \
                    any(d > 1 for d in info.shape[:-3]):  # activations; kernels are 4-D
                why = f"tensor {t} {list(info.shape)} has more than 3 dimensions above 1"
        if not why and op.name == "MEAN":
            axes = graph.tensors[op.inputs[1]]
            data = model.buffers[axes.buffer].data
            if data is not None and any(int(a) not in (1, 2) for a in
                                        np.frombuffer(bytes(data), np.int32)):
                why = "reduces along an axis other than x/y"
        out.append((op.index, op.name, not why, why))
    first = next((k for k, (_, _, ok, _) in enumerate(out) if not ok), None)
    return EdgeTpuCheck(tuple(out), first, tuple(problems))


def export_edgetpu(tflite: bytes, out_dir: str | os.PathLike, *, name: str = "model"
                   ) -> tuple[list[str], dict[str, EdgeTpuCheck], dict[str, str]]:
    """One static-shape, single-subgraph file per point, each checked (``check_edgetpu``); if
    ``edgetpu_compiler`` is on the PATH it compiles each and its log is returned.

    Returns:
        ``(paths written, point -> check, point -> compiler log or "")``.
    """
    import shutil
    import subprocess


    points = _point_files(tflite)
    files, checks, logs = {}, {}, {}
    for k, b in points.items():
        model = flatbuffer.read(b)
        _static_shapes(model.subgraphs[0])
        fixed = flatbuffer.write(model)
        checks[k] = check_edgetpu(fixed)
        files[f"{_ident(name)}_{_ident(k)}.tflite"] = fixed
    out = os.fspath(out_dir)
    written = atomic_write_all({os.path.join(out, f): data for f, data in files.items()})
    compiler = shutil.which("edgetpu_compiler")
    for (k, _), path in zip(points.items(), written, strict=True):
        logs[k] = ""
        if compiler:
            done = subprocess.run([compiler, "-s", "-o", out, path], capture_output=True,
                                  text=True, timeout=600)
            logs[k] = done.stdout + done.stderr
    return written, checks, logs
