"""The Coral Edge TPU: one static-shape, single-subgraph file per point, checked against the Edge
TPU's documented constraints, and compiled when ``edgetpu_compiler`` is installed. No TensorFlow
import."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import numpy as np

from aa_tflite.targets import TargetExport
from aa_tflite.targets.common import ident, point_files, write_files
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.static_batch import static_batch
from aa_tflite.types import AAError

__all__ = ["EDGETPU_OPS", "EdgeTpuCheck", "check_edgetpu", "export", "export_edgetpu"]

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
        """How many ops map, the first CPU fallback and the problems, one line each."""
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
                   ) -> TargetExport:
    """One static-shape, single-subgraph file per point (``tflite.static_batch``: batch 1, the
    shape ops of ``Flatten`` folded into constants), each checked (``check_edgetpu``); if
    ``edgetpu_compiler`` is on the PATH it compiles each.

    Example:
        >>> done = export_edgetpu(open("out/digits.tflite", "rb").read(), "coral")  # doctest: +SKIP
        >>> print(done.points["kib1p2"]["check"].summary())  # doctest: +SKIP

    Returns:
        An ``TargetExport``: per point ``file`` (its ``.tflite``), ``check`` (an ``EdgeTpuCheck``)
        and ``compiler_log`` (the compiler's output, ``""`` when it is not installed); ``info``
        has ``compiler`` (its path, or None).
    """
    points, files, checks = point_files(tflite), {}, {}
    for k, b in points.items():
        fixed = static_batch(b)  # batch 1, shape ops folded: the TPU needs static shapes
        checks[k] = check_edgetpu(fixed)
        files[f"{ident(name)}_{ident(k)}.tflite"] = fixed
    written = write_files(out_dir, files)
    compiler = shutil.which("edgetpu_compiler")
    logs = {k: "" for k in points}
    for k, path in zip(points, written, strict=True):
        if compiler:
            done = subprocess.run([compiler, "-s", "-o", os.fspath(out_dir), path],
                                  capture_output=True, text=True, timeout=600)
            logs[k] = done.stdout + done.stderr
    lines = []
    for k, check in checks.items():
        said = logs[k].strip().splitlines()
        lines += [f"point {k}:", *("  " + line for line in check.summary().splitlines()),
                  "  edgetpu_compiler:" + ("" if said else " not installed here; run it on an "
                                           "x86-64 Debian host with Coral's apt repository"),
                  *("    " + line for line in said)]
    lines.append("Unverified without a device: whether the Edge TPU reproduces the fused clamp "
                 "and int8 saturation the low-bit points rely on, and the accuracy per point.")
    return TargetExport("edgetpu", written, {
        k: {"file": path, "check": checks[k], "compiler_log": logs[k]}
        for k, path in zip(points, written, strict=True)}, {"compiler": compiler}, tuple(lines))


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None) -> TargetExport:
    """The ``Target`` form of ``export_edgetpu`` (``source`` and ``samples`` are not used)."""
    return export_edgetpu(tflite, out, name=name)
