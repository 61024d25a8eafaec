"""The unit tier: no TensorFlow, no Keras, seconds in all. A test here that imports either fails."""

import sys

import pytest

_HEAVY = ("tensorflow", "keras")


@pytest.fixture(autouse=True)
def _no_tensorflow():
    before = {m for m in _HEAVY if m in sys.modules}
    yield
    pulled = [m for m in _HEAVY if m in sys.modules and m not in before]
    assert not pulled, f"a unit test imported {pulled}; move it to tests/integration"
