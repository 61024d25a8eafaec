"""rewrite(): sites in Sequential, Functional and nested models; the user's model is untouched."""

import keras
import numpy as np
import pytest

from aa_tflite.frontend.layers import AAReLU
from aa_tflite.frontend.rewrite import rewrite
from aa_tflite.types import AAError, SiteConfig, SiteKind
from tests.conftest import tiny_nested_functional


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_sequential_sites_and_identity(digits):
    model = digits.model
    before = _weights(model)
    layer_ids = [id(layer) for layer in model.layers]
    new, sites = rewrite(model)
    assert [s.name for s in sites] == ["conv1_relu", "conv2_relu", "conv3_relu", "fc1_relu"]
    assert all(s.kind is SiteKind.FUSED for s in sites)
    assert isinstance(new, keras.Sequential)
    x = digits.x_val[:32]
    assert np.array_equal(np.asarray(new(x)), np.asarray(model(x)))
    # The user's model is not modified.
    assert [id(layer) for layer in model.layers] == layer_ids
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.get_layer("conv1").get_config()["activation"] == "relu"


def test_functional_nested_sites_kinds_and_clip():
    model = tiny_nested_functional()
    new, sites = rewrite(model)
    by_name = {s.name: s for s in sites}
    assert list(by_name) == ["c1_relu", "inner/iconv_relu", "inner/irelu6", "act", "fc_relu"]
    assert by_name["inner/irelu6"].native_clip == 6.0
    assert by_name["inner/irelu6"].kind is SiteKind.RELU_LAYER
    assert by_name["act"].kind is SiteKind.ACTIVATION
    x = np.random.RandomState(1).rand(4, 16, 16, 3).astype(np.float32)
    assert np.array_equal(np.asarray(new(x)), np.asarray(model(x)))
    aa = new.get_layer("inner").get_layer("irelu6")
    assert isinstance(aa, AAReLU) and aa.clip == 6.0


def test_configs_reach_the_named_site_only():
    model = tiny_nested_functional()
    new, _ = rewrite(model, {"inner/iconv_relu": SiteConfig(threshold=0.3, clip=2.0)},
                     lowering="exact")
    aa = new.get_layer("inner").get_layer("iconv_relu")
    assert (aa.threshold, aa.clip, aa.lowering) == (0.3, 2.0, "exact")
    assert new.get_layer("c1_relu").threshold == 0.0
    # A config clip never loosens a native bound.
    new, _ = rewrite(model, {"inner/irelu6": SiteConfig(clip=9.0)})
    assert new.get_layer("inner").get_layer("irelu6").clip == 6.0


def test_activation_relu6_and_leaky_relu():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu6"),
                              keras.layers.LeakyReLU(), keras.layers.ReLU(negative_slope=0.1),
                              keras.layers.Activation("relu6")])
    _, sites = rewrite(model)
    assert [(s.kind, s.native_clip) for s in sites] == [(SiteKind.FUSED, 6.0),
                                                       (SiteKind.ACTIVATION, 6.0)]


def test_rewrite_is_idempotent_on_a_rewritten_model():
    model = tiny_nested_functional()
    once, sites = rewrite(model)
    twice, sites2 = rewrite(once)
    assert [s.name for s in sites2] == [s.name for s in sites]


def test_subclassed_model_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(4, activation="relu")

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(AAError, match="subclassed.*Functional"):
        rewrite(net)


def test_no_relu_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="tanh")])
    with pytest.raises(AAError, match="no ReLU"):
        rewrite(model)


def test_unknown_site_error_lists_the_sites():
    with pytest.raises(AAError, match="c1_relu"):
        rewrite(tiny_nested_functional(), {"nope": SiteConfig()})


def test_not_a_model_error():
    with pytest.raises(AAError, match="keras.Model"):
        rewrite("model.keras")
