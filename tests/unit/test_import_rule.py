"""The import rule the README's "Architecture" section states, checked in a fresh process per
subpackage: what importing every module of a subpackage pulls in."""

import json
import subprocess
import sys

import pytest

BASE = ("aa_tflite.types", "aa_tflite.precision", "aa_tflite.config", "aa_tflite.files",
        "aa_tflite.quiet", "aa_tflite.metrics", "aa_tflite.kept")
TFLITE = (*BASE, "aa_tflite.tflite")
LOWERING = (*TFLITE, "aa_tflite.lowering")
RUNTIME = ("aa_tflite.types", "aa_tflite.runtime")
SEARCH = (*LOWERING, "aa_tflite.runtime", "aa_tflite.search")
TARGETS = (*TFLITE, "aa_tflite.runtime", "aa_tflite.targets")
SCHEMA = "ai_edge_litert.schema_py_generated"

# subpackage -> (aa_tflite packages it may load, whether the LiteRT schema may load)
RULES = {
    "aa_tflite.types": (BASE, False),
    "aa_tflite.precision": (BASE, False),
    "aa_tflite.config": (BASE, False),
    "aa_tflite.tflite": (TFLITE, True),
    "aa_tflite.lowering": (LOWERING, True),
    "aa_tflite.runtime": (RUNTIME, False),
    "aa_tflite.search": (SEARCH, True),
    "aa_tflite.targets": (TARGETS, True),
}

_CHILD = r"""
import importlib, json, pkgutil, sys
name = sys.argv[1]
mod = importlib.import_module(name)
for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
    importlib.import_module(f"{name}.{info.name}")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("aa_tflite", "tensorflow",
      "keras", "ai_edge_litert")))))
"""


def _loaded(name: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _CHILD, name], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_subpackage_loads_only_the_tiers_below_it(name):
    allowed, schema = RULES[name]
    loaded = _loaded(name)
    assert not [m for m in loaded if m.split(".")[0] in ("tensorflow", "keras")], loaded
    assert schema or SCHEMA not in loaded
    ours = [m for m in loaded if m.startswith("aa_tflite.")]
    stray = [m for m in ours if not m.startswith(tuple(allowed))]
    assert not stray, f"{name} pulls in {stray}; the rule allows only {allowed}"


def test_the_rule_catches_a_stray_import():
    """The check above can fail: the front door loads the search and the frontend's modules."""
    loaded = _loaded("aa_tflite.conversion")
    assert any(m.startswith("aa_tflite.search") for m in loaded)
    assert not all(m.startswith(RUNTIME) for m in loaded if m.startswith("aa_tflite."))
