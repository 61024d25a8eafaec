"""Export: identity conversion, zero-cost shift lowering, exact lowering's counted cost,
determinism, site tensors, data checks."""

import numpy as np
import pytest

from aa_tflite.frontend.export import export, to_tflite
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.search import calibrate
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.types import AAError, Plan, SiteConfig
from tests.conftest import tiny_nested_functional


def _op_names(tflite):
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    return [(op.name, op.fused_activation) for op in ops]


@pytest.fixture(scope="module")
def digits_plain(digits):
    return to_tflite(digits.model, digits.x_cal)


@pytest.fixture(scope="module")
def digits_thresholds(digits, digits_plain):
    base = export(digits.model, representative_data=digits.x_cal)
    stats = calibrate.site_statistics(base.tflite, base.site_tensors, digits.x_cal)
    return {s: SiteConfig(threshold=calibrate.thresholds_for_sparsity(st, [10])[0])
            for s, st in stats.items()}


def test_identity_is_bit_exact_with_plain_conversion(digits, digits_plain):
    ex = export(digits.model, representative_data=digits.x_cal)
    plain_out = runtime.evaluate(digits_plain, digits.x_val)
    ours_out = runtime.evaluate(ex.tflite, digits.x_val)
    assert plain_out.shape == (len(digits.x_val), 10)
    assert np.array_equal(plain_out, ours_out)
    assert _op_names(ex.tflite) == _op_names(digits_plain)


def test_identity_bit_exact_on_nested_functional(tiny_data):
    model = tiny_nested_functional()
    plain = to_tflite(model, tiny_data[:32], io_dtype="float32")
    ours = export(model, representative_data=tiny_data[:32], io_dtype="float32")
    assert np.array_equal(runtime.evaluate(plain, tiny_data), runtime.evaluate(ours.tflite, tiny_data))


def test_shift_lowering_adds_nothing_at_run_time(digits, digits_plain, digits_thresholds):
    ex = export(digits.model, Plan(digits_thresholds, lowering="shift"),
                representative_data=digits.x_cal)
    assert _op_names(ex.tflite) == _op_names(digits_plain)
    plain_arena, ours_arena = memory.tflm_arena(digits_plain), memory.tflm_arena(ex.tflite)
    assert ours_arena.head == plain_arena.head
    assert ours_arena.total <= plain_arena.total
    # The thresholds do raise sparsity at every site, in the interpreter.
    base = export(digits.model, representative_data=digits.x_cal)
    for site, t in ex.site_tensors.items():
        before = calibrate.tensor_values(base.tflite, [base.site_tensors[site]], digits.x_val)
        after = calibrate.tensor_values(ex.tflite, [t], digits.x_val)
        assert np.mean(after[t] == 0) > np.mean(before[base.site_tensors[site]] == 0) + 0.03
    # And the model still works.
    assert runtime.evaluate(ex.tflite, digits.x_val, digits.y_val) > 0.95


def test_exact_lowering_cost_is_visible(digits, digits_plain, digits_thresholds):
    ex = export(digits.model, Plan(digits_thresholds, lowering="exact"),
                representative_data=digits.x_cal)
    names = [n for n, _ in _op_names(ex.tflite)]
    assert names.count("SELECT_V2") == len(digits_thresholds)
    assert memory.tflm_arena(ex.tflite).head > memory.tflm_arena(digits_plain).head
    assert runtime.evaluate(ex.tflite, digits.x_val, digits.y_val) > 0.95


def test_conversion_is_deterministic(digits, digits_thresholds):
    a = export(digits.model, digits_thresholds, representative_data=digits.x_cal)
    b = export(digits.model, digits_thresholds, representative_data=digits.x_cal)
    assert a.tflite == b.tflite


def test_export_does_not_modify_the_users_model(digits, digits_thresholds):
    before = [w.copy() for w in digits.model.get_weights()]
    export(digits.model, digits_thresholds, representative_data=digits.x_cal)
    assert all(np.array_equal(a, b) for a, b in zip(before, digits.model.get_weights()))


def test_every_site_maps_to_a_tensor(tiny_data):
    ex = export(tiny_nested_functional(), representative_data=tiny_data[:16])
    assert set(ex.site_tensors) == {s.name for s in ex.sites}
    assert all(t is not None for t in ex.site_tensors.values())
    assert len(set(ex.site_tensors.values())) == len(ex.sites)


@pytest.mark.parametrize("data, fragment", [
    (None, "representative_data is required"),
    (np.zeros((4, 7, 7, 1)), r"has shape \(4, 7, 7, 1\)"),
    (np.zeros((0, 8, 8, 1)), "is empty"),
    (np.full((2, 8, 8, 1), np.nan), "NaN"),
])
def test_bad_representative_data(digits, data, fragment):
    with pytest.raises(AAError, match=fragment):
        export(digits.model, representative_data=data)


def test_bad_io_dtype(digits):
    with pytest.raises(AAError, match="io_dtype"):
        to_tflite(digits.model, digits.x_cal, io_dtype="uint8")
