"""Export stage: Keras model (+ plan) -> full-integer int8 ``.tflite``."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import warnings
from collections.abc import Mapping

import keras
import numpy as np
from absl import logging

from aa_tflite.frontend.rewrite import rewrite, site_layers
from aa_tflite.quiet import quiet_native_output
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.kernel_math import affine_fit
from aa_tflite.tflite.safety import repair_scales
from aa_tflite.types import AAError, Lowering, Plan, Site, SiteConfig, SiteKind

__all__ = ["Exported", "IODType", "check_data", "export", "site_tensors", "to_tflite"]

IODType = str  # "int8" or "float32"
_IO_DTYPES = ("int8", "float32")


@dataclasses.dataclass(frozen=True)
class Exported:
    """A converted model and where its sites are.

    Attributes:
        tflite: The ``.tflite`` bytes.
        sites: The sites, in graph order.
        site_tensors: Tensor index of each site's output in subgraph 0, by site name
            (None where the converter's names did not tell).
        repairs: Activation scales the converter chose that the runtimes cannot set up (a
            tensor that was zero on the calibration data), and what they were raised to.
    """

    tflite: bytes
    sites: tuple[Site, ...]
    site_tensors: Mapping[str, int | None]
    repairs: tuple[str, ...] = ()


def check_data(model: keras.Model, data: object, what: str = "representative_data"
               ) -> np.ndarray:
    """Validates calibration/evaluation inputs against ``model``'s input and returns float32."""
    if len(model.inputs) != 1:
        raise AAError(f"aa_tflite supports models with one input; this one has "
                      f"{len(model.inputs)}. Wrap it so it takes one tensor.")
    if data is None:
        raise AAError(f"{what} is required: pass a numpy array of inputs shaped like the "
                      f"model's input {tuple(model.inputs[0].shape)}, e.g. 100-500 samples.")
    try:
        x = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AAError(f"{what} must be a numeric array. Received: {type(data).__name__}") from e
    want = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, x.shape[1:])):
        raise AAError(f"{what} has shape {x.shape}, but the model takes (N, "
                      f"{', '.join(str(w) for w in want)}). Reshape it, keeping samples first.")
    if len(x) == 0:
        raise AAError(f"{what} is empty: pass at least one sample (100-500 is typical).")
    if not np.all(np.isfinite(x)):
        raise AAError(f"{what} contains NaN or infinite values; clean the data first.")
    return x


def to_tflite(model: keras.Model, representative_data: np.ndarray, *,
              io_dtype: IODType = "int8", max_calibration_samples: int = 500) -> bytes:
    """Converts a Keras model to a full-integer int8 ``.tflite`` (int8 kernels everywhere).

    Args:
        model: A Keras 3 model.
        representative_data: Calibration inputs, shaped ``(N, *input_shape)``.
        io_dtype: ``"int8"`` for int8 input/output tensors (what a microcontroller wants), or
            ``"float32"`` for float input/output with quantize/dequantize ops at the ends.
        max_calibration_samples: Use at most this many samples, the first ones, for calibration.

    Returns:
        The ``.tflite`` bytes. The same model and data give the same bytes.

    Raises:
        AAError: Bad data, a bad ``io_dtype``, or an op the int8 converter cannot handle.
    """
    import tensorflow as tf  # local: only conversion needs TensorFlow

    if io_dtype not in _IO_DTYPES:
        raise AAError(f"io_dtype must be one of {_IO_DTYPES}. Received: io_dtype={io_dtype!r}")
    x = check_data(model, representative_data)[:max_calibration_samples]

    def samples():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    printed = io.StringIO()
    try:
        # Keras' export prints the traced signature; the converter's C++ side prints its options
        # and absl log lines; TF warns about input statistics. None of it is for the user.
        with contextlib.redirect_stdout(printed), quiet_native_output() as native, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return keras_output_order(bytes(converter.convert()))
    except Exception as e:  # the converter raises many types; say what happened and what to do
        raise AAError(f"The TFLite converter could not make a full-integer int8 model: {e}. "
                      "Every op must have an int8 TFLite kernel; replace unsupported layers.") from e
    finally:
        said = (printed.getvalue() + "".join(native)).strip()
        if said:
            logging.info("The TFLite converter said:\n%s", said)


def keras_output_order(tflite: bytes) -> bytes:
    """``tflite`` with its subgraph's outputs in the Keras model's order. The converter lists a
    multi-output model's outputs in its own order; its signature names them ``output_0``,
    ``output_1``, ... in ``model.outputs`` order, which this restores, so output ``k`` of the
    file is ``model.outputs[k]``. A one-output file is returned as it is."""
    from aa_tflite.tflite import flatbuffer

    model = flatbuffer.read(tflite)
    graph = model.subgraphs[0]
    sigs = model.signatureDefs or []
    if graph.outputs is None or len(graph.outputs) < 2 or len(sigs) != 1:
        return tflite
    named = {(m.name or b"").decode(): int(m.tensorIndex) for m in sigs[0].outputs or []}
    order = [named.get(f"output_{k}") for k in range(len(graph.outputs))]
    if None in order or sorted(order) != sorted(int(t) for t in graph.outputs):
        return tflite
    graph.outputs = np.asarray(order, np.int32)
    sigs[0].outputs = sorted(sigs[0].outputs, key=lambda m: int(m.name.decode().split("_")[-1]))
    return flatbuffer.write(model)


def _name_pattern(site: Site) -> re.Pattern[str]:
    parts = [re.escape(p) + r"(_\d+)?" for p in site.name.split("/")]
    return re.compile(r"(^|/)" + "/".join(parts) + r"/")


def site_tensors(tflite: bytes, sites: tuple[Site, ...] | list[Site]) -> dict[str, int | None]:
    """Finds each site's output tensor in subgraph 0 from the converter's tensor names.

    A fused op's output is named after every op fused into it (``...;model/conv_relu/Relu;...``).
    The model's last op output is named ``StatefulPartitionedCall``; a site that ends the model
    maps to it.
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    produced = [(op, t) for op in ops for t in op.outputs]
    found: dict[str, int | None] = {}
    for site in sites:
        pattern = _name_pattern(site)
        hits = [t for _, t in produced if any(pattern.search(p) for p in tensors[t].name.split(";"))]
        # The pre-activation tensor of an exact lowering also carries the name: take the last.
        found[site.name] = hits[-1] if hits else None
    missing = [s for s in sites if found[s.name] is None]
    if len(missing) == 1:  # the model's output site: the last op before any DEQUANTIZE
        real = [op for op in ops if op.name not in ("DEQUANTIZE", "QUANTIZE")]
        if real:
            candidate = real[-1].outputs[0]
            if candidate not in found.values():
                found[missing[0].name] = candidate
    for s in sites:
        if found[s.name] is None:
            logging.warning("Could not find the tensor of site %s in the .tflite.", s.name)
    return found


# Layers between a site and its consumer that keep "consumer input = f(site output)" simple.
_PASS_THROUGH = (
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D,
)
_CONSUMERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
              keras.layers.DepthwiseConv2D)


def _consumer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The one weighted layer that reads ``layer``'s output through pass-through layers."""
    while True:
        nodes = layer._outbound_nodes  # Keras has no public accessor for a layer's consumers
        if len(nodes) != 1:
            return None
        layer = nodes[0].operation
        if isinstance(layer, _CONSUMERS):
            return layer if layer.use_bias and getattr(layer, "groups", 1) == 1 else None
        if not isinstance(layer, _PASS_THROUGH):
            return None


def _fold_affine(consumer: keras.layers.Layer, a: np.ndarray, b: np.ndarray) -> None:
    """Makes ``consumer(v)`` compute what it computed on ``a * v + b``."""
    kernel = np.asarray(consumer.kernel)
    bias = np.asarray(consumer.bias)
    if isinstance(consumer, keras.layers.Dense):  # kernel (features, units)
        bias = bias + b @ kernel
        kernel = kernel * a[:, None]
    elif isinstance(consumer, keras.layers.DepthwiseConv2D):  # kernel (kh, kw, c, multiplier)
        bias = bias + (kernel.sum(axis=(0, 1)) * b[:, None]).reshape(-1)
        kernel = kernel * a[:, None]
    else:  # Conv1D/Conv2D kernel (..., c_in, c_out); b at padded borders is approximate
        bias = bias + kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0).T @ b
        kernel = kernel * a[:, None]
    consumer.kernel.assign(kernel)
    consumer.bias.assign(bias)


def correct_shift_bias(model: keras.Model, sites, x: np.ndarray) -> list[str]:
    """Corrects the shift lowering's consumers, in place on a model made by ``rewrite``.

    The shift form's kept values are lower by ``T`` than the exact form's. For each shifted site
    whose output reaches one Dense/Conv through pass-through layers, a least-squares fit
    ``exact ~ a * shifted + b`` of that consumer's input on ``x`` (per channel for a conv, per
    feature for a Dense) is folded into the consumer: ``a`` scales its kernel, ``b`` moves its bias.
    No op is added. Sites are taken in graph order, each measured with the corrections before it
    in place. Only sites of the top-level model are corrected.

    Returns:
        The names of the corrected sites.
    """
    done = []
    for site in sites:
        if "/" in site.name:
            continue
        _, aa, _ = site_layers(model, site)
        consumer = _consumer(aa)
        if aa.threshold == 0 or aa.lowering != Lowering.SHIFT.value or consumer is None:
            continue
        probe = keras.Model(model.inputs[0], consumer.input)
        shifted = np.asarray(probe(x, training=False))
        aa.lowering = Lowering.EXACT.value
        exact = np.asarray(probe(x, training=False))
        aa.lowering = Lowering.SHIFT.value
        # Per channel for a conv, per feature for a Dense; computed in the outputs' float32.
        a, b = affine_fit(shifted, exact, positive=False, dtype=None,
                          per_channel=not isinstance(consumer, keras.layers.Dense))
        _fold_affine(consumer, a.astype(np.float32), b.astype(np.float32))
        done.append(site.name)
    return done


def fold_shift_thresholds(model: keras.Model, sites) -> list[str]:
    """Moves each fused site's ``- T`` into its producer's bias, in place on a rewritten model.

    The converter folds ``relu(conv(x) - T)`` into the conv's bias by itself, but not after a
    Dense (it leaves a ``SUB`` op). Doing it here makes every fused site free at run time.

    Returns:
        The names of the folded sites.
    """
    done = []
    for site in sites:
        if site.kind is not SiteKind.FUSED:
            continue
        _, aa, producer = site_layers(model, site)
        if aa.threshold == 0 or aa.lowering != Lowering.SHIFT.value or not producer.use_bias:
            continue
        producer.bias.assign(np.asarray(producer.bias) - aa.threshold)
        aa.threshold = 0.0
        done.append(site.name)
    return done


def export(model: keras.Model, plan: Plan | Mapping[str, SiteConfig] | None = None, *,
           representative_data: np.ndarray, io_dtype: IODType = "int8",
           lowering: Lowering | str | None = None, bias_correction: bool = True) -> Exported:
    """Rewrites ``model`` with ``plan`` and converts it to a full-integer int8 ``.tflite``.

    Example:
        >>> exported = export(model, {"conv2d_relu": SiteConfig(threshold=0.2)},
        ...                   representative_data=x_cal)  # doctest: +SKIP
        >>> open("model.tflite", "wb").write(exported.tflite)  # doctest: +SKIP

    Args:
        model: The user's Keras model. It is not modified.
        plan: Per-site configs by site name, or a ``Plan``. Defaults to the identity.
        representative_data: Calibration inputs.
        io_dtype: ``"int8"`` or ``"float32"`` model input/output.
        lowering: How thresholds are written; defaults to the plan's, else ``"shift"``.
        bias_correction: For the shift lowering, fold the mean difference from the exact form
            into each consumer's bias, measured on ``representative_data``. Defaults to True.

    Returns:
        An ``Exported`` with the bytes and the site-to-tensor map.
    """
    x = check_data(model, representative_data)
    new_model, sites = rewrite(model, plan, lowering=lowering)
    if bias_correction:
        corrected = correct_shift_bias(new_model, sites, x[:500])
        logging.info("Bias correction applied after sites: %s", corrected)
    fold_shift_thresholds(new_model, sites)
    tflite, repairs = repair_scales(to_tflite(new_model, x, io_dtype=io_dtype))
    for note in repairs:
        logging.warning("Repaired the int8 model: %s", note)
    return Exported(tflite, tuple(sites), site_tensors(tflite, sites), tuple(repairs))
