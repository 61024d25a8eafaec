"""A fully convolutional ReLU CNN on scikit-learn's 8x8 digits, trained at several input sizes so
one set of weights serves 4x4, 6x6 and 8x8 inputs: the demo's points that differ in what a
device pays (TFLite Micro arena, latency) and in accuracy.

Run ``python -m converters.digits_fcn --out aa_tflite/data`` to rebuild the package's embedded
``digits_fcn.keras`` (it reads the same ``digits.npz`` split as the default model).
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

from converters.data import load_digits_split

__all__ = ["SIZES", "build", "train"]

SIZES = (4, 6, 8)  # the input sizes it is trained at (8 is the digits' own)


def build(size: int | None = 8, *, name: str = "digits_fcn") -> keras.Model:
    """Three 3x3 convs with ReLU (the second strided), global average pooling, a Dense layer:
    fully convolutional up to the pooling, so it runs at any input size."""
    i = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(i)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(10, name="logits")(x), name=name)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    from aa_tflite.frontend.resize import resize

    return x if x.shape[1] == size else resize(x, size)


def train(*, seed: int = 0, epochs: int = 40) -> tuple[keras.Model, dict]:
    """Trains deterministically, one epoch at each size in turn; returns the 8x8 model and its
    data split (8x8)."""
    import tensorflow as tf

    data = load_digits_split(seed=seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build(None)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scaled = {s: _resize(data["x_train"], s) for s in SIZES}
    for _ in range(epochs):
        for s in SIZES:
            model.fit(scaled[s], data["y_train"], epochs=1, batch_size=64, shuffle=True,
                      verbose=0)
    out = build(8)
    out.set_weights(model.get_weights())
    return out, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="aa_tflite/data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, data = train(seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "digits_fcn.keras"))
    sized = build(None)
    sized.set_weights(model.get_weights())
    for s in SIZES:
        pred = sized.predict(_resize(data["x_val"], s), verbose=0).argmax(1)
        print(f"{s}x{s}: float top-1 on the held-out split {np.mean(pred == data['y_val']):.4f}")


if __name__ == "__main__":
    main()
