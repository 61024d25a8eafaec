"""The end-to-end tier: the CLI, tflite-runtime, the browser, the Android core and the
random-graph subset. Every test here is marked ``slow`` (``pytest -m "not slow"`` leaves them
out); ``make test`` runs them."""

import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.path).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.slow)
