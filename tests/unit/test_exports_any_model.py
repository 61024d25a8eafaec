"""The Android and web exports take any one-input, one-output model: with the user's samples,
or, without them, the embedded digits for a digits-shaped model and seeded inputs over the input's
int8 range otherwise (said in the export's lines)."""

import json

import numpy as np
import pytest

from aa_tflite.targets import TARGETS
from aa_tflite.targets.android import default_samples


@pytest.mark.parametrize("target", ["android", "web"])
def test_a_users_1d_model_exports_without_samples_and_with_its_own(mnist1d_tflite, tmp_path,
                                                                    target):
    done = TARGETS[target].export(mnist1d_tflite, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "samples.json").read_text())
    assert meta["shape"] == [16, 40, 1] and meta["labels"] is None
    assert any("seeded random inputs over the input's int8 range" in line for line in done.lines)
    x = np.linspace(-1, 1, 3 * 40, dtype=np.float32).reshape(3, 40, 1)
    done = TARGETS[target].export(mnist1d_tflite, tmp_path / "b", samples=(x, [1, 2, 3]))
    meta = json.loads((tmp_path / "b" / "samples.json").read_text())
    assert meta["shape"] == [3, 40, 1] and meta["labels"] == [1, 2, 3]
    assert np.array_equal(np.fromfile(tmp_path / "b" / "samples.bin", "<f4").reshape(x.shape), x)
    assert not any(line.startswith("Samples:") for line in done.lines)


def test_an_image_model_gets_the_digits_and_the_samples_are_deterministic(digits_tflite,
                                                                          mnist1d_tflite):
    x, y, what = default_samples(digits_tflite)
    assert x.shape == (16, 8, 8, 1) and y is not None and what == "16 held-out digits"
    a, b = default_samples(mnist1d_tflite), default_samples(mnist1d_tflite)
    assert np.array_equal(a[0], b[0]) and a[1] is None and a[0].std() > 0
