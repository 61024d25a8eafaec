"""AAReLU: argument checks, identity with keras.layers.ReLU, formulas, serialisation."""

import inspect

import keras
import numpy as np
import pytest

from aa_tflite.frontend.layers import AAReLU

X = np.linspace(-3, 9, 97, dtype=np.float32).reshape(1, 97)


@pytest.mark.parametrize("lowering", ["shift", "exact"])
@pytest.mark.parametrize("max_value", [None, 6.0, 2.5])
def test_threshold_zero_is_keras_relu(lowering, max_value):
    ours = np.asarray(AAReLU(clip=max_value, lowering=lowering)(X))
    theirs = np.asarray(keras.layers.ReLU(max_value=max_value)(X))
    assert np.array_equal(ours, theirs)


def test_formulas():
    t, m = 1.0, 5.0
    shift = np.asarray(AAReLU(threshold=t, clip=m, lowering="shift")(X))
    exact = np.asarray(AAReLU(threshold=t, clip=m, lowering="exact")(X))
    np.testing.assert_allclose(shift, np.minimum(np.maximum(X - t, 0), m))
    np.testing.assert_allclose(exact, np.where(X >= t, np.minimum(X, m), 0))
    # The same zeros, except at x == T exactly, which the exact form keeps.
    assert np.array_equal(shift == 0, X <= t)
    assert np.array_equal(exact == 0, X < t)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"threshold": -0.1}, "Received: threshold=-0.1"),
    ({"threshold": "a"}, "Received: threshold=a"),
    ({"threshold": 1.0, "clip": 1.0}, "Received: clip=1.0"),
    ({"clip": float("inf")}, "Received: clip=inf"),
    ({"lowering": "soft"}, "Received: lowering='soft'"),
])
def test_arguments_are_checked(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        AAReLU(**kwargs)


def test_get_config_lists_exactly_the_init_arguments():
    config = AAReLU(threshold=0.5, clip=3.0, lowering="exact", name="x").get_config()
    own = set(inspect.signature(AAReLU.__init__).parameters) - {"self", "kwargs"}
    assert own <= set(config)
    assert {k: config[k] for k in own} == {"threshold": 0.5, "clip": 3.0, "lowering": "exact"}


def test_keras_save_load_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((97,)),
                              AAReLU(threshold=0.75, clip=4.0, lowering="exact", name="aa")])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("aa")
    assert isinstance(layer, AAReLU)
    assert (layer.threshold, layer.clip, layer.lowering) == (0.75, 4.0, "exact")
    assert np.array_equal(np.asarray(loaded(X)), np.asarray(model(X)))
