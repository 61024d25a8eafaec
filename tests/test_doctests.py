"""The docstring examples of the modules that need no model or file run, and pass."""

import doctest
import importlib

import pytest

MODULES = ["aa_tflite.precision", "aa_tflite.search.planner", "aa_tflite.tflite.memory",
           "aa_tflite.search.bench", "aa_tflite.lowering.signed", "aa_tflite.search.baseline",
           "aa_tflite.config", "aa_tflite.search.memory_modes", "aa_tflite.tflite.layout",
           "aa_tflite.types",
           "aa_tflite.tflite.metadata"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name in ("aa_tflite.precision", "aa_tflite.search.planner", "aa_tflite.lowering.signed"):
        assert result.attempted > 0  # these modules' examples are real, not skipped
