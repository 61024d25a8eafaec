"""Three models shaped like the ones users hand us, trained on real data (scikit-learn's digits,
offline): ``python -m converters.users --out DIR`` trains and saves them.

- ``two_heads``: one trunk, two softmax heads (the digit, and whether it is odd), like an
  age/gender network. Scored per head (top-1 each, averaged).
- ``stroke_segmenter``: a small encoder-decoder that maps a noisy digit to the mask of its strokes
  (a dense prediction, like edge detection or segmentation). Scored by IoU.
- ``relu_bn_cnn``: the older Keras pattern where every conv is ReLU then BatchNorm (the converter
  cannot fold those BatchNorms into the conv before them).
- ``dense_vgg``: a VGG-style classifier whose weights sit mostly in one large ``Dense`` layer
  (512 -> 128, 64 KiB of int8), the case where a per-point copy of a corrected kernel costs most.

Each ``train_*`` is deterministic (seeded, TensorFlow's deterministic ops) and returns the model and
its data: ``x_train``, ``x_cal``, ``x_val`` and the targets ``y_val`` (a list per output for
``two_heads``, masks for ``stroke_segmenter``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BUILDERS", "METRICS", "dense_vgg", "relu_bn_cnn", "stroke_segmenter", "train", "two_heads"]

NOISE = 0.25  # std of the Gaussian noise on the segmenter's inputs (digits are in [0, 1])


def two_heads(keras):
    """8x8x1 -> (digit class logits (10), odd/even logits (2))."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c3")(x)
    f = keras.layers.Flatten(name="flat")(x)
    digit = keras.layers.Dense(10, name="digit")(f)
    odd = keras.layers.Dense(2, name="odd")(keras.layers.Dense(16, activation="relu",
                                                               name="odd_hidden")(f))
    return keras.Model(i, [digit, odd], name="two_heads")


def stroke_segmenter(keras):
    """8x8x1 noisy digit -> 8x8x1 stroke probability (encoder-decoder with a residual skip)."""
    i = keras.Input((8, 8, 1))
    e1 = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="enc1")(i)
    e2 = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="enc2")(e1)
    m = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="mid")(e2)
    u = keras.layers.UpSampling2D(name="up")(m)
    d = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="dec1")(u)
    d = keras.layers.Add(name="skip")([d, e1])
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(d)
    return keras.Model(i, out, name="stroke_segmenter")


def relu_bn_cnn(keras):
    """8x8x1 -> 10 logits, every conv ReLU then BatchNorm."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(32, 3, padding="valid", activation="relu", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="c3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name="relu_bn_cnn")


def dense_vgg(keras):
    """8x8x1 -> 10 logits: conv16-conv32-pool, then Dense 128 with ReLU on the 512 features."""
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name="dense_vgg")


BUILDERS = {"two_heads": two_heads, "stroke_segmenter": stroke_segmenter,
            "relu_bn_cnn": relu_bn_cnn, "dense_vgg": dense_vgg}
# the metric each is scored by (aa_tflite.metrics): per output, or one for all
METRICS = {"two_heads": ["top1", "top1"], "stroke_segmenter": "iou", "relu_bn_cnn": "top1",
           "dense_vgg": "top1"}


def _data(which: str, seed: int) -> dict:
    """The digits split, with each model's inputs and targets."""
    from converters.data import load_digits_split

    d = load_digits_split(seed=seed)
    if which == "two_heads":
        d["y_train"] = [d["y_train"], d["y_train"] % 2]
        d["y_val"] = [d["y_val"], d["y_val"] % 2]
    elif which == "stroke_segmenter":
        rng = np.random.RandomState(seed)
        for split in ("train", "cal", "val"):
            clean = d[f"x_{split}"]
            if split != "cal":
                d[f"y_{split}"] = (clean > 0.5).astype(np.float32)
            d[f"x_{split}"] = (clean + rng.normal(0, NOISE, clean.shape)).astype(np.float32)
    return d


def train(which: str, *, seed: int = 0, epochs: int = 40):
    """Trains one model deterministically on the digits; returns (model, data)."""
    import keras

    from converters.train import train_clean

    if which not in BUILDERS:
        raise ValueError(f"Unknown model {which!r}; choose from {sorted(BUILDERS)}")
    data = _data(which, seed)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = {"two_heads": [ce, ce], "stroke_segmenter": "binary_crossentropy",
            "relu_bn_cnn": ce, "dense_vgg": ce}[which]
    return train_clean(lambda: BUILDERS[which](keras), data, epochs=epochs, seed=seed,
                       loss=loss), data


def main() -> None:
    from converters.train import save_each

    save_each(__doc__, BUILDERS, train, lambda model, data: "saved")


if __name__ == "__main__":
    main()
