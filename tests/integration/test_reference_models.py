"""The Xception, SqueezeNet and MobileNetV2 miniatures: they are what they claim, and convert."""

import keras
import pytest

from aa_tflite.frontend.export import export
from aa_tflite.tflite import flatbuffer
from converters import mini
from converters.data import load_digits_split

ACTIVATIONS = (keras.layers.ReLU, keras.layers.Activation)


def _parents(layer) -> list:
    """The layers whose outputs ``layer`` reads (one-node layers, as in the builders)."""
    inputs = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
    return [t._keras_history.operation for t in inputs]


def _children(model, layer) -> list:
    return [other for other in model.layers[1:] if layer in _parents(other)]


def _count(model, cls) -> int:
    return sum(type(layer) is cls for layer in model.layers)


def _check_xception(model):
    seps = [la for la in model.layers if isinstance(la, keras.layers.SeparableConv2D)]
    assert len(seps) == 5 and not any(s.use_bias for s in seps)
    adds = [la for la in model.layers if isinstance(la, keras.layers.Add)]
    assert len(adds) == 2
    for add in adds:  # the sum is taken before any ReLU: signed tensors, as in Xception
        assert not any(isinstance(p, ACTIVATIONS) for p in _parents(add))
    # The strided block's shortcut is a 1x1 stride-2 conv and BN.
    short = [p for p in _parents(model.get_layer("entry_add"))
             if isinstance(p, keras.layers.BatchNormalization)]
    conv = _parents(short[0])[0]
    assert isinstance(conv, keras.layers.Conv2D) and conv.kernel_size == (1, 1)
    assert conv.strides == (2, 2)
    # Every separable conv is followed by BN; a ReLU reads it or the branch goes on unactivated.
    for s in seps:
        (bn,) = _children(model, s)
        assert isinstance(bn, keras.layers.BatchNormalization)
        assert s.activation is keras.activations.linear


def _check_squeezenet(model):
    concats = [la for la in model.layers if isinstance(la, keras.layers.Concatenate)]
    assert len(concats) == 3
    for c in concats:
        e1, e3 = _parents(c)
        assert e1.kernel_size == (1, 1) and e3.kernel_size == (3, 3)
        (squeeze,) = _parents(e1)
        assert _parents(e3) == [squeeze] and squeeze.kernel_size == (1, 1)
        assert squeeze.filters < e1.filters + e3.filters
        for conv in (squeeze, e1, e3):
            assert conv.activation is keras.activations.relu
    assert _count(model, keras.layers.MaxPooling2D) == 1


def _check_mobilenetv2(model):
    assert _count(model, keras.layers.DepthwiseConv2D) == 4
    adds = [la for la in model.layers if isinstance(la, keras.layers.Add)]
    assert len(adds) == 2
    projects = [la for la in model.layers if la.name.endswith("_project")]
    assert len(projects) == 4
    for conv in projects:  # linear bottleneck: conv-BN and then no activation anywhere after
        assert isinstance(conv, keras.layers.Conv2D) and conv.kernel_size == (1, 1)
        assert conv.activation is keras.activations.linear
        (bn,) = _children(model, conv)
        assert isinstance(bn, keras.layers.BatchNormalization)
        after = _children(model, bn)
        assert after and not any(isinstance(la, ACTIVATIONS) for la in after)
    for add in adds:
        assert any(p.name.endswith("_project_bn") for p in _parents(add))
    # Each depthwise conv is preceded by a 1x1 expansion with more channels than the block input.
    for dw in (la for la in model.layers if isinstance(la, keras.layers.DepthwiseConv2D)):
        (relu,) = _parents(dw)
        assert isinstance(relu, keras.layers.ReLU) and float(relu.max_value) == 6.0
        expand = _parents(_parents(relu)[0])[0]
        assert expand.kernel_size == (1, 1)
        assert expand.filters > _parents(expand)[0].output.shape[-1]


CASES = {
    # name: (structure check, op -> count in the int8 .tflite)
    "mini_xception": (_check_xception, {"ADD": 2, "DEPTHWISE_CONV_2D": 5, "MAX_POOL_2D": 1}),
    "mini_squeezenet": (_check_squeezenet, {"CONCATENATION": 3, "MAX_POOL_2D": 1}),
    "mini_mobilenetv2": (_check_mobilenetv2, {"ADD": 2, "DEPTHWISE_CONV_2D": 4}),
}


@pytest.fixture(scope="module")
def x_cal():
    return load_digits_split()["x_cal"][:64]


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_model_structure_and_int8_export(name, x_cal):
    check, expected_ops = CASES[name]
    assert name in mini.BUILDERS
    keras.utils.set_random_seed(0)
    model = mini.BUILDERS[name](keras)
    assert model.name == name
    assert model.inputs[0].shape[1:] == (8, 8, 1) and model.outputs[0].shape[-1] == 10
    assert model.count_params() < 30_000
    check(model)

    ex = export(model, None, representative_data=x_cal, io_dtype="int8")
    ops, tensors = flatbuffer.describe(flatbuffer.read(ex.tflite))
    names = [op.name for op in ops]
    for op, n in expected_ops.items():
        assert names.count(op) == n, (op, names)
    assert names[-1] == "FULLY_CONNECTED"
    # Full-integer: every tensor an op reads or writes is int8, apart from int32 biases.
    io = {t for op in ops for t in (*op.inputs, *op.outputs) if t >= 0}
    assert {tensors[t].dtype for t in io} <= {"INT8", "INT32"}
    assert all(tensors[op.outputs[0]].dtype == "INT8" for op in ops)
    if name in ("mini_xception", "mini_mobilenetv2"):
        # The residual sums that follow a linear branch carry no fused ReLU.
        first_add = next(op for op in ops if op.name == "ADD")
        assert first_add.fused_activation == "NONE"
    if name == "mini_mobilenetv2":
        assert all(op.fused_activation == "NONE" for op in ops if op.name == "ADD")
    keras.backend.clear_session()
