"""affine_fit, read a few columns at a time: the fit of the whole array, bit for bit; and
affine_fit_stored, the same fit summed exactly on int8 values."""

import numpy as np
import pytest

from aa_tflite.tflite.kernel_math import affine_fit, affine_fit_stored
from aa_tflite.types import AAError


def _affine_fit_reference(got, target, *, per_channel, common_slope):
    """affine_fit as first written: float64 copies of both arrays, whole."""
    if per_channel:
        g, t = got.reshape(-1, got.shape[-1]), target.reshape(-1, target.shape[-1])
    else:
        g, t = got.reshape(len(got), -1), target.reshape(len(target), -1)
    g, t = g.astype(np.float64), t.astype(np.float64)
    mg, mt = g.mean(axis=0), t.mean(axis=0)
    g -= mg
    t -= mt
    var = np.square(g).mean(axis=0)
    t *= g
    cov = t.mean(axis=0)
    a = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 1.0)
    if common_slope:
        live = var > 1e-12
        a = np.full_like(a, cov[live].sum() / var[live].sum() if live.any() else 1.0)
    a = np.where(a > 1e-3, a, 1.0)
    return a, mt - a * mg


@pytest.mark.parametrize("shape", [(4000, 1), (4000, 2), (3000, 16), (3000, 17), (3000, 33),
                                   (8, 9, 9, 40), (64, 10)])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("common_slope", [False, True])
def test_a_blocked_fit_equals_the_whole_arrays_fit(shape, per_channel, common_slope):
    rng = np.random.RandomState(sum(shape))
    got = rng.randn(*shape).astype(np.float32)
    target = (1.3 * got + 0.2 + 0.1 * rng.randn(*shape)).astype(np.float32)
    got.reshape(-1, shape[-1])[:, 0] = 0.5  # a channel that does not vary: its slope is 1
    a, b = affine_fit(got, target, per_channel=per_channel, common_slope=common_slope)
    ra, rb = _affine_fit_reference(got, target, per_channel=per_channel,
                                   common_slope=common_slope)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    if per_channel and not common_slope:
        assert a[0] == 1.0 and np.allclose(a[1:], 1.3, atol=0.05)


def _stored_pair(rows, channels, seed):
    rng = np.random.default_rng(seed)
    got = rng.integers(-128, 128, (rows, channels), dtype=np.int8)
    noise = rng.integers(-6, 7, (rows, channels))
    target = np.clip(got.astype(np.int64) * 3 // 4 + noise + 9, -128, 127).astype(np.int8)
    got[:, 0] = -5  # a channel that does not vary: slope 1
    return got, target


@pytest.mark.parametrize("rows", [1, 700, 1024, 3000, 70_000])
@pytest.mark.parametrize("common_slope", [False, True])
def test_the_stored_fit_is_the_fit_of_the_dequantized_values(rows, common_slope):
    """affine_fit_stored sums int8 values exactly (float32 blocks of 1024 rows, several blocks
    of 65,536 rows): the fit of the dequantized values in exact arithmetic, to float64's
    rounding, and the same bits for the rows in any order."""
    got, target = _stored_pair(rows, 5, rows)
    g_quant, t_quant = (0.037, -3), (0.021, 11)
    a, b = affine_fit_stored(got, g_quant, target, t_quant, common_slope=common_slope)
    g = (got.astype(np.float64) - g_quant[1]) * g_quant[0]
    t = (target.astype(np.float64) - t_quant[1]) * t_quant[0]
    ref_a, ref_b = _affine_fit_reference(g, t, per_channel=True, common_slope=common_slope)
    np.testing.assert_allclose(a, ref_a, rtol=1e-9, atol=0)
    np.testing.assert_allclose(b, ref_b, rtol=1e-9, atol=1e-12)
    assert a[0] == 1.0 or common_slope
    order = np.random.default_rng(1).permutation(rows)
    again = affine_fit_stored(got[order], g_quant, target[order], t_quant,
                              common_slope=common_slope)
    assert all(np.array_equal(x, y) for x, y in zip((a, b), again, strict=True))


def test_the_stored_sums_are_exact_at_the_largest_int8_products():
    """1024 products of -128 * -128 reach 2**24 exactly; the fit of a channel stuck at the
    extremes against itself, doubled, is a slope of 2 and no offset."""
    got = np.where(np.arange(200_000)[:, None] % 2 == 0, -128, 127).astype(np.int8)
    a, b = affine_fit_stored(got, (1.0, 0), got, (2.0, 0))
    assert a.tolist() == [2.0] and abs(b[0]) < 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_the_stored_fit_refuses_values_it_cannot_sum_exactly(dtype):
    """uint8 products reach 2**16, past what 1024 of them in float32 hold exactly."""
    with pytest.raises(AAError, match="int8"):
        affine_fit_stored(np.zeros((4, 2), dtype), (1.0, 0), np.zeros((4, 2), np.int8),
                          (1.0, 0))


def test_the_stored_fit_refuses_more_rows_than_int64_sums_hold():
    rows = np.zeros(((1 << 24) + 1, 1), np.int8)
    with pytest.raises(AAError, match="fit_positions"):
        affine_fit_stored(rows, (1.0, 0), rows, (1.0, 0))
