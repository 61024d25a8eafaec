"""Miniatures of the paper's three architecture families, trained on scikit-learn's 8x8 digits.

* ``mini_resnet``: residual blocks (conv-BN-ReLU, conv-BN, ``Add``, ReLU), a strided stage with a
  1x1 projection shortcut, global average pooling.
* ``mini_vgg``: plain 3x3 conv stacks with fused ReLU and max-pooling, then Dense ReLU layers.
* ``mini_mobilenet``: depthwise-separable blocks with BN and ReLU6, global average pooling.

The builders take the ``keras`` module as an argument and use only layers that Keras 2.15
(``tf.keras``) and Keras 3 share, so the benchmark can rebuild the same architecture in the Sony MCT
environment (TensorFlow 2.15) and copy the trained weights across with ``get_weights``.

Run ``python -m converters.mini --out DIR`` to train all three and save them as ``.keras``.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["BUILDERS", "mini_mobilenet", "mini_resnet", "mini_vgg", "train"]


def _conv_bn(keras, x, filters: int, kernel: int, strides: int, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def mini_resnet(keras, *, name: str = "mini_resnet"):
    """Two residual stages (16 then 32 channels) on 8x8x1 inputs."""
    i = keras.Input((8, 8, 1))
    x = _conv_bn(keras, i, 16, 3, 1, "stem")
    for stage, (filters, strides) in enumerate([(16, 1), (32, 2)]):
        tag = f"s{stage + 1}"
        shortcut = x
        if strides != 1:
            shortcut = _conv_bn(keras, x, filters, 1, strides, f"{tag}_down", relu=False)
        y = _conv_bn(keras, x, filters, 3, strides, f"{tag}_a")
        y = _conv_bn(keras, y, filters, 3, 1, f"{tag}_b", relu=False)
        x = keras.layers.Add(name=f"{tag}_add")([y, shortcut])
        x = keras.layers.ReLU(name=f"{tag}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


def mini_vgg(keras, *, name: str = "mini_vgg"):
    """conv16-conv16-pool-conv32-conv32-pool, then Dense 64 and 32 with ReLU."""
    i = keras.Input((8, 8, 1))
    x = i
    for block, filters in enumerate([16, 32]):
        for k in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    name=f"b{block + 1}_conv{k + 1}")(x)
        x = keras.layers.MaxPooling2D(name=f"b{block + 1}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc2")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


def mini_mobilenet(keras, *, name: str = "mini_mobilenet"):
    """A 3x3 stem and three depthwise-separable blocks (BN, ReLU6), the second one strided."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(i)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu")(x)
    for k, (filters, strides) in enumerate([(32, 1), (64, 2), (64, 1)]):
        tag = f"ds{k + 1}"
        x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                         name=f"{tag}_dw")(x)
        x = keras.layers.BatchNormalization(name=f"{tag}_dw_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{tag}_dw_relu")(x)
        x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{tag}_pw")(x)
        x = keras.layers.BatchNormalization(name=f"{tag}_pw_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{tag}_pw_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


BUILDERS = {"mini_resnet": mini_resnet, "mini_vgg": mini_vgg, "mini_mobilenet": mini_mobilenet}


def train(which: str, *, seed: int = 0, epochs: int = 40):
    """Trains one miniature on the digits split deterministically; returns (model, data)."""
    import keras

    from converters.data import load_digits_split
    from converters.train import train_clean

    if which not in BUILDERS:
        raise ValueError(f"Unknown model {which!r}; choose from {sorted(BUILDERS)}")
    data = load_digits_split(seed=seed)
    return train_clean(lambda: BUILDERS[which](keras), data, epochs=epochs, seed=seed), data


def main() -> None:
    from converters.train import accuracy

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for which in BUILDERS:
        model, data = train(which)
        model.save(os.path.join(args.out, f"{which}.keras"))
        print(f"{which}: float top-1 {accuracy(model, data['x_val'], data['y_val']):.4f}")


if __name__ == "__main__":
    main()
