"""The Android demo app (``android_demo/``): the assets it loads. No TensorFlow import (the
default sample digits load TensorFlow, lazily, only when no samples are given)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from aa_tflite.targets import TargetExport
from aa_tflite.targets.common import write_files
from aa_tflite.tflite import flatbuffer, multipoint
from aa_tflite.tflite.metadata import read_metadata
from aa_tflite.types import AAError

__all__ = ["default_samples", "export", "export_android", "with_samples", "write_assets"]


def _io_shapes(tflite: bytes, *, outputs: bool = True) -> tuple[tuple[int, ...], int]:
    """``(input shape, number of outputs per sample)`` of a one-input, one-output model."""
    graph = flatbuffer.read(tflite).subgraphs[0]
    ins = graph.inputs if graph.inputs is not None else []
    outs = graph.outputs if graph.outputs is not None else []
    if len(ins) != 1 or (outputs and len(outs) != 1):
        raise AAError("The Android and web demos run models with one input and one output.")
    in_shape = tuple(int(d) for d in graph.tensors[int(ins[0])].shape)
    return in_shape, int(np.prod([int(d) for d in graph.tensors[int(outs[0])].shape][1:]))


def write_assets(tflite: bytes, out_dir: str | os.PathLike, *, samples_x, samples_y=None,
                 labels: list[str] | None = None, target: str = "android") -> TargetExport:
    """Writes a demo app's assets (``export_android`` lists them) for ``target``; the web
    export calls it with its own model."""
    in_shape, classes = _io_shapes(tflite)
    x = np.asarray(samples_x, np.float32)
    if x.ndim < 2 or x.shape[1:] != in_shape[1:]:
        raise AAError(f"Samples have shape {x.shape}; the model takes (N, "
                      f"{', '.join(map(str, in_shape[1:]))}). Pass samples of that shape.")
    labels = list(labels) if labels is not None else [str(k) for k in range(classes)]
    if len(labels) != classes:
        raise AAError(f"{len(labels)} labels for a model with {classes} outputs.")
    y = None if samples_y is None else [int(v) for v in np.asarray(samples_y).reshape(-1)]
    keys = multipoint.signature_keys(tflite) or ["serving_default"]
    written = write_files(out_dir, {
        "model.tflite": bytes(tflite),
        "metadata.json": json.dumps(read_metadata(tflite), indent=2, sort_keys=True),
        "labels.txt": "\n".join(labels) + "\n",
        "samples.bin": x.astype("<f4").tobytes(),
        "samples.json": json.dumps({"shape": list(x.shape), "dtype": "float32",
                                    "byte_order": "little", "labels": y}, indent=2)})
    line = f"{target} assets: {len(keys)} points ({', '.join(keys)}), {len(x)} samples."
    return TargetExport(target, written, {k: {} for k in keys}, {"samples": len(x)}, (line,))


def export_android(tflite: bytes, out_dir: str | os.PathLike, *, samples_x, samples_y=None,
                   labels: list[str] | None = None) -> TargetExport:
    """Writes the assets the Android demo (``android_demo/``) loads.

    Files: ``model.tflite`` (the multi-point file, unchanged: the app switches its signatures),
    ``metadata.json`` (its ``aa_tflite`` metadata, for reading without the app), ``labels.txt``
    (one class name per line), ``samples.bin`` (the sample inputs, float32 little-endian,
    ``N x H x W x C``) and ``samples.json`` (their shape and labels).

    Example:
        >>> export_android(open("out/digits.tflite", "rb").read(), "android_demo/app/src/main/"
        ...                "assets", samples_x=x_val[:16], samples_y=y_val[:16])  # doctest: +SKIP

    Args:
        tflite: A ``.tflite`` written by ``convert``.
        out_dir: The app's assets folder, e.g. ``android_demo/app/src/main/assets``.
        samples_x: Sample inputs ``(N, *input_shape)`` in the model's float domain.
        samples_y: Their labels, or None.
        labels: Class names; defaults to ``"0"``, ``"1"``, ... for the model's outputs.

    Returns:
        An ``TargetExport``: one entry per point (signature key), with no figures; ``info`` has
        ``samples`` (how many).

    Raises:
        AAError: The model has more than one input or output, or the samples or labels do not
            fit it.
    """
    return write_assets(tflite, out_dir, samples_x=samples_x, samples_y=samples_y,
                        labels=labels, target="android")


def default_samples(tflite: bytes | None = None, count: int = 16
                    ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Sample inputs for a demo when the user gives none: the last ``count`` held-out digits of
    the embedded data (with labels) when the model takes 8x8x1 digits; otherwise ``count``
    seeded pseudo-random inputs spread over the model input's int8 range (no labels). Also
    returns what they are, in words. No TensorFlow import.

    Example:
        >>> x, y, what = default_samples(tflite)  # doctest: +SKIP
    """
    in_shape = (1, 8, 8, 1) if tflite is None else _io_shapes(tflite, outputs=False)[0]
    if tuple(in_shape[1:]) == (8, 8, 1):
        from aa_tflite.frontend.embedded import default_data

        _, x_val, y_val = default_data()
        return x_val[-count:], y_val[-count:], f"{count} held-out digits"
    graph = flatbuffer.read(tflite).subgraphs[0]
    q = graph.tensors[int(graph.inputs[0])].quantization
    scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
    zero = int(q.zeroPoint[0]) if scale else 0
    lo, hi = ((-128 - zero) * scale, (127 - zero) * scale) if scale else (-1.0, 1.0)
    x = np.random.RandomState(0).uniform(lo, hi, size=(count, *in_shape[1:])).astype(np.float32)
    return x, None, (f"{count} seeded random inputs over the input's int8 range "
                     f"[{lo:.3g}, {hi:.3g}] (pass samples for real ones)")


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None) -> TargetExport:
    """The ``Target`` form of ``export_android``: ``samples`` is ``(x, y)``, or None for
    ``default_samples(tflite)``; ``name`` and ``source`` are not used."""
    return with_samples(export_android, tflite, out, samples)


def with_samples(export_fn, tflite: bytes, out, samples) -> TargetExport:
    """Runs ``export_fn`` with the user's samples, or ``default_samples`` (said in the lines)."""
    if samples is not None:
        x, y = samples
        return export_fn(tflite, out, samples_x=x, samples_y=y)
    x, y, what = default_samples(tflite)
    done = export_fn(tflite, out, samples_x=x, samples_y=y)
    return dataclasses.replace(done, lines=(*done.lines, f"Samples: {what}."))
