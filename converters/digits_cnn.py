"""A small ReLU CNN on scikit-learn's 8x8 digits. Trains in a few seconds on 2 cores.

Run ``python -m converters.digits_cnn --out aa_tflite/data`` to rebuild the package's embedded
default model (``digits_cnn.keras``) and its data (``digits.npz``).
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

from converters.data import load_digits_split
from converters.train import accuracy, train_clean

__all__ = ["build", "train"]


def build(*, name: str = "digits_cnn") -> keras.Model:
    """The architecture, untrained: three 3x3 convs (fused ReLU), max-pool, a Dense ReLU."""
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="logits"),
    ], name=name)


def train(*, seed: int = 0, epochs: int = 40) -> tuple[keras.Model, dict]:
    """Trains the digits CNN deterministically; returns the model and its data split."""
    data = load_digits_split(seed=seed)
    return train_clean(build, data, epochs=epochs, seed=seed), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="aa_tflite/data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, data = train(seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "digits_cnn.keras"))
    # Digits pixels are 0..16: store them as uint8 counts, exactly.
    np.savez_compressed(os.path.join(args.out, "digits.npz"),
                        x_cal=np.round(data["x_cal"] * 16).astype(np.uint8),
                        x_val=np.round(data["x_val"] * 16).astype(np.uint8),
                        y_val=data["y_val"].astype(np.uint8))
    print(f"float top-1 on the held-out split: {accuracy(model, data['x_val'], data['y_val']):.4f}")


if __name__ == "__main__":
    main()
