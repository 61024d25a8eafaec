"""The one table of activation precisions: bits -> levels, zero point, bytes. No TensorFlow import.

Stock TFLite and TFLite Micro kernels have no activation type narrower than int8, so a ``b``-bit
activation is an int8 tensor held to ``2^b`` levels by its quantization parameters alone (the
*zero-point form*): scale ``clip / (2^b - 1)`` and zero point ``128 - 2^b``. A producer's fused
ReLU clamps below at the zero point and int8 saturates at 127, so the tensor holds the levels
``128 - 2^b .. 127`` for any input, the top one being the clip. 8 bits is the plain int8 tensor
(zero point -128, 256 levels). Memory is counted at ``ceil(elements * b / 8)`` bytes everywhere
(planner, report, plots, ``inspect``): real only on a runtime that packs activations.

Every other module asks this table; nothing else writes 15, 112 or "16 levels".

Example:
    >>> p = precision(4)
    >>> (p.levels, p.zero_point, p.nbytes(10))
    (16, 112, 5)
    >>> p.step(1.5)
    0.1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from aa_tflite.types import AAError, Bits

__all__ = ["DEFAULT_MENU", "LOW_BITS", "PRECISIONS", "Precision", "bits_for_levels", "check_menu",
           "packed_bytes", "precision"]


@dataclasses.dataclass(frozen=True)
class Precision:
    """One row of the precision table.

    Attributes:
        bits: Bits per stored element.
        levels: Distinct values the tensor holds, ``2^bits``.
        zero_point: The int8 zero point of the zero-point form, ``128 - 2^bits``.
    """

    bits: int
    levels: int
    zero_point: int

    @property
    def top(self) -> int:
        """Steps from the zero point to the top level (the clip): ``levels - 1``."""
        return self.levels - 1

    def step(self, clip: float) -> float:
        """The quantization step (scale) that puts the top level at ``clip``."""
        return float(clip) / self.top

    def nbytes(self, elements: int) -> int:
        """Packed bytes of a tensor of ``elements`` values at this precision."""
        return packed_bytes(elements, self.bits)


def packed_bytes(elements: int, bits: int) -> int:
    """Bytes of ``elements`` values of ``bits`` bits each, packed: ``ceil(elements * bits / 8)``
    (the one place this formula is written).

    Example:
        >>> packed_bytes(10, 4), packed_bytes(3, 32)
        (5, 12)
    """
    return math.ceil(int(elements) * int(bits) / 8)


PRECISIONS: dict[int, Precision] = {
    int(b): Precision(int(b), 2 ** int(b), 128 - 2 ** int(b)) for b in Bits}
# Every precision below int8, widest first. Adding a bit-width is one ``Bits`` member: the table,
# this list, the default menu, the signed lowering's widths and the CLI's help follow from it.
LOW_BITS: tuple[int, ...] = tuple(sorted((b for b in PRECISIONS if b < 8), reverse=True))
# What ``convert`` offers by default: every narrower precision (each has a zero-cost lowering).
DEFAULT_MENU: tuple[int, ...] = LOW_BITS


def precision(bits: int) -> Precision:
    """The table row for ``bits``.

    Raises:
        AAError: ``bits`` is not in the table.
    """
    try:
        return PRECISIONS[int(bits)]
    except (KeyError, TypeError, ValueError) as e:
        raise AAError(f"bits must be one of {sorted(PRECISIONS, reverse=True)}. "
                      f"Received: bits={bits!r}") from e


def bits_for_levels(levels: int) -> int:
    """The fewest bits that hold ``levels`` distinct values (``inspect`` on a file without
    metadata). At least 1; 8 or more for a full int8 tensor.

    Example:
        >>> bits_for_levels(16), bits_for_levels(15), bits_for_levels(256)
        (4, 4, 8)
    """
    return max(1, math.ceil(math.log2(max(int(levels), 2))))


def check_menu(bits: Iterable[int] | None) -> tuple[int, ...]:
    """Checks a bit menu: narrower-than-8 precisions from the table, widest first.

    ``None`` is the default menu; an empty menu plans 8 bits only (thresholds, where they save).

    Example:
        >>> check_menu([4, 2, 8, 4])
        (4, 2)
    """
    if bits is None:
        return DEFAULT_MENU
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Iterable):
        raise AAError(f"bits must be a list of bit-widths from {sorted(PRECISIONS, reverse=True)}, "
                      f"e.g. bits=[6, 4, 2]. Received: bits={bits!r}")
    out = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, int) and not (
                hasattr(b, "__index__") and not isinstance(b, float)):
            raise AAError(f"bits must hold integers. Received: {b!r} in bits={list(bits)!r}")
        p = precision(b)
        if p.bits < 8 and p.bits not in out:
            out.append(p.bits)
    return tuple(sorted(out, reverse=True))
