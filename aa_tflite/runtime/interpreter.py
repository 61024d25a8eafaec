"""One loader for the TFLite interpreter, and batched evaluation.

The interpreter comes from LiteRT (``ai_edge_litert``), else ``tflite_runtime`` (what Raspberry Pi
and Coral users have), else ``tf.lite``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from aa_tflite.types import AAError, Kernels

__all__ = ["KERNELS", "batches", "check_kernels", "dequantize", "evaluate", "interpreter_backend",
           "load_interpreter", "quantize", "run", "run_model"]

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


KERNELS = tuple(k.value for k in Kernels)  # one list of kernel sets, guard's


def check_kernels(kernels: str) -> str:
    """``kernels`` if it names a kernel set, else an ``AAError`` that lists them."""
    if kernels not in KERNELS:
        raise AAError(f"kernels must be one of {list(KERNELS)}: LiteRT's builtin kernels, LiteRT "
                      f"with its default XNNPACK delegate, or TensorFlow Lite Micro. Received: "
                      f"kernels={kernels!r}")
    return kernels


def load_interpreter(tflite: bytes, *, preserve_all_tensors: bool = False,
                     num_threads: int | None = None, kernels: str = "builtin") -> Any:
    """Builds an interpreter for ``tflite`` from the first backend that is installed.

    Args:
        tflite: The model's bytes.
        preserve_all_tensors: Keep every intermediate tensor readable after ``invoke``
            (needed to count activation levels or sparsity); costs memory.
        num_threads: Interpreter threads; defaults to the backend's choice.
        kernels: ``"builtin"`` (LiteRT's builtin kernels, no delegate) or ``"xnnpack"`` (the
            default resolver, with the XNNPACK delegate, as apps get it). With XNNPACK, resize
            the input before the first ``allocate_tensors``, as ``run_model`` does.

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
    if check_kernels(kernels) == "tflm":
        raise AAError("load_interpreter makes LiteRT interpreters; run TFLite Micro with "
                      "run_model(tflite, x, kernels='tflm').")
    resolvers = getattr(module, "OpResolverType", None)
    if resolvers is not None and kernels == "builtin":  # XNNPACK cannot always re-prepare
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


def run_model(tflite: bytes, x: np.ndarray, *, kernels: str = "builtin",
              batch_size: int = 64) -> np.ndarray:
    """Runs float inputs ``x`` through ``tflite`` on a kernel set; returns dequantized outputs.

    Example:
        >>> out = run_model(tflite, x_val, kernels="tflm")  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        x: Float inputs ``(N, *input_shape)``; int8 models get them quantized.
        kernels: ``"builtin"``, ``"xnnpack"`` (one interpreter per batch size, each resized
            before it is allocated) or ``"tflm"`` (TensorFlow Lite Micro's reference kernels,
            one sample per invoke).
        batch_size: Samples per invocation (LiteRT).
    """
    check_kernels(kernels)
    if kernels == "builtin":
        return run(load_interpreter(tflite), x, batch_size=batch_size)
    x = np.asarray(x)
    detail = load_interpreter(tflite)
    inp, out = detail.get_input_details()[0], detail.get_output_details()[0]
    want = tuple(int(d) for d in inp["shape"][1:])
    if x.ndim == 0 or x.shape[1:] != want:
        raise AAError(f"Inputs have shape {x.shape}, but the model takes (N, "
                      f"{', '.join(map(str, want))}).")
    results = []
    if kernels == "tflm":
        from tflite_micro import runtime as micro

        interp = micro.Interpreter.from_bytes(bytes(tflite))
        for i in range(len(x)):
            interp.set_input(quantize(x[i:i + 1], inp), 0)
            interp.invoke()
            results.append(dequantize(interp.get_output(0).copy(), out))
    else:
        sizes: dict[int, Any] = {}
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            if len(chunk) not in sizes:
                interp = load_interpreter(tflite, kernels="xnnpack")
                interp.resize_tensor_input(inp["index"], [len(chunk), *want])
                interp.allocate_tensors()
                sizes[len(chunk)] = interp
            interp = sizes[len(chunk)]
            interp.set_tensor(inp["index"], quantize(chunk, inp))
            interp.invoke()
            results.append(dequantize(interp.get_tensor(out["index"]).copy(), out))
    return np.concatenate(results) if results else np.zeros((0,))


def evaluate(tflite: bytes, x: np.ndarray, y: np.ndarray | None = None, *,
             batch_size: int = 64, kernels: str = "builtin") -> float | np.ndarray:
    """Evaluates a ``.tflite`` on ``x``: top-1 accuracy if labels ``y`` are given, else outputs.

    Example:
        >>> acc = evaluate(open("digits.tflite", "rb").read(), x_val, y_val)  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        x: Float inputs shaped ``(N, *input_shape)``; int8 models get them quantized.
        y: Integer class labels shaped ``(N,)``, or None.
        batch_size: Samples per invocation.
        kernels: ``"builtin"``, ``"xnnpack"`` or ``"tflm"`` (see ``run_model``).

    Returns:
        Top-1 accuracy in [0, 1] with labels; otherwise the float outputs, shaped ``(N, ...)``.
    """
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AAError(f"x must be a numeric array of inputs. Received: {type(x).__name__}") from e
    if not np.all(np.isfinite(x)):
        raise AAError("x contains NaN or infinite values; clean the data first.")
    outputs = run_model(tflite, x, kernels=kernels, batch_size=batch_size)
    if y is None:
        return outputs
    y = np.asarray(y).reshape(-1)
    if len(y) != len(outputs):
        raise AAError(f"{len(y)} labels for {len(outputs)} inputs; pass one label per sample.")
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), axis=1) == y))
