"""Stored int8 values counted per level: the counts, and quantiles read from them bit for bit."""

import numpy as np
import pytest

from aa_tflite.runtime.interpreter import dequantize
from aa_tflite.tflite.levels import LEVELS, Stored, quantiles_from_counts


def _relu_like(rows, channels, seed, zero=-128):
    """Stored values of a ReLU output: most at the zero point, the rest spread above it."""
    rng = np.random.default_rng(seed)
    raw = np.clip(zero + rng.exponential(20, (rows, channels)) * (rng.random((rows, channels))
                                                                  > 0.4), -128, 127)
    return raw.astype(np.int8)


def test_counts_are_each_channels_histogram_of_stored_levels():
    raw = _relu_like(5000, 70, 0)  # more channels than one block of 64
    counts = Stored(raw, 0.1, -128).counts()
    assert counts.shape == (70, LEVELS)
    for c in (0, 63, 64, 69):
        expected = np.bincount(raw[:, c].astype(np.int64) + 128, minlength=LEVELS)
        np.testing.assert_array_equal(counts[c], expected)


def test_values_are_what_the_interpreter_reading_dequantizes():
    raw = _relu_like(100, 3, 1, zero=-5)
    stored = Stored(raw, 0.0371, -5)
    detail = {"quantization": (0.0371, -5)}
    np.testing.assert_array_equal(stored.values(), dequantize(raw, detail))
    np.testing.assert_array_equal(stored.level_values()[raw.astype(np.int64) + 128],
                                  stored.values())


@pytest.mark.parametrize("seed", range(6))
def test_quantiles_from_counts_are_np_quantile_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    values = np.sort(rng.random(40) * rng.choice([1e-3, 1.0, 300.0]))
    counts = rng.integers(0, 5, 40) * (rng.random(40) > 0.3)
    counts[rng.integers(0, 40)] += 1  # never empty
    quantiles = (0.0, 0.5, 0.6, 0.85, 0.99, 0.995, 0.999, 1.0)
    got = quantiles_from_counts(values, counts, quantiles)
    expected = np.quantile(np.repeat(values, counts), quantiles)
    np.testing.assert_array_equal(got, expected)


def test_quantiles_of_nothing_are_zero():
    assert quantiles_from_counts(np.array([1.0, 2.0]), np.array([0, 0]), (0.5, 1.0)).tolist() \
        == [0.0, 0.0]


def test_only_int8_values_are_counted():
    """Counting offsets by 128: uint8 or float values would land in the wrong levels."""
    from aa_tflite.types import AAError

    with pytest.raises(AAError, match="int8"):
        Stored(np.zeros((4, 2), np.uint8), 0.1, 0)
