"""The stream form: a signed tensor beside an identity shortcut, held to 2^b levels by dividing its
whole residual stream by one factor. Only quantization parameters change."""

import numpy as np
import pytest

from aa_tflite.lowering import LOWERINGS, reach_all, stream
from aa_tflite.lowering.offset import offset_reachable
from aa_tflite.precision import precision
from aa_tflite.runtime.interpreter import load_interpreter, quantize, run_model
from aa_tflite.search.calibrate import stored_levels, tensor_values
from aa_tflite.tflite import flatbuffer, memory
from tests.helpers import adversarial, calibrated_mini


@pytest.fixture(scope="module")
def data():
    from converters.data import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="module")
def resnet(data):
    """mini_resnet: stage 1 adds its branch (conv + BN, no activation) to an identity shortcut,
    which no bias can offset; stage 2 has a 1x1 projection shortcut (the offset form's)."""
    from aa_tflite.frontend.export import export

    return export(calibrated_mini("mini_resnet", data["x_cal"]), None,
                  representative_data=data["x_cal"], io_dtype="int8").tflite


def _lower(tflite, x, bits):
    graphs = stream.stream_reachable(tflite)
    vals = tensor_values(tflite, list(graphs), x)
    return graphs, stream.apply_stream(tflite, {
        t: stream.StreamChoice(bits, stream.fit_stream(vals[t], bits, min_step=g.scale))
        for t, g in graphs.items()})


def _constants(tflite):
    model = flatbuffer.read(tflite)
    return [None if b.data is None else bytes(b.data) for b in model.buffers]


def test_reaches_the_branch_beside_an_identity_shortcut_and_nothing_offset_reaches(resnet):
    graphs = stream.stream_reachable(resnet)
    ops, tensors = flatbuffer.describe(flatbuffer.read(resnet))
    assert len(graphs) == 1, "stage 1's branch; stage 2's has a conv shortcut (offset form)"
    (t, g), = graphs.items()
    assert not set(graphs) & set(offset_reachable(resnet))
    assert ops[g.add].name == "ADD" and ops[g.producer].fused_activation == "NONE"
    assert ops[g.add].outputs[0] in g.members  # the ADD's output is divided too
    assert all(ops[k].name == "CONV_2D" for k in (*g.writers, *g.readers))
    assert [form.kind for form in LOWERINGS][-1] == "stream"  # written after the others
    units, _ = reach_all(resnet, {})
    assert [u for u in units.values() if u.lowering == "stream"][0].tensor == t


@pytest.mark.parametrize("bits", [6, 4, 2])
def test_holds_its_levels_and_changes_only_quantization_parameters(resnet, data, bits):
    graphs, lowered = _lower(resnet, data["x_cal"], bits)
    ops0, t0 = flatbuffer.describe(flatbuffer.read(resnet))
    ops1, t1 = flatbuffer.describe(flatbuffer.read(lowered))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]
    assert [(t.shape, t.dtype) for t in t0] == [(t.shape, t.dtype) for t in t1]
    assert _constants(lowered) == _constants(resnet)  # kernels and biases byte for byte
    assert memory.tflm_arena(lowered) == memory.tflm_arena(resnet)
    p = precision(bits)
    inp = load_interpreter(lowered).get_input_details()[0]
    batches = [quantize(data["x_val"][:64], inp), quantize(data["x_val"][:64] * 5, inp),
               *adversarial((8, 8, 1), np.random.RandomState(0))]
    for t, levels in stored_levels(lowered, list(graphs), batches).items():
        assert len(levels) <= p.levels and min(levels) >= 128 - p.levels, (t, sorted(levels))
    x = data["x_val"][:200]
    base, out = run_model(resnet, x), run_model(lowered, x)
    agree = np.mean(base.argmax(1) == out.argmax(1))
    assert agree >= {6: 0.99, 4: 0.95, 2: 0.5}[bits], agree


def test_the_stream_division_alone_keeps_the_outputs(resnet, data):
    """With the lowered tensor left at its int8 grid (m = 128 int8 steps, no clamp), only the
    scales move: the outputs are the baseline's, up to the requantization multipliers' float32
    rounding."""
    from aa_tflite.tflite.kernel_math import open_model

    (t, g), = stream.stream_reachable(resnet).items()
    model, ops, tensors, users = open_model(resnet)
    stream._write(model, ops, tensors, users, [(t, stream.StreamChoice(8, 128 * g.scale), g)])
    model.subgraphs[0].operators[g.producer].builtinOptions.fusedActivationFunction = 0
    model.subgraphs[0].tensors[t].quantization.zeroPoint = np.asarray(
        tensors[t].zero_point, np.int64)
    divided = flatbuffer.write(model)
    x = data["x_cal"][:100]
    a, b = run_model(divided, x), run_model(resnet, x)
    step = float(np.min(np.diff(np.unique(b))))
    assert np.abs(a - b).max() <= step * 1.001 and np.mean(a == b) >= 0.98
    assert np.array_equal(a.argmax(1), b.argmax(1))


def test_runs_in_tflite_micro_like_litert(resnet, data):
    _, lowered = _lower(resnet, data["x_cal"], 4)
    x = data["x_val"][:100]
    tflm = run_model(lowered, x, kernels="tflm")
    for kernels in ("builtin", "xnnpack"):
        out = run_model(lowered, x, kernels=kernels)
        assert np.mean(out.argmax(1) == tflm.argmax(1)) >= 0.95, kernels


def test_a_stream_that_reaches_a_model_output_is_refused_with_the_reason():
    import keras

    from aa_tflite.frontend.export import export

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(i)
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    model = keras.Model(i, keras.layers.Add()([x, y]))
    cal = np.random.RandomState(0).rand(32, 8, 8, 1).astype(np.float32)
    tflite = export(model, None, representative_data=cal, io_dtype="int8").tflite
    why = stream.stream_refusals(tflite)
    assert not stream.stream_reachable(tflite)
    assert any("model output" in w for w in why.values()), why


def test_the_two_signed_inputs_of_one_add_take_the_offset_form_one_at_a_time(resnet, data):
    """Stage 2 adds its branch to a conv shortcut: each is the other's partner, and both shifts
    cannot be written, so only one of them is reached (both at once lost 46 points)."""
    from aa_tflite.lowering import offset

    graphs = offset_reachable(resnet)
    assert graphs and not any(g.partner in graphs for g in graphs.values())
    assert not set(stream.stream_reachable(resnet)) & {g.partner for g in graphs.values()}
    vals = tensor_values(resnet, list(graphs), data["x_cal"])
    low = offset.apply_offset(resnet, {t: offset.OffsetChoice(
        4, *offset.fit_offset(vals[t], 4, min_step=g.scale)) for t, g in graphs.items()})
    x = data["x_val"][:200]
    assert np.mean(run_model(low, x).argmax(1) == run_model(resnet, x).argmax(1)) >= 0.95


def test_a_stream_that_holds_an_offset_pair_is_written_after_the_offset_form(data):
    """A projection block (two signed convs into one ADD: an offset pair) then an identity block
    in one stream, as in a pre-activation WRN. Once the offset form has written its tensor (its
    producer now fused RELU), the pair no longer looks like one; the stream form still writes
    the stream it planned (it raised "not reachable" on the age/gender WRN)."""
    import keras

    from aa_tflite.frontend.export import export
    from aa_tflite.lowering import offset

    keras.utils.set_random_seed(1)
    i = keras.Input((8, 8, 1))
    s = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    x0 = keras.layers.Add()([keras.layers.Conv2D(8, 1)(s),
                             keras.layers.Conv2D(8, 3, padding="same")(s)])
    y1 = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.ReLU()(x0))
    x1 = keras.layers.ReLU()(keras.layers.Add()([x0, y1]))
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x1))
    tflite = export(keras.Model(i, out), None, representative_data=data["x_cal"],
                    io_dtype="int8").tflite
    pair, streams = offset.offset_reachable(tflite), stream.stream_reachable(tflite)
    assert len(pair) == 1 and len(streams) == 1
    (t, g), = streams.items()
    assert set(pair) <= set(g.members)
    vals = tensor_values(tflite, [*pair, t], data["x_cal"])
    first = offset.apply_offset(tflite, {u: offset.OffsetChoice(
        4, *offset.fit_offset(vals[u], 4, min_step=h.scale)) for u, h in pair.items()})
    both = stream.apply_stream(first, {t: stream.StreamChoice(
        4, stream.fit_stream(vals[t], 4, min_step=g.scale))})
    x = data["x_val"][:200]
    assert np.mean(run_model(both, x).argmax(1) == run_model(tflite, x).argmax(1)) >= 0.9
