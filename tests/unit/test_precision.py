"""The precision table and the bit menu: one place for levels, zero points and bytes."""

import numpy as np
import pytest

from aa_tflite.precision import (
    DEFAULT_MENU,
    PRECISIONS,
    bits_for_levels,
    check_menu,
    precision,
)
from aa_tflite.runtime.interpreter import load_interpreter, quantize
from aa_tflite.tflite import flatbuffer
from aa_tflite.types import AAError
from tests.helpers import all_low_bit


@pytest.mark.parametrize("bits", DEFAULT_MENU)
def test_an_edited_tensor_tops_out_at_int8_127_and_bottoms_at_the_zero_point(
        bits, digits_tflite, digits_data):
    """The table's promise, on a real edited tensor and inputs far past the calibration range:
    int8 saturation (127) is the top level, the fused ReLU clamps at the zero point, and
    nothing lies between but the 2^bits levels."""
    p = precision(bits)
    _, edited = all_low_bit(digits_tflite, {"conv1_relu": 14}, digits_data.x_cal, bits)
    info = flatbuffer.describe(flatbuffer.read(edited))[1][14]
    assert info.zero_point == (p.zero_point,)
    interp = load_interpreter(edited, preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], quantize(digits_data.x_val[:1] * 50, inp))
    interp.invoke()
    stored = interp.get_tensor(14)
    assert stored.max() == 127 and stored.min() == p.zero_point
    assert len(np.unique(stored)) <= p.levels
    assert bits_for_levels(len(np.unique(stored))) <= bits


@pytest.mark.parametrize("bits", sorted(PRECISIONS))
def test_bits_for_levels_inverts_the_table(bits):
    assert bits_for_levels(precision(bits).levels) == bits
    assert bits_for_levels(precision(bits).levels + 1) == min(bits + 1, 9)


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
