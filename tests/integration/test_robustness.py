"""Issue 9: the failure signatures found on random graphs, each pinned by a regression test (the
random-graph check itself runs in ``tests/e2e/test_fuzz.py``)."""

import numpy as np
import pytest

import aa_tflite
from aa_tflite.runtime import guard
from aa_tflite.search.calibrate import tensor_values
from aa_tflite.search.runtimes import runtime_notes
from aa_tflite.tflite import flatbuffer, safety
from aa_tflite.types import AAError, BudgetError, Kernels, Plan, SiteConfig

X12 = np.random.RandomState(0).rand(64, 12, 12, 3).astype(np.float32)


@pytest.fixture(autouse=True)
def _seeded():
    """The tests make their layers before ``_seq`` seeds Keras, and an unseeded Keras 3
    initializer takes its seed when the layer is made: seed first, so each run builds the same
    weights (without this, a test's plan changed from run to run)."""
    import keras

    keras.utils.set_random_seed(0)


def _seq(*layers, shape=(12, 12, 3), seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape), *layers])


def _convert(model, x=X12, **kw):
    kw.setdefault("budget_kb", 1e6)
    kw.setdefault("progress", False)
    kw.setdefault("measure_tflm", False)
    kw.setdefault("curve_points", 0)
    return aa_tflite.convert(model, representative_data=x, **kw)


def _raw(tflite, x):
    from aa_tflite.runtime.interpreter import load_interpreter, quantize

    return quantize(x, load_interpreter(tflite).get_input_details()[0])


def _outputs(tflite, x, kernels):
    got = guard.probe(tflite, kernels=kernels, inputs=_raw(tflite, x))
    assert got.ok, got.reason
    return got.outputs.astype(int)


def _ops(tflite):
    return [o.name for o in flatbuffer.describe(flatbuffer.read(tflite))[0]]


# 1. A site whose weighted consumer has no bias (use_bias=False, or an all-zero bias dropped).
def test_a_consumer_without_bias_takes_four_bit_and_is_not_corrected():
    from keras import layers

    model = _seq(layers.Conv2D(16, 3, activation="relu"), layers.Conv2D(16, 3, activation="relu"),
                 layers.Flatten(), layers.Dense(10, use_bias=False))
    peak = _convert(model).report.int8_memory.packed_peak
    out = _convert(model, budget_kb=0.7 * peak / 1024, bits=[4])  # 4 bits is the only offer
    assert out.report.planned_memory.packed_peak <= out.report.budget_bytes
    assert any(c.bits == 4 for c in out.plan.sites.values())
    assert any("has no bias to fold it into" in n for n in out.report.notes)


# 2. A site feeding REDUCE_MAX (global max pooling): its output shares the site's parameters.
@pytest.mark.parametrize("pool", ["GlobalMaxPooling2D", "GlobalMaxPooling1D"])
def test_a_site_feeding_reduce_max_goes_four_bit_and_runs_everywhere(pool):
    import keras
    from keras import layers

    one_d = pool.endswith("1D")
    shape, x = ((16, 2), X12.reshape(64, -1)[:, :32].reshape(64, 16, 2)) if one_d else \
        ((12, 12, 3), X12)
    conv = layers.Conv1D if one_d else layers.Conv2D
    model = _seq(conv(8, 3, activation="relu"), getattr(keras.layers, pool)(), layers.Dense(4),
                 shape=shape)
    site = model.layers[0].name + "_relu"
    out = _convert(model, x, budget_kb=None, plan=Plan({site: SiteConfig(bits=4)}))
    ops, _ = flatbuffer.describe(flatbuffer.read(out.tflite))
    reduce_max = [o for o in ops if o.name == "REDUCE_MAX"][0]
    group = [int(t) for t in out.report.tensor_bits]
    assert reduce_max.outputs[0] in group  # its output shares the site's 16 levels
    levels = tensor_values(out.tflite, group, x * 5)
    assert all(len(np.unique(v)) <= 16 for v in levels.values())
    base = _outputs(out.tflite, x[:8], "builtin")
    assert np.abs(_outputs(out.tflite, x[:8], "tflm") - base).max() <= 1


# 3. A standalone RELU6 at 4 bits: TFLM's RELU6 copies, so the edit writes a RELU.
def test_a_standalone_relu6_at_four_bits_computes_the_same_in_tflm_and_litert():
    from keras import layers

    model = _seq(layers.Conv2D(16, 3), layers.GlobalAveragePooling2D(),
                 layers.ReLU(max_value=6, name="r6"), layers.Dense(5))
    out = _convert(model, budget_kb=None, plan=Plan({"r6": SiteConfig(bits=4)}))
    assert "RELU6" in _ops(out.baseline_tflite)
    assert "RELU6" not in _ops(out.tflite) and "RELU" in _ops(out.tflite)
    t = int(next(iter(out.report.tensor_bits)))
    assert len(np.unique(tensor_values(out.tflite, [t], X12 * 10)[t])) <= 16
    x = np.concatenate([X12[:8], X12[:8] * 10])
    litert, micro = _outputs(out.tflite, x, "builtin"), _outputs(out.tflite, x, "tflm")
    plain = np.abs(_outputs(out.baseline_tflite, x, "tflm")
                   - _outputs(out.baseline_tflite, x, "builtin")).max()
    assert np.abs(litert - micro).max() <= max(plain, 1)


# 3b. (found by the random-graph run, seed 427) A 4-bit site read by a standalone RELU6.
def test_a_four_bit_site_read_by_a_standalone_relu6_computes_the_same_in_tflm():
    from keras import layers

    model = _seq(layers.Conv2D(8, 3, activation="relu", name="c"), layers.ReLU(max_value=6.0),
                 layers.GlobalAveragePooling2D(), layers.Dense(5))
    out = _convert(model, budget_kb=None, plan=Plan({"c_relu": SiteConfig(bits=4)}))
    assert "RELU6" in _ops(out.baseline_tflite) and "RELU6" not in _ops(out.tflite)
    x = np.concatenate([X12[:8], X12[:8] * 10])
    plain = np.abs(_outputs(out.baseline_tflite, x, "tflm")
                   - _outputs(out.baseline_tflite, x, "builtin")).max()
    litert, micro = _outputs(out.tflite, x, "builtin"), _outputs(out.tflite, x, "tflm")
    assert np.abs(litert - micro).max() <= max(plain, 1)


# 4a. A ReLU dead on the calibration data: the converter's 7.8e-9 scale aborts the runtimes.
def test_dead_relu_scales_are_repaired_so_no_runtime_aborts():
    import keras
    from keras import layers

    model = _seq(layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                 layers.Dense(16, activation="relu",
                              bias_initializer=keras.initializers.Constant(-100.0)),
                 layers.Activation("relu6"), layers.Dense(10), layers.Softmax())
    plain = aa_tflite.to_tflite(model, X12)
    assert safety.scale_problems(plain)  # what the converter gives
    aborted = guard.probe(plain, kernels="tflm")  # TFLM aborts on it, in a child process
    assert not aborted.ok and aborted.crashed and "SIGABRT" in aborted.reason
    with pytest.raises(AAError, match="TFLite Micro could not allocate"):
        aa_tflite.tflm_arena(plain)  # an error, not a dead process
    out = _convert(model)
    assert safety.scale_problems(out.tflite) == []
    assert any(n.startswith("Repaired the int8 conversion") for n in out.report.notes)
    for kernels in ("builtin", "xnnpack", "tflm"):
        assert guard.probe(out.tflite, kernels=kernels).ok


# 4b. A model the default XNNPACK delegate cannot run: the report says so and names the fix.
def test_a_model_xnnpack_refuses_gets_a_note_with_the_workaround(digits_tflite):
    model = flatbuffer.read(digits_tflite)
    ops, tensors = flatbuffer.describe(model)
    fc = [o for o in ops if o.name == "FULLY_CONNECTED"][0]
    model.subgraphs[0].tensors[fc.outputs[0]].quantization.scale = np.array([1e-9], np.float32)
    bad = flatbuffer.write(model)  # a requantization multiplier XNNPACK refuses
    assert guard.probe(bad, kernels="builtin").ok and not guard.probe(bad, kernels="xnnpack").ok
    notes = runtime_notes(bad, bad)
    assert any("XNNPACK" in n and "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in n
               and "setUseXNNPACK(false)" in n for n in notes)


def test_the_plain_model_is_probed_only_where_the_planned_one_fails(digits_tflite, monkeypatch):
    model = flatbuffer.read(digits_tflite)
    ops, _ = flatbuffer.describe(model)
    fc = [o for o in ops if o.name == "FULLY_CONNECTED"][0]
    model.subgraphs[0].tensors[fc.outputs[0]].quantization.scale = np.array([1e-9], np.float32)
    bad = flatbuffer.write(model)
    jobs = []
    real = guard.probe_all
    monkeypatch.setattr(guard, "probe_all", lambda js: jobs.append(list(js)) or real(jobs[-1]))
    renamed = flatbuffer.read(digits_tflite)
    renamed.subgraphs[0].tensors[fc.outputs[0]].name = b"renamed"
    planned = flatbuffer.write(renamed)  # other bytes, the same model: it runs everywhere
    assert planned != digits_tflite
    assert runtime_notes(digits_tflite, planned) == []
    assert [[(m is planned, k.value) for m, k in js] for js in jobs] == [
        [(True, "xnnpack"), (True, "tflm")]]  # one call: the plain model is not run
    jobs.clear()
    notes = runtime_notes(digits_tflite, bad)  # the plain model runs where the planned fails
    assert [[(m is bad, k.value) for m, k in js] for js in jobs] == [
        [(True, "xnnpack"), (True, "tflm")], [(False, "xnnpack")]]
    assert len(notes) == 1 and notes[0].startswith("WARNING: LiteRT's default XNNPACK")


def test_a_baseline_the_runtime_cannot_run_stops_convert_before_it_runs_here(digits,
                                                                             monkeypatch):
    from aa_tflite import conversion

    seen = []

    def refuse(tflite, kernels):  # what probe_baseline raises when the child crashed
        seen.append(kernels)
        raise AAError("LiteRT cannot run the plain int8 conversion of this model")

    monkeypatch.setattr(conversion, "probe_baseline", refuse)
    with pytest.raises(AAError, match="cannot run the plain int8"):
        _convert(digits.model, digits.x_cal, budget_kb=2.0)
    assert seen == [Kernels.BUILTIN]


def test_a_budget_errors_advice_when_followed_succeeds(digits):
    kw = dict(eval_data=(digits.x_val[:200], digits.y_val[:200]))
    with pytest.raises(BudgetError) as err:
        _convert(digits.model, digits.x_cal, budget_kb=0.3, **kw)
    advice = float(str(err.value).split("at least ")[1].split(",")[0])
    assert advice * 1024 >= err.value.smallest_bytes
    out = _convert(digits.model, digits.x_cal, budget_kb=advice, **kw)
    assert out.report.planned_memory.packed_peak <= advice * 1024


@pytest.mark.parametrize("kernels", ["xnnpack", "tflm"])
def test_losses_are_measured_on_the_kernels_the_user_deploys_on(digits, kernels):
    from aa_tflite.runtime.interpreter import evaluate, run_model

    x_eval, y_eval = digits.x_val[:150], digits.y_val[:150]
    out = _convert(digits.model, digits.x_cal, budget_kb=1.5, eval_data=(x_eval, y_eval),
                   kernels=kernels)
    rep = out.report
    assert rep.kernels == kernels and "measured on" in rep.to_markdown()
    assert rep.planned_score == evaluate(out.tflite, x_eval, y_eval, kernels=kernels)
    assert rep.int8_score == evaluate(out.baseline_tflite, x_eval, y_eval, kernels=kernels)
    # The in-process kernels are the ones the child-process probe runs.
    raw = _raw(out.tflite, x_eval[:20])
    probed = guard.probe(out.tflite, kernels=kernels, inputs=raw).outputs
    from aa_tflite.runtime.interpreter import dequantize, load_interpreter

    detail = load_interpreter(out.tflite).get_output_details()[0]
    assert np.allclose(run_model(out.tflite, x_eval[:20], kernels=kernels),
                       dequantize(probed, detail))


def test_unknown_kernels_are_a_clear_error(digits):
    with pytest.raises(AAError, match="kernels must be one of"):
        _convert(digits.model, digits.x_cal, kernels="gpu")
