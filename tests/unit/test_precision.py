"""The precision table and the bit menu: one place for levels, zero points and bytes."""

import pytest

from aa_tflite.precision import (
    DEFAULT_MENU,
    PRECISIONS,
    bits_for_levels,
    check_menu,
    precision,
)
from aa_tflite.types import AAError


@pytest.mark.parametrize("bits", sorted(PRECISIONS))
def test_each_precision_uses_the_top_of_the_int8_range(bits):
    p = precision(bits)
    assert p.levels == 2 ** bits
    assert p.zero_point + p.top == 127  # int8 saturation is the top clamp
    assert p.zero_point >= -128
    assert p.nbytes(1000) == -(-1000 * bits // 8)
    assert p.step(p.top * 0.25) == pytest.approx(0.25)
    assert bits_for_levels(p.levels) == bits


def test_packed_bytes_round_up_per_tensor():
    assert precision(3).nbytes(3) == 2  # 9 bits
    assert precision(2).nbytes(4) == 1
    assert precision(8).nbytes(7) == 7


def test_menu_is_checked_sorted_and_without_eight():
    assert check_menu(None) == DEFAULT_MENU == (6, 5, 4, 3, 2)
    assert check_menu([2, 4, 4, 8]) == (4, 2)
    assert check_menu(()) == ()
    for bad in ([7], [4, "x"], "4", 4, [True]):
        with pytest.raises(AAError, match="bits"):
            check_menu(bad)
