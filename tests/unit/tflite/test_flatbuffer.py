"""``describe_bytes`` reads what ``describe`` reads, straight from the bytes."""

import pytest

from aa_tflite.tflite import flatbuffer
from tests.conftest import fixture_bytes


@pytest.mark.parametrize("name", ["digits_int8.tflite", "mnist1d_int8.tflite",
                                  "mobile_int8.tflite"])
def test_describe_bytes_equals_describe(name):
    data = fixture_bytes(name)
    model = flatbuffer.read(data)
    ops, tensors, outputs = flatbuffer.describe_bytes(data)
    assert (ops, tensors) == flatbuffer.describe(model)
    assert outputs == tuple(int(t) for t in model.subgraphs[0].outputs)
    assert any(op.fused_activation not in (None, "NONE") for op in ops)  # options were read
