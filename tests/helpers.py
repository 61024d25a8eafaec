"""What several test modules share: the repository's root, and the gates for tools that live
outside the Python environment (skipped here when missing, a failure under CI)."""

from __future__ import annotations

import os

import pytest

__all__ = ["PI_PYTHON", "ROOT", "need", "need_pi_env"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tflite-runtime needs numpy<2, so it lives in its own virtual environment (`make pi-env`).
PI_PYTHON = os.path.join(ROOT, ".venv-pi", "bin", "python")


def need(missing: str) -> None:
    """Skips the test, or fails it under CI (where every tool must be installed), when
    ``missing`` says something is missing; does nothing when it is empty."""
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)


def need_pi_env() -> str:
    """The ``.venv-pi`` interpreter (tflite-runtime 2.14, numpy<2), or a skip (CI: a failure)."""
    need("" if os.path.exists(PI_PYTHON) else
         ".venv-pi is missing; `make pi-env` (or `make test`) creates it")
    return PI_PYTHON
