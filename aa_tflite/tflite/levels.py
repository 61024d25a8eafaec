"""An int8 tensor's values as the interpreter stores them, and exact statistics read from them.
No TensorFlow import.

A fit on a tensor of a ``.tflite`` reads values that take at most 256 levels per channel. Counting
the levels once (``Stored.counts``) gives every order statistic and every sum over the values
exactly, at the cost of one pass over 1-byte values instead of passes over float64 copies.

Example:
    >>> s = Stored(np.array([[0, 2], [1, 2], [1, -128]], np.int8), 0.5, -1)
    >>> s.values().tolist()
    [[0.5, 1.5], [1.0, 1.5], [1.0, -63.5]]
    >>> int(s.counts()[0, 129])  # channel 0 holds stored level 1 twice
    2
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aa_tflite.types import AAError

__all__ = ["LEVELS", "Stored", "quantiles_from_counts"]

LEVELS = 256  # stored int8 values: -128..127


@dataclasses.dataclass(frozen=True, eq=False)
class Stored:
    """Values ``(positions, channels)`` of an int8 tensor as stored: each reads as
    ``scale * (raw - zero)``.

    Attributes:
        raw: The stored int8 values.
        scale: The tensor's scale.
        zero: Its zero point.
    """

    raw: np.ndarray
    scale: float
    zero: int

    def __post_init__(self) -> None:
        if self.raw.dtype != np.int8:
            raise AAError(f"Stored takes int8 values, not {self.raw.dtype}.")

    def values(self) -> np.ndarray:
        """The values in float32, as ``runtime.interpreter.dequantize`` reads them."""
        return (self.raw.astype(np.float32) - self.zero) * self.scale

    def level_values(self) -> np.ndarray:
        """The float32 value of each stored level, -128 first (``LEVELS`` of them)."""
        return (np.arange(-128, 128, dtype=np.float32) - self.zero) * self.scale

    def counts(self) -> np.ndarray:
        """``(channels, LEVELS)``: how many values of each channel sit at each level."""
        raw = self.raw.reshape(-1, self.raw.shape[-1])
        channels = raw.shape[1]
        out = np.empty((channels, LEVELS), np.int64)
        for start in range(0, channels, 64):  # a few channels at a time: small index arrays
            block = raw[:, start:start + 64].astype(np.int32) + 128
            block += LEVELS * np.arange(block.shape[1], dtype=np.int32)
            out[start:start + block.shape[1]] = np.bincount(
                block.reshape(-1), minlength=LEVELS * block.shape[1]).reshape(-1, LEVELS)
        return out


def quantiles_from_counts(values: np.ndarray, counts: np.ndarray,
                          quantiles: tuple[float, ...]) -> np.ndarray:
    """``np.quantile(x, quantiles)`` (linear interpolation) of a multiset ``x`` that holds
    ``counts[k]`` copies of ``values[k]``, ``values`` ascending; 0 where ``counts`` sums to 0.

    Example:
        >>> quantiles_from_counts(np.array([1.0, 2.0, 4.0]), np.array([1, 0, 3]), (0.0, 0.5, 1.0))
        array([1., 4., 4.])
    """
    n = int(counts.sum())
    if n == 0:
        return np.zeros(len(quantiles))
    q = np.asarray(quantiles, np.float64)
    index = q * (n - 1)
    lo = np.floor(index).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    ends = np.cumsum(counts)  # the k-th smallest (from 0) is the first level whose end > k
    a = values[np.searchsorted(ends, lo, side="right")]
    b = values[np.searchsorted(ends, hi, side="right")]
    t = index - lo
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
