"""Deterministic training shared by the recipes."""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["accuracy", "fit_deterministic", "save_each", "train_clean"]


def fit_deterministic(model: keras.Model, data: dict, *, epochs: int, seed: int = 0,
                      batch_size: int = 64, learning_rate: float = 2e-3,
                      loss=None) -> keras.Model:
    """Trains ``model`` on ``data["x_train"], data["y_train"]`` with every source of randomness
    seeded and TensorFlow's deterministic ops, so the same call gives the same weights.
    ``loss`` defaults to cross-entropy on logits (then accuracy is tracked too)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    default = loss is None
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                  if default else loss, metrics=["accuracy"] if default else None)
    model.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=batch_size,
              shuffle=True, verbose=0)
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def train_clean(build, data: dict, *, epochs: int, seed: int = 0, loss=None) -> keras.Model:
    """Trains ``build()`` deterministically and returns a fresh copy of it with the trained
    weights and no optimizer state, so the saved file holds only the model."""
    keras.utils.set_random_seed(seed)
    trained = fit_deterministic(build(), data, epochs=epochs, seed=seed, loss=loss)
    model = build()
    model.set_weights(trained.get_weights())
    return model


def save_each(description: str, names, train, say) -> None:
    """The command line of a recipe module: trains each of ``names`` (``train(name)`` gives
    ``(model, data)``), saves it as ``--out/NAME.keras`` and prints ``say(model, data)``."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        model, data = train(name)
        model.save(os.path.join(args.out, f"{name}.keras"))
        print(f"{name}: {say(model, data)}")
