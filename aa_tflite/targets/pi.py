"""Raspberry Pi and other Linux hosts with ``tflite-runtime``: the files it runs. No TensorFlow
import.

A multi-point file runs on ``tflite-runtime`` as it is, through its signatures: that is how
``aa_tflite.runtime.OperatingPoints`` (numpy and an interpreter, nothing else) switches points.
An app that calls ``Interpreter(model_path=...)`` and ``invoke`` without signatures runs
subgraph 0 only, so the export also writes each point as a file of its own.
"""

from __future__ import annotations

import os

from aa_tflite.targets import TargetExport
from aa_tflite.targets.common import ident, point_files, write_files

__all__ = ["export", "export_pi"]


def export_pi(tflite: bytes, out_dir: str | os.PathLike, *, name: str = "model") -> TargetExport:
    """Writes ``NAME_KEY.tflite`` per point (one subgraph: any ``tflite-runtime`` app runs it),
    and, for several points, ``NAME.tflite``: the multi-point file unchanged, for
    ``OperatingPoints``. A single-point file is written once, as ``NAME.tflite``.

    Example:
        >>> export_pi(open("out/digits.tflite", "rb").read(), "pi", name="digits")  # doctest: +SKIP

    Returns:
        An ``TargetExport``: per point ``file`` (its single-subgraph ``.tflite``); ``info`` has
        ``combined`` (the multi-point file's path, or None for a single point).
    """
    stem, points = ident(name), point_files(tflite)
    if len(points) == 1:
        written = write_files(out_dir, {f"{stem}.tflite": next(iter(points.values()))})
        key = next(iter(points))
        return TargetExport("pi", written, {key: {"file": written[0]}}, {"combined": None}, (
            f"point {key}: {os.path.basename(written[0])}, for tflite-runtime's Interpreter.",))
    files = {f"{stem}_{ident(k)}.tflite": b for k, b in points.items()}
    written = write_files(out_dir, {**files, f"{stem}.tflite": bytes(tflite)})
    lines = [f"point {k}: {name}, one subgraph, for tflite-runtime's Interpreter."
             for k, name in zip(points, files, strict=True)]
    lines.append(f"All {len(points)} points: {stem}.tflite, switched at run time by "
                 "aa_tflite.runtime.OperatingPoints (numpy and tflite-runtime, no TensorFlow).")
    return TargetExport("pi", written, {k: {"file": path} for k, path in zip(points, written)},
                    {"combined": written[-1]}, tuple(lines))


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None) -> TargetExport:
    """The ``Target`` form of ``export_pi`` (``source`` and ``samples`` are not used)."""
    return export_pi(tflite, out, name=name)
