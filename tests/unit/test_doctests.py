"""The docstring examples of every module outside ``frontend`` (which needs TensorFlow) run and
pass; examples that need a model or a file are marked ``+SKIP`` where they are written."""

import doctest
import importlib
import pkgutil

import pytest

import aa_tflite

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(aa_tflite.__path__, "aa_tflite.")
    if not m.name.startswith("aa_tflite.frontend"))
# These modules' examples are real, not skipped: a module whose examples all vanished fails.
RUN = {"aa_tflite.precision", "aa_tflite.search.planner", "aa_tflite.tflite.ops",
       "aa_tflite.tflite.kernel_math", "aa_tflite.lowering", "aa_tflite.lowering.relu",
       "aa_tflite.lowering.signed", "aa_tflite.lowering.offset", "aa_tflite.config",
       "aa_tflite.search.memory_modes", "aa_tflite.tflite.layout", "aa_tflite.targets",
       "aa_tflite.types"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name in RUN:
        assert result.attempted > 0


def test_the_run_list_names_real_modules():
    assert RUN <= set(MODULES)
