"""The docstring examples of the modules that need no model or file run, and pass."""

import doctest
import importlib

import pytest

MODULES = ["aa_tflite.precision", "aa_tflite.planner", "aa_tflite.memory",
           "aa_tflite.sensitivity", "aa_tflite.signed", "aa_tflite.stages", "aa_tflite.types",
           "aa_tflite.metadata"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name in ("aa_tflite.precision", "aa_tflite.planner", "aa_tflite.signed"):
        assert result.attempted > 0  # these modules' examples are real, not skipped
