"""One place that makes interpreters, one latency timer, and batched evaluation.

The interpreter comes from LiteRT (``ai_edge_litert``), else ``tflite_runtime`` (what Raspberry Pi
and Coral users have), else ``tf.lite``; TFLite Micro's from ``tflite_micro``. Every interpreter
``aa_tflite`` makes, in this process or in ``guard``'s child process, comes from
``make_interpreter`` or ``micro_interpreter``.

Imports numpy and ``aa_tflite.types`` only: no TensorFlow, no LiteRT schema.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from aa_tflite.types import AAError, Kernels

__all__ = ["KERNELS", "batches", "check_input_shape", "check_kernels", "dequantize", "evaluate",
           "fixed_batch", "interpreter_backend", "load_interpreter", "make_interpreter",
           "latency_quantiles_ms", "median_latency_ms", "micro_interpreter", "micro_run",
           "MIN_REPEATS", "planning_threads", "quantize", "run", "run_model", "sample_latency_ms"]

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
    """The name of the package whose interpreter ``make_interpreter`` uses."""
    return _backend()[0]


KERNELS = tuple(k.value for k in Kernels)  # the kernel-set names, as strings


def check_kernels(kernels: Kernels | str) -> str:
    """``kernels``' name if it names a kernel set (``Kernels``), else an ``AAError`` that lists
    them."""
    try:
        return Kernels(kernels).value
    except ValueError:
        raise AAError(f"kernels must be one of {list(KERNELS)}: LiteRT's builtin kernels, LiteRT "
                      f"with its default XNNPACK delegate, or TensorFlow Lite Micro. Received: "
                      f"kernels={kernels!r}") from None


def _check_tflite(tflite: object) -> bytes:
    if not isinstance(tflite, (bytes, bytearray, memoryview)) or len(tflite) < 8 or \
            bytes(tflite[4:8]) != b"TFL3":
        raise AAError("Expected the bytes of a .tflite model (file identifier 'TFL3'). "
                      f"Received: {_describe(tflite)}. Pass the file's contents, e.g. "
                      "open('model.tflite', 'rb').read().")
    return bytes(tflite)


def make_interpreter(tflite: bytes, kernels: Kernels | str, *, num_threads: int | None = None,
                     preserve_all_tensors: bool = False) -> Any:
    """A LiteRT interpreter for ``tflite`` on a kernel set, from the first backend installed.

    Example:
        >>> interp = make_interpreter(tflite, Kernels.XNNPACK, num_threads=1)  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        kernels: ``Kernels.BUILTIN`` (the builtin kernels, no delegate) or ``Kernels.XNNPACK``
            (the default resolver, with the XNNPACK delegate, as apps get it). With XNNPACK,
            resize the input before the first ``allocate_tensors``, as ``run_model`` does.
            TFLite Micro has another API: ``micro_interpreter``.
        num_threads: Interpreter threads; None leaves the backend's choice.
        preserve_all_tensors: Keep every intermediate tensor readable after ``invoke`` (needed
            to count activation levels or sparsity); costs memory.

    Returns:
        An interpreter object with the usual ``allocate_tensors``/``invoke`` API.

    Raises:
        AAError: Not a ``.tflite``, an unknown kernel set, no interpreter installed, or the
            interpreter refused the model.
    """
    data = _check_tflite(tflite)
    if check_kernels(kernels) == Kernels.TFLM:
        raise AAError("make_interpreter makes LiteRT interpreters; run TFLite Micro with "
                      "run_model(tflite, x, kernels='tflm') or micro_interpreter(tflite).")
    _, module = _backend()
    kwargs: dict[str, Any] = {"model_content": data}
    resolvers = getattr(module, "OpResolverType", None)
    if resolvers is not None and kernels == Kernels.BUILTIN:  # XNNPACK cannot always re-prepare
        kwargs["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    try:
        return module.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as e:
        raise AAError(f"The interpreter refused this model: {e}") from e


def micro_interpreter(tflite: bytes, *, arena_size: int | None = None) -> Any:
    """A TensorFlow Lite Micro interpreter (``tflite_micro``'s Python runtime) for ``tflite``.

    Args:
        tflite: The model's bytes.
        arena_size: The arena to allocate, in bytes; None leaves ``tflite_micro``'s default.
    """
    from tflite_micro import runtime as micro

    data = _check_tflite(tflite)
    if arena_size is None:
        return micro.Interpreter.from_bytes(data)
    return micro.Interpreter.from_bytes(data, arena_size=arena_size)


def micro_run(tflite: bytes, x: np.ndarray, *, arena_size: int | None = None,
              outputs: Sequence[int] | None = None) -> np.ndarray | list[np.ndarray]:
    """Raw outputs of ``tflite`` in TensorFlow Lite Micro for raw inputs ``x`` (already in the
    model's input dtype), one sample per invoke, as TFLM runs on a device.

    Args:
        outputs: Output indices to return, as a list in that order (default: the first output,
            as one array).

    Example:
        >>> raw = micro_run(tflite, np.zeros((2, 8, 8, 1), np.int8))  # doctest: +SKIP
    """
    interp = micro_interpreter(tflite, arena_size=arena_size)
    which = [0] if outputs is None else list(outputs)
    out: list[list[np.ndarray]] = [[] for _ in which]
    for i in range(len(x)):
        interp.set_input(x[i:i + 1], 0)
        interp.invoke()
        for k, o in enumerate(which):
            out[k].append(interp.get_output(o).copy())
    joined = [np.concatenate(o) if o else np.zeros((0,)) for o in out]
    return joined[0] if outputs is None else joined


def load_interpreter(tflite: bytes, *, preserve_all_tensors: bool = False,
                     num_threads: int | None = None, kernels: Kernels | str = "builtin") -> Any:
    """``make_interpreter`` with builtin kernels by default (the public name).

    Example:
        >>> interp = load_interpreter(open("model.tflite", "rb").read())  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        preserve_all_tensors: Keep every intermediate tensor readable after ``invoke``.
        num_threads: Interpreter threads; defaults to the backend's choice.
        kernels: ``"builtin"`` or ``"xnnpack"`` (see ``make_interpreter``).

    Returns:
        An interpreter object with the usual ``allocate_tensors``/``invoke`` API.
    """
    return make_interpreter(tflite, kernels, num_threads=num_threads,
                            preserve_all_tensors=preserve_all_tensors)


MIN_REPEATS = 7  # timed invokes a time-bounded latency takes at least


def median_latency_ms(invoke: Callable[[], object], *, repeats: int = 20) -> float:
    """The median wall time of ``invoke()`` over ``repeats`` calls after one warm-up call, in ms.

    Example:
        >>> median_latency_ms(interp.invoke, repeats=30)  # doctest: +SKIP
    """
    return latency_quantiles_ms(invoke, repeats=repeats, quantiles=(0.5,))[0]


def latency_quantiles_ms(invoke: Callable[[], object], *, repeats: int = 20,
                         quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                         max_seconds: float | None = None) -> tuple[float, ...]:
    """Quantiles of the wall time of ``invoke()`` over ``repeats`` calls after one warm-up call,
    in ms: by default the 10th percentile, the median and the 90th (the spread a plot shows).
    With ``max_seconds``, timing stops once that much time is spent and ``MIN_REPEATS`` calls
    are timed (a large model's invoke can take a second).

    Example:
        >>> low, mid, high = latency_quantiles_ms(lambda: sum(range(1000)), repeats=50)
        >>> 0 < low <= mid <= high
        True
    """
    invoke()  # warm-up: first-call allocation and delegate preparation are not timed
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        invoke()
        times.append(time.perf_counter() - t)
        if max_seconds is not None and len(times) >= MIN_REPEATS \
                and time.perf_counter() - start > max_seconds:
            break
    return tuple(float(v) * 1000 for v in np.quantile(times, quantiles))


def sample_latency_ms(tflite: bytes, kernels: Kernels | str = Kernels.XNNPACK, *,
                      num_threads: int | None = 1, repeats: int = 30,
                      quantiles: Sequence[float] | None = None,
                      max_seconds: float | None = None) -> float | tuple[float, ...]:
    """The median time of one single-sample invoke of ``tflite`` (a zero input), in ms.

    Args:
        tflite: The model's bytes (its first subgraph runs, at its own input shape).
        kernels: The kernel set (``make_interpreter``); default LiteRT's XNNPACK, as apps run.
        num_threads: Interpreter threads (default 1).
        repeats: Timed invokes after one warm-up.
        quantiles: Give these quantiles of the times instead of the median, e.g.
            ``(0.1, 0.5, 0.9)``.
        max_seconds: Stop timing after this long, once ``MIN_REPEATS`` invokes are timed.
    """
    interp = make_interpreter(tflite, kernels, num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    got = latency_quantiles_ms(interp.invoke, repeats=repeats, quantiles=quantiles or (0.5,),
                               max_seconds=max_seconds)
    return got if quantiles is not None else got[0]


def _describe(obj: object) -> str:
    if isinstance(obj, (bytes, bytearray)):
        return f"{len(obj)} bytes" + (" (empty)" if not obj else " without the 'TFL3' identifier")
    return type(obj).__name__


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float values ``x`` in a tensor's type (``detail`` from ``get_input_details``): rounded,
    offset by the zero point and saturated for int8; unchanged for float32."""
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values ``q`` as floats, by its scale and zero point (``detail``)."""
    if q.dtype == np.float32:
        return q
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * scale


def check_input_shape(x: np.ndarray, detail: dict, *, what: str = "the model",
                      error: type[AAError] = AAError) -> tuple[int, ...]:
    """The per-sample input shape ``detail`` (an input's details) takes; ``error`` if ``x`` is not
    a batch of it.

    Args:
        x: The inputs, ``(N, *shape)``.
        detail: The input's details, from ``get_input_details``.
        what: Who takes the inputs, for the message (``"point 'kib1p2'"``).
        error: The exception type to raise.
    """
    want = tuple(int(d) for d in detail["shape"][1:])
    if x.ndim == 0 or tuple(x.shape[1:]) != want:
        raise error(f"Inputs have shape {x.shape}, but {what} takes (N, "
                    f"{', '.join(map(str, want))}).")
    return want


def fixed_batch(detail: dict) -> bool:
    """Whether an input (``get_input_details()[0]``) is fixed at its batch (its shape signature
    has no -1, e.g. a ``tflite.static_batch`` file): such an input cannot be resized, so it runs
    one sample per invoke."""
    signature = detail.get("shape_signature")
    return signature is not None and len(signature) > 0 and int(signature[0]) != -1


def batches(interpreter: Any, x: np.ndarray, *, batch_size: int = 64,
            stored: bool = False) -> Iterator[int]:
    """Feeds ``x`` to ``interpreter`` batch by batch; yields the batch's start after each invoke.

    The input is resized to the batch, so one interpreter serves every batch; it is resized again
    only when the last batch is shorter. ``x`` is float values, quantized to the input's type, or
    with ``stored`` values already in its type (an int8 tensor read from another run).
    """
    inp = interpreter.get_input_details()[0]
    x = np.asarray(x)
    want = check_input_shape(x, inp)
    batch_size = 1 if fixed_batch(inp) else batch_size
    current = None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interpreter.resize_tensor_input(inp["index"], [len(chunk), *want])
            interpreter.allocate_tensors()
            current = len(chunk)
        interpreter.set_tensor(inp["index"], chunk if stored else quantize(chunk, inp))
        interpreter.invoke()
        yield start


def run(interpreter: Any, x: np.ndarray, *, batch_size: int = 64, return_raw: bool = False,
        all_outputs: bool = False, stored: bool = False) -> np.ndarray | list[np.ndarray]:
    """Runs ``x`` through an interpreter in batches and returns the (dequantized) outputs: the
    first output's, or with ``all_outputs`` a list with every output's in the file's order.
    ``stored``: ``x`` is already in the input's type (``batches``)."""
    details = interpreter.get_output_details()
    details = details if all_outputs else details[:1]
    results: list[list[np.ndarray]] = [[] for _ in details]
    for _ in batches(interpreter, x, batch_size=batch_size, stored=stored):
        for k, out in enumerate(details):
            raw = interpreter.get_tensor(out["index"])
            results[k].append(raw.copy() if return_raw else dequantize(raw, out))
    joined = [np.concatenate(r) if r else np.zeros((0,)) for r in results]
    return joined if all_outputs else joined[0]


def planning_threads() -> int:
    """Interpreter threads for measuring many variants: the machine's cores, at most 4. Every
    kernel here computes in integers (or elementwise), so the outputs do not depend on it.

    Example:
        >>> 1 <= planning_threads() <= 4
        True
    """
    return max(1, min(os.cpu_count() or 1, 4))


def run_model(tflite: bytes, x: np.ndarray, *, kernels: str = "builtin",
              batch_size: int = 64, all_outputs: bool = False,
              num_threads: int | None = None) -> np.ndarray | list[np.ndarray]:
    """Runs float inputs ``x`` through ``tflite`` on a kernel set; returns dequantized outputs.

    Example:
        >>> out = run_model(tflite, x_val, kernels="tflm")  # doctest: +SKIP

    Args:
        tflite: The model's bytes.
        x: Float inputs ``(N, *input_shape)``; int8 models get them quantized.
        kernels: ``"builtin"``, ``"xnnpack"`` (one interpreter per batch size, each resized
            before it is allocated) or ``"tflm"`` (TensorFlow Lite Micro's reference kernels,
            one sample per invoke).
        batch_size: Samples per invocation (LiteRT); 1 for a model fixed at batch 1 (whose
            input's shape signature has no -1, e.g. ``tflite.static_batch``'s).
        all_outputs: Return every output, as a list in the file's order (default: the first).
        num_threads: LiteRT interpreter threads; defaults to ``planning_threads()``.
    """
    kernels = check_kernels(kernels)
    x = np.asarray(x)
    threads = planning_threads() if num_threads is None else num_threads
    detail = make_interpreter(tflite, Kernels.BUILTIN, num_threads=threads)
    inp, outs = detail.get_input_details()[0], detail.get_output_details()
    outs = outs if all_outputs else outs[:1]
    batch_size = 1 if fixed_batch(inp) else batch_size
    if kernels == Kernels.BUILTIN:
        return run(detail, x, batch_size=batch_size, all_outputs=all_outputs)
    want = check_input_shape(x, inp)
    results: list[list[np.ndarray]] = [[] for _ in outs]
    if kernels == Kernels.TFLM:
        raw = micro_run(tflite, quantize(x, inp), outputs=range(len(outs)))
        for k, out in enumerate(outs):
            results[k].append(dequantize(raw[k], out))
    else:
        sizes: dict[int, Any] = {}
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            if len(chunk) not in sizes:
                interp = make_interpreter(tflite, Kernels.XNNPACK, num_threads=threads)
                interp.resize_tensor_input(inp["index"], [len(chunk), *want])
                interp.allocate_tensors()
                sizes[len(chunk)] = interp
            interp = sizes[len(chunk)]
            interp.set_tensor(inp["index"], quantize(chunk, inp))
            interp.invoke()
            for k, out in enumerate(outs):
                results[k].append(dequantize(interp.get_tensor(out["index"]).copy(), out))
    joined = [np.concatenate(r) if r else np.zeros((0,)) for r in results]
    return joined if all_outputs else joined[0]


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
