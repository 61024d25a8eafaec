"""Reference recipes: deterministic training, offline data, scale builders."""

import keras
import numpy as np
import pytest

from aa_tflite.frontend.rewrite import rewrite
from converters import digits_cnn, imagenet
from converters.data import load_digits_split, load_mnist1d_split


def test_data_splits_are_disjoint_and_offline():
    d = load_digits_split()
    assert d["x_train"].shape[1:] == (8, 8, 1) and len(d["x_val"]) == 500
    assert not any(np.array_equal(v, t) for v in d["x_val"][:20] for t in d["x_cal"])
    m = load_mnist1d_split()
    assert m["x_train"].shape[1:] == (40, 1) and len(m["x_val"]) == 1000
    assert set(np.unique(m["y_val"])) == set(range(10))


def test_training_is_deterministic():
    a, _ = digits_cnn.train(epochs=1)
    b, _ = digits_cnn.train(epochs=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_embedded_default_matches_its_recipe_architecture(digits):
    assert [type(layer) for layer in digits.model.layers] == \
        [type(layer) for layer in digits_cnn.build().layers]
    float_acc = np.mean(np.argmax(digits.model.predict(digits.x_val, verbose=0), 1) == digits.y_val)
    assert float_acc > 0.95


@pytest.mark.parametrize("builder, kwargs, n_sites", [
    (imagenet.resnet18, {"input_shape": (32, 32, 3), "classes": 10}, 17),
    (imagenet.mobilenet_v2, {"alpha": 0.35, "input_shape": (96, 96, 3)}, 35),
    (imagenet.vgg16, {"input_shape": (32, 32, 3), "classes": 10}, 15),
])
def test_scale_builders_rewrite(builder, kwargs, n_sites):
    model = builder(**kwargs)
    new, sites = rewrite(model)
    assert len(sites) == n_sites
    x = np.random.RandomState(0).rand(2, *kwargs["input_shape"]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(new(x)), np.asarray(model(x)))
    keras.backend.clear_session()


def test_calibrate_batchnorm_normalises_each_bn_on_the_data():
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(i)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(i, keras.layers.ReLU()(x))
    data = np.random.RandomState(0).rand(32, 8, 8, 3).astype(np.float32) * 5 + 3
    imagenet.calibrate_batchnorm(model, data)
    out = np.asarray(keras.Model(i, model.get_layer("bn").output)(data, training=False))
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-2)


@pytest.mark.parametrize("name, n_sites", [("mini_resnet", 5), ("mini_vgg", 6),
                                           ("mini_mobilenet", 7)])
def test_miniatures_build_in_keras3_and_rewrite(name, n_sites):
    from converters import mini

    model = mini.BUILDERS[name](keras)
    assert model.inputs[0].shape[1:] == (8, 8, 1) and model.outputs[0].shape[-1] == 10
    _, sites = rewrite(model)
    assert len(sites) == n_sites
