"""One loader for the TFLite interpreter, and batched evaluation.

The interpreter comes from LiteRT (``ai_edge_litert``), else ``tflite_runtime`` (what Raspberry Pi
and Coral users have), else ``tf.lite``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from aa_tflite.types import AAError

__all__ = ["batches", "dequantize", "evaluate", "interpreter_backend", "load_interpreter", "quantize",
           "run"]

_BACKENDS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def _backend() -> tuple[str, Any]:
    for name, module in _BACKENDS:
        try:
            return name, importlib.import_module(module)
        except ImportError:
            continue
    raise AAError("No TFLite interpreter is installed. Install one: pip install ai-edge-litert "
                  "(or tflite-runtime on a Raspberry Pi / Coral).")


def interpreter_backend() -> str:
    """The name of the package whose interpreter ``load_interpreter`` uses."""
    return _backend()[0]


def load_interpreter(tflite: bytes, *, preserve_all_tensors: bool = False,
                     num_threads: int | None = None) -> Any:
    """Builds an interpreter for ``tflite`` from the first backend that is installed.

    Args:
        tflite: The model's bytes.
        preserve_all_tensors: Keep every intermediate tensor readable after ``invoke``
            (needed to count activation levels or sparsity); costs memory.
        num_threads: Interpreter threads; defaults to the backend's choice.

    Returns:
        An interpreter object with the usual ``allocate_tensors``/``invoke`` API.
    """
    if not isinstance(tflite, (bytes, bytearray, memoryview)) or len(tflite) < 8 or \
            bytes(tflite[4:8]) != b"TFL3":
        raise AAError("Expected the bytes of a .tflite model (file identifier 'TFL3'). "
                      f"Received: {_describe(tflite)}. Pass the file's contents, e.g. "
                      "open('model.tflite', 'rb').read().")
    _, module = _backend()
    kwargs: dict[str, Any] = {"model_content": bytes(tflite)}
    resolvers = getattr(module, "OpResolverType", None)
    if resolvers is not None:  # builtin kernels only: XNNPACK cannot re-prepare after a resize
        kwargs["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    try:
        return module.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as e:
        raise AAError(f"The interpreter refused this model: {e}") from e


def _describe(obj: object) -> str:
    if isinstance(obj, (bytes, bytearray)):
        return f"{len(obj)} bytes" + (" (empty)" if not obj else " without the 'TFL3' identifier")
    return type(obj).__name__


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if q.dtype == np.float32:
        return q
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * scale


def batches(interpreter: Any, x: np.ndarray, *, batch_size: int = 64) -> Iterator[int]:
    """Feeds ``x`` to ``interpreter`` batch by batch; yields the batch's start after each invoke.

    The input is resized to the batch, so one interpreter serves every batch; it is resized again
    only when the last batch is shorter.
    """
    inp = interpreter.get_input_details()[0]
    x = np.asarray(x)
    want = tuple(int(d) for d in inp["shape"][1:])
    if x.ndim == 0 or x.shape[1:] != want:
        raise AAError(f"Inputs have shape {x.shape}, but the model takes (N, "
                      f"{', '.join(map(str, want))}).")
    current = None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interpreter.resize_tensor_input(inp["index"], [len(chunk), *want])
            interpreter.allocate_tensors()
            current = len(chunk)
        interpreter.set_tensor(inp["index"], quantize(chunk, inp))
        interpreter.invoke()
        yield start


def run(interpreter: Any, x: np.ndarray, *, batch_size: int = 64,
        return_raw: bool = False) -> np.ndarray:
    """Runs ``x`` through an interpreter in batches and returns the (dequantized) outputs."""
    out = interpreter.get_output_details()[0]
    results = []
    for _ in batches(interpreter, x, batch_size=batch_size):
        raw = interpreter.get_tensor(out["index"])
        results.append(raw.copy() if return_raw else dequantize(raw, out))
    return np.concatenate(results) if results else np.zeros((0,))


def evaluate(tflite: bytes, x: np.ndarray, y: np.ndarray | None = None, *,
             batch_size: int = 64) -> float | np.ndarray:
    """Evaluates a ``.tflite`` on ``x``: top-1 accuracy if labels ``y`` are given, else outputs.

    Example:
        >>> acc = evaluate(open("digits.tflite", "rb").read(), x_val, y_val)  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        x: Float inputs shaped ``(N, *input_shape)``; int8 models get them quantized.
        y: Integer class labels shaped ``(N,)``, or None.
        batch_size: Samples per invocation.

    Returns:
        Top-1 accuracy in [0, 1] with labels; otherwise the float outputs, shaped ``(N, ...)``.
    """
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AAError(f"x must be a numeric array of inputs. Received: {type(x).__name__}") from e
    if not np.all(np.isfinite(x)):
        raise AAError("x contains NaN or infinite values; clean the data first.")
    outputs = run(load_interpreter(tflite), x, batch_size=batch_size)
    if y is None:
        return outputs
    y = np.asarray(y).reshape(-1)
    if len(y) != len(outputs):
        raise AAError(f"{len(y)} labels for {len(outputs)} inputs; pass one label per sample.")
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == y))
