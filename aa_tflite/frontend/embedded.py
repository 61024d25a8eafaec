"""The embedded default: a small ReLU CNN trained on scikit-learn's digits, and its data."""

from __future__ import annotations

import importlib.resources
from typing import NamedTuple

import numpy as np

__all__ = ["DefaultModel", "default_data", "load_default"]


class DefaultModel(NamedTuple):
    """The embedded model with calibration inputs and held-out labelled data."""

    model: object  # keras.Model
    x_cal: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_default() -> DefaultModel:
    """Loads the embedded digits CNN (8x8x1 inputs, 10 classes) and its data.

    The model was trained by ``converters/digits_cnn.py``; ``x_cal`` comes from its training split,
    ``x_val``/``y_val`` were held out from training.

    Example:
        >>> model, x_cal, x_val, y_val = load_default()  # doctest: +SKIP
    """
    import keras

    from aa_tflite.frontend import layers  # noqa: F401  (registers AAReLU for loading)

    root = importlib.resources.files("aa_tflite") / "data"
    with importlib.resources.as_file(root / "digits_cnn.keras") as path:
        model = keras.saving.load_model(path)
    return DefaultModel(model, *default_data())


def default_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded model's data, ``(x_cal, x_val, y_val)``, without loading the model (no
    TensorFlow import).

    Example:
        >>> x_cal, x_val, y_val = default_data()
        >>> x_cal.shape[1:], x_val.shape == (len(y_val), 8, 8, 1)
        ((8, 8, 1), True)
    """
    root = importlib.resources.files("aa_tflite") / "data"
    with importlib.resources.as_file(root / "digits.npz") as path, np.load(path) as d:
        return (d["x_cal"].astype(np.float32) / 16.0, d["x_val"].astype(np.float32) / 16.0,
                d["y_val"].astype(np.int64))
