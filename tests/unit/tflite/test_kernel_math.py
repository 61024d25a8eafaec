"""affine_fit, read a few columns at a time: the fit of the whole array, bit for bit."""

import numpy as np
import pytest

from aa_tflite.tflite.kernel_math import affine_fit


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
