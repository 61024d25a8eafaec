"""BatchNorm after ReLU folded forward (``frontend.fold``): exact where no padding reads the
BatchNorm's output, refused (with the reason) where it does, and the converted graph loses the
MUL/ADD ops whose outputs no lowering reaches, so a budget below the int8 peak can be planned."""

import numpy as np
import pytest

import aa_tflite
from aa_tflite.frontend.fold import fold_batchnorm
from aa_tflite.tflite import flatbuffer


@pytest.fixture(scope="module")
def relu_bn(digits):
    """A digits CNN in the older ReLU -> BatchNorm style, statistics set on the digits, with
    one BatchNorm before a 'same' conv (not foldable exactly)."""
    import keras

    from converters.imagenet import calibrate_batchnorm

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(16, 3, padding="valid", activation="relu", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(i, keras.layers.Dense(10, name="logits")(x))
    model = calibrate_batchnorm(model, digits.x_cal)
    for layer in model.layers:  # scales and shifts away from 1 and 0, positive scales
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            rng = np.random.RandomState(len(layer.name))
            layer.set_weights([rng.uniform(0.5, 2, g.shape), rng.uniform(-0.5, 0.5, b.shape), m, v])
    return model


def _ops(tflite: bytes) -> list[str]:
    return [o.name for o in flatbuffer.describe(flatbuffer.read(tflite))[0]]


def test_exact_folds_and_refusals(relu_bn, digits):
    x = digits.x_val[:64]
    folded, notes = fold_batchnorm(relu_bn)
    assert notes == [
        "Folded BatchNormalization 'bn1' forward into 'c2' (exact: no padding reads it).",
        "BatchNormalization 'bn2' stays: c3 pads ('same' with a (3, 3) kernel): the padded "
        "zeros would become the BatchNorm's shift, so the fold is not exact.",
        "Folded BatchNormalization 'bn3' forward into 'logits' (exact: no padding reads it)."]
    assert np.abs(folded.predict(x, verbose=0) - relu_bn.predict(x, verbose=0)).max() < 1e-4
    assert relu_bn.get_layer("bn1").__class__.__name__ == "BatchNormalization"  # untouched
    loose, notes = fold_batchnorm(relu_bn, exact=False)
    assert "Folded BatchNormalization 'bn2' forward into 'c3' (NOT exact" in notes[1]
    assert np.abs(loose.predict(x, verbose=0) - relu_bn.predict(x, verbose=0)).max() > 1e-3
    int8 = _ops(aa_tflite.to_tflite(relu_bn, digits.x_cal))
    assert _ops(aa_tflite.to_tflite(folded, digits.x_cal)).count("MUL") < int8.count("MUL")


def test_convert_folds_and_plans_below_the_int8_peak(relu_bn, digits):
    kw = dict(representative_data=digits.x_cal, eval_data=(digits.x_val[:200],
              digits.y_val[:200]), progress=False, curve_points=0, memory="packed")
    plain = aa_tflite.convert(relu_bn, budget_kb=64, fold_batchnorm="none", **kw)
    peak = plain.report.int8_memory.packed_peak
    r = aa_tflite.convert(relu_bn, budget_kb=0.8 * peak / 1024, **kw)
    assert r.report.int8_memory.packed_peak < peak  # BN outputs are no longer tensors
    assert r.report.budget_figure() <= 0.8 * peak
    assert any("Folded BatchNormalization 'bn1'" in n for n in r.report.notes)
    with pytest.raises(aa_tflite.AAError, match="fold_batchnorm must be 'auto'"):
        aa_tflite.convert(relu_bn, budget_kb=1, fold_batchnorm="yes", **kw)


def test_auto_folds_inexactly_only_where_the_exact_folds_cannot_meet_the_budget(relu_bn, digits):
    """bn2 reaches c3 ('same'): folding it changes the borders. The default ("auto") folds it
    only when no plan meets the budget without it, and the report says so."""
    kw = dict(representative_data=digits.x_cal, eval_data=(digits.x_val[:200],
              digits.y_val[:200]), progress=False, curve_points=0, memory="packed")
    peak = aa_tflite.convert(relu_bn, budget_kb=64, **kw).report.int8_memory.packed_peak
    tight = 0.6 * peak / 1024  # below the exact folds' floor (72% of int8), above the inexact's
    with pytest.raises(aa_tflite.BudgetError, match="bn2"):
        aa_tflite.convert(relu_bn, budget_kb=tight, fold_batchnorm="exact", **kw)
    r = aa_tflite.convert(relu_bn, budget_kb=tight, **kw)
    assert r.report.budget_figure() <= tight * 1024
    assert any(n.startswith("Folded bn2 inexactly") for n in r.report.notes), r.report.notes
    assert r.report.planned_score >= r.report.int8_score - 0.05  # scored against the unfolded
    easy = aa_tflite.convert(relu_bn, budget_kb=0.8 * peak / 1024, **kw)
    assert not any("inexactly" in n for n in easy.report.notes)
    assert any("'bn2' stays" in n for n in easy.report.notes)


def test_a_sequential_model_folds_too(digits):
    """Sequential models list their layers (found by the random-graph fuzz run)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                              keras.layers.BatchNormalization(name="bn1"),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="d")])
    model(digits.x_cal[:8], training=True)
    folded, notes = fold_batchnorm(model)
    assert notes == ["Folded BatchNormalization 'bn1' forward into 'd' (exact: no padding "
                     "reads it)."]
    x = digits.x_val[:32]
    assert np.abs(folded.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-4
