"""``describe_bytes`` reads what ``describe`` reads, straight from the bytes; ``read`` keeps
files read again."""

import hashlib

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


@pytest.mark.parametrize("name", ["digits_int8.tflite", "mobile_int8.tflite"])
def test_a_file_read_again_is_a_new_tree_equal_to_a_fresh_unpacking(name, monkeypatch):
    """From the second read on, a file's tree comes from its kept pickle: each read is a new
    tree (an edit to one is not seen by the next), and it writes the same bytes as the
    unpacked one."""
    monkeypatch.setattr(flatbuffer, "_UNPACKED", flatbuffer._Unpacked())
    data = fixture_bytes(name)
    fresh = flatbuffer.read(data)  # unpacked, seen once
    again = flatbuffer.read(data)  # unpacked, and kept
    assert flatbuffer._UNPACKED.get(hashlib.blake2b(data, digest_size=20).digest()) is not None
    kept = flatbuffer.read(data)  # from the pickle
    assert len({id(fresh), id(again), id(kept)}) == 3
    kept.subgraphs[0].tensors[0].name = b"edited"
    assert flatbuffer.read(data).subgraphs[0].tensors[0].name != b"edited"
    assert flatbuffer.write(flatbuffer.read(data)) == flatbuffer.write(fresh)
    edited = flatbuffer.write(kept)
    assert edited != flatbuffer.write(fresh) and flatbuffer.read(edited).subgraphs[0] \
        .tensors[0].name == b"edited"
