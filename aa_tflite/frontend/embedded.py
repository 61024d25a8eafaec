"""The embedded models: a small ReLU CNN trained on scikit-learn's digits (the default), a fully
convolutional one trained at several input sizes, and their data."""

from __future__ import annotations

import importlib.resources
from typing import NamedTuple

import numpy as np

__all__ = ["EMBEDDED", "DefaultModel", "default_data", "load_default"]


class DefaultModel(NamedTuple):
    """The embedded model with calibration inputs and held-out labelled data."""

    model: object  # keras.Model
    x_cal: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


EMBEDDED = ("digits_cnn", "digits_fcn")


def load_default(name: str = "digits_cnn") -> DefaultModel:
    """Loads an embedded digits model (8x8x1 inputs, 10 classes) and its data.

    ``"digits_cnn"`` (the default model) was trained by ``converters/digits_cnn.py``;
    ``"digits_fcn"``, fully convolutional and trained at 4x4, 6x6 and 8x8 inputs so it runs at
    each (``input_sizes``), by ``converters/digits_fcn.py``. ``x_cal`` comes from their training
    split, ``x_val``/``y_val`` were held out from training.

    Example:
        >>> model, x_cal, x_val, y_val = load_default()  # doctest: +SKIP
        >>> load_default("digits_fcn").model.name  # doctest: +SKIP
        'digits_fcn'

    Raises:
        AAError: ``name`` is not an embedded model.
    """
    import keras

    from aa_tflite.frontend import layers  # noqa: F401  (registers AAReLU for loading)
    from aa_tflite.types import AAError

    if name not in EMBEDDED:
        raise AAError(f"No embedded model {name!r}; the embedded models are {list(EMBEDDED)}.")
    root = importlib.resources.files("aa_tflite") / "data"
    with importlib.resources.as_file(root / f"{name}.keras") as path:
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
