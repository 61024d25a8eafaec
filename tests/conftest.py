"""Shared fixtures: the embedded digits model, tiny models, committed .tflite fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture_bytes(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


@pytest.fixture(scope="session")
def digits():
    from aa_tflite.frontend.embedded import load_default

    return load_default()


@pytest.fixture(scope="session")
def digits_data():
    """The digits model's data alone (no TensorFlow): ``.x_cal``, ``.x_val``, ``.y_val``."""
    import types

    from aa_tflite.frontend.embedded import default_data

    x_cal, x_val, y_val = default_data()
    return types.SimpleNamespace(x_cal=x_cal, x_val=x_val, y_val=y_val)


@pytest.fixture(scope="session")
def digits_points(digits):
    """The demo's three-point conversion of the digits model (``DEMO_BUDGETS``), made once per
    session and shared by the points, targets, web and Android tests."""
    import aa_tflite
    from tests.helpers import DEMO_BUDGETS, points_kwargs

    return aa_tflite.convert(digits.model, budget_kb=list(DEMO_BUDGETS), **points_kwargs(digits))


@pytest.fixture(scope="session")
def digits_tflite() -> bytes:
    return fixture_bytes("digits_int8.tflite")


@pytest.fixture(scope="session")
def mnist1d_tflite() -> bytes:
    return fixture_bytes("mnist1d_int8.tflite")


def tiny_nested_functional(seed: int = 0):
    """16x16x3 Functional model with a nested Sequential, BN, a residual add and ReLU6."""
    import keras

    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([
        keras.Input((8, 8, 8)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="iconv"),
        keras.layers.ReLU(max_value=6.0, name="irelu6"),
    ], name="inner")
    i = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    y = inner(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Activation("relu", name="act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(i, keras.layers.Dense(4, name="out")(x), name="tiny")


@pytest.fixture()
def tiny_model():
    return tiny_nested_functional()


@pytest.fixture(scope="session")
def tiny_data():
    return np.random.RandomState(0).rand(48, 16, 16, 3).astype(np.float32)
