"""The docstring examples of the modules that need no model or file run, and pass."""

import doctest
import importlib

import pytest

MODULES = ["aa_tflite.precision", "aa_tflite.search.planner", "aa_tflite.tflite.memory",
           "aa_tflite.search.bench", "aa_tflite.search.baseline", "aa_tflite.types",
           "aa_tflite.tflite.metadata", "aa_tflite.tflite.ops", "aa_tflite.tflite.kernel_math",
           "aa_tflite.lowering", "aa_tflite.lowering.relu", "aa_tflite.lowering.signed",
           "aa_tflite.lowering.offset"]
# These modules' examples are real, not skipped.
RUN = {"aa_tflite.precision", "aa_tflite.search.planner", "aa_tflite.tflite.ops",
       "aa_tflite.tflite.kernel_math", "aa_tflite.lowering", "aa_tflite.lowering.relu",
       "aa_tflite.lowering.signed", "aa_tflite.lowering.offset"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name in RUN:
        assert result.attempted > 0
