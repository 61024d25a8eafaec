"""The Android demo app (``android_demo/``): the assets it loads. No TensorFlow import (the
default sample digits load TensorFlow, lazily, only when no samples are given)."""

from __future__ import annotations

import json
import os

import numpy as np

from aa_tflite.targets import TargetExport
from aa_tflite.targets.common import write_files
from aa_tflite.tflite import flatbuffer, multipoint
from aa_tflite.tflite.metadata import read_metadata
from aa_tflite.types import AAError

__all__ = ["default_samples", "export", "export_android", "write_assets"]


def _io_shapes(tflite: bytes) -> tuple[tuple[int, ...], int]:
    """``(input shape, number of outputs per sample)`` of a one-input, one-output model."""
    graph = flatbuffer.read(tflite).subgraphs[0]
    ins = graph.inputs if graph.inputs is not None else []
    outs = graph.outputs if graph.outputs is not None else []
    if len(ins) != 1 or len(outs) != 1:
        raise AAError("The Android demo runs models with one input and one output.")
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


def default_samples(count: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The last ``count`` held-out digits of the embedded model's data, and their labels
    (loads TensorFlow: the embedded data comes with its Keras model)."""
    from aa_tflite.frontend.embedded import load_default

    d = load_default()
    return d.x_val[-count:], d.y_val[-count:]


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None) -> TargetExport:
    """The ``Target`` form of ``export_android``: ``samples`` is ``(x, y)``, or None for
    ``default_samples()``; ``name`` and ``source`` are not used."""
    x, y = samples if samples is not None else default_samples()
    return export_android(tflite, out, samples_x=x, samples_y=y)
