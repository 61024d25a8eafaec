"""Miniatures of the paper's three architecture families, and of three more reference
architectures, trained on scikit-learn's 8x8 digits.

* ``mini_resnet``: residual blocks (conv-BN-ReLU, conv-BN, ``Add``, ReLU), a strided stage with a
  1x1 projection shortcut, global average pooling.
* ``mini_vgg``: plain 3x3 conv stacks with fused ReLU and max-pooling, then Dense ReLU layers.
* ``mini_mobilenet``: depthwise-separable blocks with BN and ReLU6, global average pooling.
* ``mini_xception``: Xception's entry and middle flow in miniature: a conv-BN-ReLU stem, then
  residual blocks of ``SeparableConv2D``-BN whose ReLUs come *before* each separable conv, so
  the branch ends in a separable conv and BN with no activation and the ``Add`` (and the strided
  block's 1x1 conv-BN shortcut and max-pooling) hold signed tensors, as in Xception; an exit
  separable conv-BN-ReLU, global average pooling.
* ``mini_squeezenet``: SqueezeNet fire modules (1x1 squeeze conv with ReLU, then 1x1 and 3x3
  expand convs with ReLU joined by ``Concatenate``) around a max-pool, global average pooling.
* ``mini_mobilenetv2``: MobileNetV2 inverted residual blocks (1x1 expand conv-BN-ReLU6, 3x3
  depthwise-BN-ReLU6, 1x1 project conv-BN with no activation: the linear bottleneck), with an
  ``Add`` where the stride is 1 and the channels match, one strided block, a 1x1 conv-BN-ReLU6
  head, global average pooling.

The builders take the ``keras`` module as an argument and use only layers that Keras 2.15
(``tf.keras``) and Keras 3 share, so the benchmark can rebuild the same architecture in the Sony MCT
environment (TensorFlow 2.15) and copy the trained weights across with ``get_weights``.

Run ``python -m converters.mini --out DIR`` to train them all and save them as ``.keras``.
"""

from __future__ import annotations

__all__ = [
    "BUILDERS",
    "mini_mobilenet",
    "mini_mobilenetv2",
    "mini_resnet",
    "mini_squeezenet",
    "mini_vgg",
    "mini_xception",
    "train",
]


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


def _sep_bn(keras, x, filters: int, name: str):
    """Xception's unit: a bias-free separable conv and BN, with no activation after them."""
    x = keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                                     name=f"{name}_sepconv")(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def mini_xception(keras, *, name: str = "mini_xception"):
    """A 3x3 stem (16), a strided entry block (32), a middle block (32), an exit sepconv (64).

    As in Xception, each ReLU comes before a separable conv, so a block's branch ends in
    sepconv-BN and its ``Add`` takes and gives signed tensors; the next block's first ReLU
    reads the sum, while the shortcut carries the sum itself.
    """
    i = keras.Input((8, 8, 1))
    x = _conv_bn(keras, i, 16, 3, 1, "stem")
    # Entry block (Xception's block2): its input is the stem's ReLU, so no leading ReLU.
    shortcut = keras.layers.Conv2D(32, 1, strides=2, padding="same", use_bias=False,
                                   name="entry_down_conv")(x)
    shortcut = keras.layers.BatchNormalization(name="entry_down_bn")(shortcut)
    y = _sep_bn(keras, x, 32, "entry_a")
    y = keras.layers.ReLU(name="entry_a_relu")(y)
    y = _sep_bn(keras, y, 32, "entry_b")
    y = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="entry_pool")(y)
    x = keras.layers.Add(name="entry_add")([y, shortcut])
    # Middle block: identity shortcut, ReLU before every separable conv.
    y = x
    for k in "ab":
        y = keras.layers.ReLU(name=f"middle_{k}_relu")(y)
        y = _sep_bn(keras, y, 32, f"middle_{k}")
    x = keras.layers.Add(name="middle_add")([y, x])
    # Exit: separable conv-BN-ReLU, then pooling.
    x = keras.layers.ReLU(name="exit_in_relu")(x)
    x = _sep_bn(keras, x, 64, "exit")
    x = keras.layers.ReLU(name="exit_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


def _fire(keras, x, squeeze: int, expand: int, name: str):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expand joined channel-wise."""
    s = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    e1 = keras.layers.Conv2D(expand, 1, activation="relu", name=f"{name}_expand1x1")(s)
    e3 = keras.layers.Conv2D(expand, 3, padding="same", activation="relu",
                             name=f"{name}_expand3x3")(s)
    return keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])


def mini_squeezenet(keras, *, name: str = "mini_squeezenet"):
    """A 3x3 stem (16), fire modules 8/16 and 8/16, a max-pool, fire 12/24, then pooling."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem_conv")(i)
    x = _fire(keras, x, 8, 16, "fire2")
    x = _fire(keras, x, 8, 16, "fire3")
    x = keras.layers.MaxPooling2D(name="pool3")(x)
    x = _fire(keras, x, 12, 24, "fire4")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


def inverted_residual(keras, x, *, expand: int, filters: int, strides: int, tag: str):
    """One MobileNetV2 block on ``x``: 1x1 expand + ReLU6, 3x3 depthwise (``strides``) + ReLU6,
    linear 1x1 projection, each with BatchNorm; ``Add`` where stride 1 and channels match."""
    y = keras.layers.Conv2D(expand, 1, use_bias=False, name=f"{tag}_expand")(x)
    y = keras.layers.BatchNormalization(name=f"{tag}_expand_bn")(y)
    y = keras.layers.ReLU(max_value=6.0, name=f"{tag}_expand_relu")(y)
    y = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                     name=f"{tag}_dw")(y)
    y = keras.layers.BatchNormalization(name=f"{tag}_dw_bn")(y)
    y = keras.layers.ReLU(max_value=6.0, name=f"{tag}_dw_relu")(y)
    y = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{tag}_project")(y)
    y = keras.layers.BatchNormalization(name=f"{tag}_project_bn")(y)  # linear bottleneck
    if strides == 1 and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{tag}_add")([x, y])
    return y


def mini_mobilenetv2(keras, *, name: str = "mini_mobilenetv2"):
    """A 3x3 stem (16) and four inverted residual blocks (expansion 3; 16, 24 strided, 24, 32),
    each projecting linearly; ``Add`` where stride 1 and channels match; a 1x1 head (64)."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(i)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu")(x)
    for k, (filters, strides) in enumerate([(16, 1), (24, 2), (24, 1), (32, 1)]):
        x = inverted_residual(keras, x, expand=3 * x.shape[-1], filters=filters,
                              strides=strides, tag=f"ir{k + 1}")
    x = keras.layers.Conv2D(64, 1, use_bias=False, name="head_conv")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


BUILDERS = {"mini_resnet": mini_resnet, "mini_vgg": mini_vgg, "mini_mobilenet": mini_mobilenet,
            "mini_xception": mini_xception, "mini_squeezenet": mini_squeezenet,
            "mini_mobilenetv2": mini_mobilenetv2}


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
    from converters.train import accuracy, save_each

    save_each(__doc__, BUILDERS, train, lambda model, data: f"float top-1 "
              f"{accuracy(model, data['x_val'], data['y_val']):.4f}")


if __name__ == "__main__":
    main()
