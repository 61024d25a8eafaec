"""The aa_tflite metadata inside a .tflite, and the bits a file without it implies."""

import json

import numpy as np
import pytest

from aa_tflite.runtime.interpreter import run_model
from aa_tflite.tflite import flatbuffer, memory, metadata, ops
from aa_tflite.types import AAError
from tests.helpers import DIGITS_SITES, all_low_bit


def test_round_trip_replace_and_strip(digits_tflite):
    assert metadata.read_metadata(digits_tflite) == {}
    a = metadata.write_metadata(digits_tflite, {"plan": {"sites": {}}, "x": 1})
    assert metadata.read_metadata(a) == {"schema_version": 1, "plan": {"sites": {}}, "x": 1}
    assert metadata.write_metadata(digits_tflite, {"x": 1, "plan": {"sites": {}}}) == a
    b = metadata.write_metadata(a, {"x": 2})
    assert metadata.read_metadata(b)["x"] == 2
    names = [m.name for m in flatbuffer.read(b).metadata]
    assert names.count(b"aa_tflite") + names.count("aa_tflite") == 1
    assert metadata.read_metadata(metadata.strip_metadata(b)) == {}


def test_metadata_changes_neither_outputs_nor_the_tflm_arena(digits_data, digits_tflite):
    tagged = metadata.write_metadata(digits_tflite, {"note": "y" * 500})
    x = digits_data.x_val[:64]
    assert np.array_equal(run_model(tagged, x), run_model(digits_tflite, x))
    assert memory.tflm_arena(tagged) == memory.tflm_arena(digits_tflite)


def test_damaged_or_newer_metadata_is_a_clear_error(digits_tflite):
    model = flatbuffer.read(metadata.write_metadata(digits_tflite, {}))
    entry = [m for m in model.metadata if metadata._name(m) == "aa_tflite"][0]
    model.buffers[entry.buffer].data = np.frombuffer(b"{not json", np.uint8).copy()
    with pytest.raises(AAError, match="not valid JSON"):
        metadata.read_metadata(flatbuffer.write(model))
    model.buffers[entry.buffer].data = np.frombuffer(
        json.dumps({"schema_version": 99}).encode(), np.uint8).copy()
    with pytest.raises(AAError, match="Upgrade aa-tflite"):
        metadata.read_metadata(flatbuffer.write(model))


def test_plain_int8_file_has_no_low_bit_tensors(digits_tflite, mnist1d_tflite):
    assert metadata.stored_bits(digits_tflite) == {}
    assert metadata.stored_bits(mnist1d_tflite) == {}


@pytest.mark.parametrize("bits", [6, 4, 2])
def test_bits_derived_from_the_file_match_the_edit(bits, digits_data, digits_tflite):
    graphs, edited = all_low_bit(digits_tflite, DIGITS_SITES, digits_data.x_cal, bits)
    expected = {t: bits for g in graphs.values() for t in g.group}
    assert metadata.stored_bits(edited) == expected
    # and a wrong claim in the metadata is what the metadata says (it is the plan's record)
    tagged = metadata.write_metadata(edited, {"tensor_bits": {"14": 3}})
    assert metadata.stored_bits(tagged) == {14: 3}


def test_relu6_and_pass_through_levels_come_from_the_clamp():
    from aa_tflite.tflite.metadata import _clamp_levels

    assert _clamp_levels(6 / 255, -128, 0.0, 6.0) == 256
    assert _clamp_levels(1.5 / 15, 112, 0.0, 6.0) == 16  # the top saturates at 127
    assert _clamp_levels(1 / 8, 120, -1.0, 1.0) == 16  # signed form: 112..127
    assert _clamp_levels(0.05, -128, None, None) == 256
    assert "MAX_POOL_2D" in ops.SAME_PARAMS
