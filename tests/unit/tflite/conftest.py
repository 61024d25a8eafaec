"""The committed MobileNetV2-style fixture and its inputs, shared by the rewrite tests
(``test_channel_split``, ``test_patches``)."""

import numpy as np
import pytest

from aa_tflite.runtime.interpreter import make_interpreter, quantize
from aa_tflite.types import Kernels
from tests.conftest import FIXTURES, fixture_bytes
from tests.helpers import adversarial


@pytest.fixture(scope="module")
def mobile() -> bytes:
    return fixture_bytes("mobile_int8.tflite")


@pytest.fixture(scope="module")
def inputs(mobile) -> np.ndarray:
    """16 calibration inputs, then 32 adversarial ones, as int8 samples."""
    detail = make_interpreter(mobile, Kernels.BUILTIN).get_input_details()[0]
    real = quantize(np.load(f"{FIXTURES}/mobile_cal.npz")["x"].astype(np.float32), detail)
    return np.concatenate([real, *adversarial((16, 16, 3), np.random.RandomState(0))])
