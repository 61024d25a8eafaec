"""Rewrite stage: put an ``AAReLU`` at every ReLU site of a Keras model, on a copy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import keras
from absl import logging

from aa_tflite.frontend.layers import AAReLU
from aa_tflite.types import AAError, Lowering, Plan, Site, SiteConfig, SiteKind, check_sites

__all__ = ["Rewritten", "check_model", "from_keras2", "is_keras2", "rewrite", "site_layers"]

# Layers whose fused ``activation="relu"``/``"relu6"`` is a site.
_FUSED_TYPES = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Dense,
)
_RELU_CLIPS = {"relu": None, "relu6": 6.0}


class Rewritten(NamedTuple):
    """What ``rewrite`` returns: the new model and its sites, in graph order."""

    model: keras.Model
    sites: list[Site]


def _activation_name(fn) -> str | None:
    if fn is keras.activations.relu:
        return "relu"
    if fn is keras.activations.relu6:
        return "relu6"
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _site_kind(layer: keras.layers.Layer) -> tuple[SiteKind, float | None] | None:
    """(kind, native clip) if ``layer`` holds a ReLU site, else None."""
    if isinstance(layer, AAReLU):
        return SiteKind.RELU_LAYER, layer.clip
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            logging.info("Layer %s is a leaky or thresholded ReLU (negative_slope=%s, "
                         "threshold=%s); it is left as it is.", layer.name,
                         layer.negative_slope, layer.threshold)
            return None
        return SiteKind.RELU_LAYER, (None if layer.max_value is None else float(layer.max_value))
    if isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        return (SiteKind.ACTIVATION, _RELU_CLIPS[name]) if name in _RELU_CLIPS else None
    if isinstance(layer, _FUSED_TYPES):
        name = _activation_name(layer.activation)
        return (SiteKind.FUSED, _RELU_CLIPS[name]) if name in _RELU_CLIPS else None
    return None


def is_keras2(model: object) -> bool:
    """Whether ``model`` is a Keras 2 (``tf_keras`` / ``tf.keras`` of TF <= 2.15) model."""
    module = type(model).__module__ or ""
    return module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")) or (
        not isinstance(model, keras.Model) and hasattr(model, "layers")
        and hasattr(model, "get_config") and hasattr(model, "save"))


def from_keras2(model: object) -> keras.Model:
    """A Keras 3 copy of a Keras 2 (``tf_keras``) model, through a legacy ``.h5`` file.

    Example:
        >>> k3 = from_keras2(tf_keras_model)  # doctest: +SKIP

    Raises:
        AAError: The model does not survive the round trip (e.g. custom layers); the message says
            how to do it by hand.
    """
    import os
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory(prefix="aa_tflite_keras2_") as folder:
        path = os.path.join(folder, "model.h5")
        try:
            with warnings.catch_warnings():  # "HDF5 is legacy": our own, temporary file
                warnings.simplefilter("ignore")
                model.save(path)
                return keras.saving.load_model(path, compile=False)
        except Exception as e:  # Keras 2 and 3 raise many types here
            raise AAError(
                f"This is a Keras 2 (tf_keras) model, and loading it in Keras 3 failed "
                f"({type(e).__name__}: {str(e)[:200]}). aa_tflite works on Keras 3 models: save "
                "it in Keras 2 with model.save('model.h5') and load it in Keras 3 with "
                "keras.saving.load_model('model.h5'), registering any custom layers.") from e


def check_model(model: object, where: str = "") -> None:
    """Raises an ``AAError`` that says what to do unless ``model`` is a built Sequential or
    Functional Keras 3 model."""
    if is_keras2(model):
        raise AAError(
            f"The model{where} is a Keras 2 (tf_keras) model; aa_tflite works on Keras 3 models. "
            "Save it in Keras 2 with model.save('model.h5') and load it in Keras 3 with "
            "keras.saving.load_model('model.h5') (the CLI takes .h5 files directly).")
    if not isinstance(model, keras.Model):
        raise AAError(f"Expected a keras.Model{where}. Received: {type(model).__name__}. "
                      "Load a saved model with keras.saving.load_model(path) first.")
    if not isinstance(model, (keras.Sequential, keras.src.models.functional.Functional)):
        raise AAError(
            f"{type(model).__name__}{where} is a subclassed keras.Model: its graph is Python code "
            "in call(), so its ReLUs cannot be found and replaced. Rebuild it as a Functional "
            "model (keras.Model(inputs, outputs)) or a keras.Sequential, or put "
            "aa_tflite.AAReLU layers in its call() yourself.")
    if not model.built or not model.inputs:
        raise AAError(f"The model{where} has no defined input. Build it first, for example with "
                      "keras.Input(shape=...) as its first layer, or by calling it on data.")


class _Rewriter:
    def __init__(self, configs: Mapping[str, SiteConfig], lowering: Lowering):
        self.configs = configs
        self.lowering = lowering
        self.sites: list[Site] = []
        self.weight_pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def aa_relu(self, prefix: str, name: str, kind: SiteKind, source: str,
                native_clip: float | None) -> AAReLU:
        site = Site(prefix + name, kind, source, native_clip)
        self.sites.append(site)
        cfg = self.configs.get(site.name, SiteConfig())
        clips = [c for c in (cfg.clip, native_clip) if c is not None]
        return AAReLU(threshold=cfg.threshold, clip=min(clips) if clips else None,
                      lowering=self.lowering.value, name=name)

    def copy(self, layer: keras.layers.Layer, **overrides) -> keras.layers.Layer:
        config = layer.get_config()
        config.update(overrides)
        new = layer.__class__.from_config(config)
        if layer.weights:
            self.weight_pairs.append((layer, new))
        return new

    def model(self, model: keras.Model, prefix: str) -> keras.Model:
        where = f" (nested as {prefix.rstrip('/')})" if prefix else ""
        check_model(model, where)
        used = {layer.name for layer in model.layers}

        def unique(name: str) -> str:
            candidate, k = name, 1
            while candidate in used:
                candidate, k = f"{name}_{k}", k + 1
            used.add(candidate)
            return candidate

        fused_relu: dict[int, AAReLU] = {}

        def transform(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
            if isinstance(layer, keras.Model):
                return [self.model(layer, prefix + layer.name + "/")]
            found = _site_kind(layer)
            if found is None:
                return [self.copy(layer)]
            kind, clip = found
            if kind is SiteKind.FUSED:
                new = self.copy(layer, activation="linear")
                relu = self.aa_relu(prefix, unique(f"{layer.name}_relu"), kind, layer.name, clip)
                fused_relu[id(new)] = relu
                return [new, relu]
            return [self.aa_relu(prefix, layer.name, kind, layer.name, clip)]

        # Inputs get fixed names: Keras' automatic ones count up through the process, and they
        # end up in the .tflite, so the same model would not give the same bytes twice.
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype,
                              name=f"{model.name}_input" + (f"_{k}" if k else ""))
                  for k, t in enumerate(model.inputs)]
        if isinstance(model, keras.Sequential):
            layers = [new for layer in model.layers for new in transform(layer)]
            return keras.Sequential(inputs + layers, name=model.name)

        def clone_function(layer):
            new = transform(layer)
            return new[0]

        def call_function(layer, *args, **kwargs):
            out = layer(*args, **kwargs)
            relu = fused_relu.get(id(layer))
            return relu(out) if relu is not None else out

        structured = inputs if isinstance(model.input, (list, tuple)) else inputs[0]
        return keras.models.clone_model(model, input_tensors=structured,
                                        clone_function=clone_function,
                                        call_function=call_function)


def site_layers(model: keras.Model, site: Site
                ) -> tuple[keras.Model, AAReLU, keras.layers.Layer | None]:
    """The container model, the ``AAReLU`` layer and (for a fused site) the producer of ``site``
    in a model made by ``rewrite``."""
    *path, name = site.name.split("/")
    container = model
    for part in path:
        container = container.get_layer(part)
    layer = container.get_layer(name)
    producer = container.get_layer(site.source_layer) if site.kind is SiteKind.FUSED else None
    return container, layer, producer


def rewrite(model: keras.Model, configs: Mapping[str, SiteConfig] | Plan | None = None, *,
            lowering: Lowering | str | None = None) -> Rewritten:
    """Returns a copy of ``model`` with an ``AAReLU`` at every ReLU site, and the sites.

    Sites are ReLU layers, ``Activation("relu"/"relu6")``, fused ``activation="relu"/"relu6"`` in
    Conv/Dense layers, and ``ReLU(max_value=...)`` (its bound is kept as the clip), in Sequential,
    Functional and nested models. The user's model is not modified.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 1)),
        ...                           keras.layers.Conv2D(4, 3, activation="relu")])
        >>> new, sites = rewrite(model, {"conv2d_relu": SiteConfig(threshold=0.1)})
        >>> [s.name for s in sites]  # doctest: +SKIP
        ['conv2d_relu']

    Args:
        model: A built Sequential or Functional Keras model.
        configs: Per-site configs keyed by site name, or a ``Plan``. Sites not named get
            ``SiteConfig()`` (threshold 0, the identity). Defaults to None.
        lowering: ``"shift"`` or ``"exact"``. Defaults to the plan's, else ``"shift"``.

    Returns:
        ``Rewritten(model, sites)``.

    Raises:
        AAError: The model is subclassed or unbuilt, has no ReLU, or ``configs`` names a site
            the model does not have.
    """
    if isinstance(configs, Plan):
        lowering = lowering if lowering is not None else configs.lowering
        configs = configs.sites
    configs = dict(configs or {})
    for name, cfg in configs.items():
        if not isinstance(cfg, SiteConfig):
            raise AAError(f"configs[{name!r}] must be a SiteConfig. Received: {type(cfg).__name__}")
    try:
        lowering = Lowering(lowering if lowering is not None else Lowering.SHIFT)
    except ValueError:
        raise AAError(f"lowering must be 'shift' or 'exact'. Received: {lowering!r}") from None
    rw = _Rewriter(configs, lowering)
    new_model = rw.model(model, "")
    if not rw.sites:
        raise AAError(f"Model {model.name!r} has no ReLU to rewrite (looked for ReLU layers, "
                      "Activation('relu'/'relu6') and activation='relu'/'relu6' in Conv/Dense "
                      "layers). aa_tflite works on ReLU networks only.")
    check_sites(configs, [s.name for s in rw.sites], "The configs")
    for old, new in rw.weight_pairs:
        new.set_weights(old.get_weights())
    return Rewritten(new_model, rw.sites)
