"""ImageNet-scale architectures with random weights, for scale, speed and runtime tests.

No pretrained weights are downloaded (``weights=None``); accuracy on these models means agreement
with the float model.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["calibrate_batchnorm", "mobilenet_v2", "resnet18", "vgg16"]


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> keras.Model:
    """Sets every BatchNormalization's moving mean and variance to its input's statistics on ``x``.

    With random weights and BN's initial statistics (mean 0, variance 1), activations shrink layer
    after layer until deep ReLUs output only zeros, which makes a useless benchmark. Normalising
    each BN on real inputs, in order (a data-dependent initialisation), keeps every layer alive.
    Modifies ``model`` in place and returns it.
    """
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, layer.input)
        v = np.asarray(probe.predict(x, verbose=0))
        axes = tuple(range(v.ndim - 1))
        layer.moving_mean.assign(v.mean(axis=axes))
        layer.moving_variance.assign(v.var(axis=axes))
    return model


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet18(*, input_shape: tuple[int, int, int] = (224, 224, 3), classes: int = 1000,
             seed: int = 0) -> keras.Model:
    """ResNet-18 (He et al. 2016, basic blocks [2, 2, 2, 2]) with random weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, 64, 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, filters in enumerate([64, 128, 256, 512]):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage + 1}b{block + 1}"
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _conv_bn(x, filters, 1, strides, f"{name}_down", relu=False)
            y = _conv_bn(x, filters, 3, strides, f"{name}_a")
            y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
            x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name="resnet18")


def mobilenet_v2(*, alpha: float = 0.35, input_shape: tuple[int, int, int] = (96, 96, 3),
                 classes: int = 1000, seed: int = 0) -> keras.Model:
    """Keras' MobileNetV2 (ReLU6 everywhere) with random weights."""
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha, weights=None,
                                          classes=classes, classifier_activation=None)


def vgg16(*, input_shape: tuple[int, int, int] = (224, 224, 3), classes: int = 1000,
          seed: int = 0) -> keras.Model:
    """Keras' VGG-16 (fused ReLU convs and Dense ReLUs) with random weights."""
    keras.utils.set_random_seed(seed)
    return keras.applications.VGG16(input_shape=input_shape, weights=None, classes=classes,
                                    classifier_activation=None)
