"""Models with several outputs and outputs that are not class vectors: they convert, plan and
report; each output is scored with a metric that fits it; the file's outputs follow
``model.outputs``."""

import numpy as np
import pytest

import aa_tflite
from aa_tflite.runtime.interpreter import run_model
from aa_tflite.types import AAError


@pytest.fixture(scope="module")
def two_heads(digits):
    """A digits CNN with a softmax head and a dense 8x8 reconstruction head (sigmoid), the
    heads declared in the order the converter does not keep."""
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    f = keras.layers.Flatten()(x)
    cls = keras.layers.Dense(10, activation="softmax", name="zz_classes")(f)
    rec = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64, activation="sigmoid",
                                                             name="aa_image")(f))
    model = keras.Model(i, [cls, rec])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    x, y = digits.x_val[200:], digits.y_val[200:]  # the first 200 are the tests' eval data
    model.fit(x, [y, (x > 0.5).astype(np.float32)], epochs=5, batch_size=32, verbose=0)
    return model


def test_outputs_follow_the_keras_order(two_heads, digits):
    tflite = aa_tflite.to_tflite(two_heads, digits.x_cal)
    outs = run_model(tflite, digits.x_val[:8], all_outputs=True)
    want = two_heads.predict(digits.x_val[:8], verbose=0)
    assert [o.shape for o in outs] == [w.shape for w in want] == [(8, 10), (8, 8, 8, 1)]
    assert np.abs(outs[0] - want[0]).max() < 0.05 and np.abs(outs[1] - want[1]).max() < 0.05


def test_two_outputs_convert_with_a_fitting_default_metric_per_output(two_heads, digits):
    r = aa_tflite.convert(two_heads, budget_kb=1.0, representative_data=digits.x_cal,
                          eval_data=digits.x_val[:200], progress=False, curve_points=0)
    rep = r.report
    assert rep.metric.startswith("output 0: agreement (default); output 1: relative_mse")
    assert any("Output 1 (shape [8, 8, 1]) is not a class vector" in n for n in rep.notes)
    assert 0.9 < rep.int8_score <= 1.0 and rep.planned_score > 0.8
    assert rep.budget_figure() <= rep.budget_bytes
    assert len(run_model(r.tflite, digits.x_val[:4], all_outputs=True)) == 2


def test_labels_per_output_weights_and_a_callable(two_heads, digits):
    x, n = digits.x_val[:200], 200
    target = (x > 0.5).astype(np.float32)
    calls = []

    def edge_iou(y, out):
        calls.append(y.shape)
        return float(np.mean((out >= 0.5) == (y >= 0.5)))

    r = aa_tflite.convert(two_heads, budget_kb=1.0, representative_data=digits.x_cal,
                          eval_data=(x, [digits.y_val[:n], target]), progress=False,
                          curve_points=0, metric=[None, edge_iou], output_weights=[1, 3])
    assert r.report.metric == "output 0: top1 (default); output 1: edge_iou (weights 0.25, 0.75)"
    assert calls and calls[0] == (n, 8, 8, 1)  # the given targets, not the float outputs
    with pytest.raises(AAError, match="has 2 outputs: pass eval_data=.x, .y_0, ..., y_1.."):
        aa_tflite.convert(two_heads, budget_kb=1.0, representative_data=digits.x_cal,
                          eval_data=(x, digits.y_val[:n]), progress=False)
    with pytest.raises(AAError, match="needs labels"):
        aa_tflite.convert(two_heads, budget_kb=1.0, representative_data=digits.x_cal,
                          eval_data=x, metric="top1", progress=False)


def test_a_dense_prediction_with_mask_labels_and_an_op_tflm_lacks(digits):
    """An encoder-decoder (UpSampling2D lowers to TILE, which TFLM has no kernel for) scored by
    IoU against mask targets: it plans below its int8 peak, and the report says TFLM cannot run
    it instead of failing."""
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    e = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    m = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(e)
    u = keras.layers.UpSampling2D()(m)
    d = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(u)
    model = keras.Model(i, keras.layers.Conv2D(1, 1, activation="sigmoid")(d))
    x = digits.x_val[:200]
    mask = (x > 0.5).astype(np.float32)
    model.compile("adam", "binary_crossentropy")
    model.fit(digits.x_val[200:], (digits.x_val[200:] > 0.5).astype(np.float32), epochs=5,
              verbose=0)
    r = aa_tflite.convert(model, budget_kb=0.8 * 3072 / 1024, representative_data=digits.x_cal,
                          eval_data=(x, mask), metric="iou", progress=False, curve_points=0)
    assert r.report.metric == "iou" and r.report.int8_score > 0.5
    assert r.report.int8_memory.tflm is None
    assert any("TFLite Micro cannot run this model" in n and "TILE" in n for n in r.report.notes)
    with pytest.raises(AAError, match=r"labels for output 0 must have shape \(200, 8, 8, 1\)"):
        aa_tflite.convert(model, budget_kb=2, representative_data=digits.x_cal,
                          eval_data=(x, mask[:, :4]), metric="iou", progress=False)
