"""BatchNorm after ReLU, folded forward into the next weighted layer where that is exact.

Older Keras models often run ``Conv -> ReLU -> BatchNormalization``. The converter folds a
BatchNorm into the conv *before* it, not after a ReLU: the int8 graph keeps it as ``MUL``/``ADD``
ops, whose outputs are full activation tensors that no lowering reaches, and which often hold the
activation peak. A BatchNorm is a per-channel affine ``y = a x + b``, so it folds into the layer
that reads it: ``W (a x + b) + c = (W a) x + (W b + c)``. That is exact when every input the next
layer reads is a real BatchNorm output, not padding:

- a ``Dense`` layer (through ``Flatten``, ``GlobalAveragePooling2D``/``GlobalMaxPooling2D``
  and ``Dropout``);
- a ``Conv2D`` or ``DepthwiseConv2D`` with ``valid`` padding, or with a 1x1 kernel;
- through ``MaxPooling2D`` and ``GlobalMaxPooling2D`` only when every scale ``a`` is positive
  (a max commutes with a positive affine map), and through ``AveragePooling2D`` with ``valid``
  padding.

With ``same`` padding the padded zeros would become ``b`` after the fold: not exact, so those are
left as they are and the report says why. The user's model is never modified.

Example:
    >>> folded, notes = fold_batchnorm(model)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["fold_batchnorm", "inexact_folds"]

_PASS = (keras.layers.Flatten, keras.layers.Dropout, keras.layers.GlobalAveragePooling2D,
         keras.layers.GlobalMaxPooling2D, keras.layers.MaxPooling2D,
         keras.layers.AveragePooling2D)


def _producer(tensor: Any):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _readers(model: keras.Model) -> dict[int, list[keras.layers.Layer]]:
    out: dict[int, list[keras.layers.Layer]] = {}
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        for t in inputs:
            p = _producer(t)
            if p is not None:
                out.setdefault(id(p), []).append(layer)
    return out


def _affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    w = {v.path.split("/")[-1]: np.asarray(v.numpy(), np.float64) for v in bn.weights}
    var, mean = w["moving_variance"], w["moving_mean"]
    gamma = w.get("gamma", np.ones_like(var))
    beta = w.get("beta", np.zeros_like(var))
    a = gamma / np.sqrt(var + bn.epsilon)
    return a, beta - mean * a


def _why_not(bn, readers, model, exact: bool) -> tuple[keras.layers.Layer | None, str]:
    """The weighted layer ``bn`` folds into (exactly, unless ``exact`` is False), or None and
    why not; with ``exact=False`` a 'same'-padded conv is returned with the reason it is not
    exact."""
    a, _ = _affine(bn)
    if bn.axis not in (-1, [-1], (-1,), len(bn.input.shape) - 1, [len(bn.input.shape) - 1]):
        return None, "it normalizes another axis than the last"
    layer, path = bn, []
    while True:
        nxt = readers.get(id(layer), [])
        outs = model.outputs
        if len(nxt) != 1 or any(_producer(o) is layer for o in outs):
            return None, "its output is read by more than one layer, or is a model output"
        layer = nxt[0]
        if isinstance(layer, _PASS):
            if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D)) \
                    and not np.all(a > 0):
                return None, f"a scale is not positive, so it cannot pass {layer.name}"
            if getattr(layer, "padding", "valid") != "valid":
                return None, f"{layer.name} pads ('same'), which the fold would change"
            path.append(layer)
            continue
        break
    if isinstance(layer, keras.layers.Dense):
        return layer, ""
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        kernel = tuple(layer.kernel_size)
        if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) != 1:
            return None, f"{layer.name} is a grouped conv"
        if layer.padding == "valid" or kernel == (1, 1):
            return layer, ""
        why = (f"{layer.name} pads ('same' with a {kernel} kernel): the padded zeros would "
               "become the BatchNorm's shift, so the fold is not exact")
        return (None if exact else layer), why
    return None, (f"it reaches {layer.name!r} ({type(layer).__name__}) before any weighted "
                  "layer it could fold into")


def _folded_weights(layer, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    bias = (np.asarray(layer.bias.numpy(), np.float64) if getattr(layer, "use_bias", False)
            else None)
    if isinstance(layer, keras.layers.Dense):
        rows = kernel.shape[0] // len(a)  # Flatten of (..., channels): channel = row % C
        scale, shift = np.tile(a, rows)[:, None], np.tile(b, rows)
        new_bias = shift @ kernel
        new_kernel = kernel * scale
    elif isinstance(layer, keras.layers.DepthwiseConv2D):  # kernel (kh, kw, C, mult)
        new_kernel = kernel * a[None, None, :, None]
        new_bias = np.einsum("hwcm,c->cm", kernel, b).reshape(-1)
    else:  # Conv2D kernel (kh, kw, C, out)
        new_kernel = kernel * a[None, None, :, None]
        new_bias = np.einsum("hwco,c->o", kernel, b)
    total = new_bias + (bias if bias is not None else 0.0)
    return [new_kernel.astype(np.float32), total.astype(np.float32)]


def fold_batchnorm(model: keras.Model, *, exact: bool = True) -> tuple[keras.Model, list[str]]:
    """A copy of ``model`` with every BatchNorm that follows a non-weighted layer (a ReLU, a
    pooling, a concatenation) folded into the next weighted layer where that is exact.

    Args:
        model: A built Functional or Sequential Keras model (nested models are left alone).
        exact: Fold only where exact. False also folds into 'same'-padded convs, where the
            border outputs change (measure the difference: ``convert`` scores against the
            unfolded model's outputs, so the search sees it as loss).

    Returns:
        The model (``model`` itself when nothing folds) and one note per BatchNorm considered:
        folded into which layer, or why not.

    Example:
        >>> folded, notes = fold_batchnorm(model)  # doctest: +SKIP
        >>> notes[0]  # doctest: +SKIP
        "Folded BatchNormalization 'bn1' forward into 'conv2' (exact: 'valid' padding)."
    """
    targets, notes = _targets(model, exact)
    if not targets:
        return model, notes
    return _rebuild(model, targets), notes


def inexact_folds(model: keras.Model) -> list[str]:
    """The BatchNorms that fold forward only inexactly (into a 'same'-padded conv), by name.

    Example:
        >>> inexact_folds(model)  # doctest: +SKIP
        ['bn2']
    """
    exact = {bn.name for bn, _ in _targets(model, True)[0].values()}
    return [bn.name for bn, _ in _targets(model, False)[0].values() if bn.name not in exact]


def _targets(model: keras.Model, exact: bool) -> tuple[dict, list[str]]:
    """BatchNorm id -> (BatchNorm, the layer it folds into), and a note per BatchNorm."""
    readers = _readers(model)
    targets: dict[int, tuple[keras.layers.Layer, keras.layers.Layer]] = {}
    notes = []
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        src = _producer(bn.input)
        if isinstance(src, (keras.layers.Conv2D, keras.layers.Dense,
                            keras.layers.DepthwiseConv2D)) and \
                getattr(src, "activation", None) in (None, keras.activations.linear):
            continue  # the converter folds a BatchNorm into the linear layer before it
        into, why = _why_not(bn, readers, model, exact)
        if into is None or id(into) in {id(t) for _, t in targets.values()}:
            notes.append(f"BatchNormalization {bn.name!r} stays: {why or 'its layer takes two'}.")
            continue
        targets[id(bn)] = (bn, into)
        notes.append(f"Folded BatchNormalization {bn.name!r} forward into {into.name!r} "
                     + (f"(NOT exact: {why})." if why else "(exact: no padding reads it)."))
    return targets, notes


def _rebuild(model: keras.Model, targets: dict) -> keras.Model:
    """A clone of ``model`` with each folded BatchNorm an ``Identity`` and each layer it folds
    into carrying the folded weights (and a bias)."""
    weights = {id(into): _folded_weights(into, *_affine(bn)) for bn, into in targets.values()}

    def clone(layer):
        if id(layer) in targets:
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if id(layer) in weights:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    folded = {bn.name for bn, _ in targets.values()}

    def call(layer, *args, **kwargs):  # the Identity takes no BatchNorm keywords (training=...)
        return layer(args[0]) if layer.name in folded else layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):  # layers are listed, not called: no keywords
        new = keras.models.clone_model(model, clone_function=clone)
    else:
        new = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for old in model.layers:
        if id(old) in weights:
            new.get_layer(old.name).set_weights(weights[id(old)])
        elif id(old) not in targets and old.weights:
            new.get_layer(old.name).set_weights(old.get_weights())
    return new
