"""``aa_tflite.metrics``: built-in scores, the default per output shape, callables, several
outputs with weights, and clear errors for bad metric options."""

import numpy as np
import pytest

from aa_tflite.config import ConvertConfig
from aa_tflite.metrics import METRICS, default_metric, make_scorer
from aa_tflite.types import AAError


def test_builtins_score_what_they_say():
    ref = np.eye(4)[[0, 1, 2, 3]]
    out = np.eye(4)[[0, 1, 3, 3]]
    assert METRICS["agreement"](ref, out) == 0.75
    assert METRICS["top1"](np.array([0, 1, 2, 2]), out) == 0.5
    assert METRICS["relative_mse"](ref, ref) == 1.0
    assert METRICS["relative_mse"](ref, np.zeros_like(ref)) == 0.0
    assert METRICS["relative_mse"](ref, ref * 0.9) == pytest.approx(1 - 0.01)
    mask = np.zeros((2, 4, 4))
    mask[:, :2] = 1.0
    half = mask.copy()
    half[:, :, 2:] = 0.0  # half the positives kept
    assert METRICS["iou"](mask, half) == pytest.approx(0.5)
    assert METRICS["iou"](np.zeros((1, 3)), np.zeros((1, 3))) == 1.0  # empty union


def test_the_default_fits_the_output_and_says_so():
    assert default_metric((10,), True) == "top1" and default_metric((10,), False) == "agreement"
    assert default_metric((1, 1, 5), False) == "agreement"  # a class vector with unit axes
    for shape in ((32, 32, 1), (1,), (4, 4)):
        assert default_metric(shape, False) == "relative_mse"
    s = make_scorer(None, None, shapes=[(10,), (16, 16, 1)], labelled=[True, False])
    assert s.names == ("top1", "relative_mse") and s.defaulted == (True, True)
    assert s.weights == (0.5, 0.5) and not s.classifier
    assert "output 1: relative_mse (default)" in s.describe()
    assert make_scorer(None, None, shapes=[(3,)], labelled=[False]).classifier


def test_several_outputs_are_combined_by_weight_and_a_callable_gets_labels_or_float():
    seen = {}

    def mine(y, out):
        seen["y"] = y
        return 0.25

    s = make_scorer(["agreement", mine], [3, 1], shapes=[(3,), (2,)], labelled=[False, True])
    assert s.weights == (0.75, 0.25) and s.names == ("agreement", "mine")
    ref, labels = [np.eye(3), np.ones((3, 2))], [None, np.array([1, 0, 1])]
    assert s.score([np.eye(3), np.zeros((3, 2))], ref, labels) == pytest.approx(0.75 + 0.0625)
    assert np.array_equal(seen["y"], labels[1])  # the labels, when given
    s.score([np.eye(3), np.zeros((3, 2))], ref, [None, None])
    assert np.array_equal(seen["y"], ref[1])  # else the float outputs


@pytest.mark.parametrize("metric, weights, labelled, fragment", [
    ("accuracy", None, [True], "not a built-in"),
    (3, None, [True], "must be a built-in name"),
    (["top1", "iou"], None, [True], "2 metrics for a model with 1 outputs"),
    ("top1", None, [False], "needs labels"),
    (None, [1, 2], [True], "output_weights must be 1"),
    (None, [-1], [True], "non-negative"),
    (None, [0], [True], "not all zero"),
])
def test_bad_metrics_are_clear_errors(metric, weights, labelled, fragment):
    with pytest.raises(AAError, match=fragment):
        make_scorer(metric, weights, shapes=[(10,)], labelled=labelled)


def test_a_bad_metric_fails_in_the_config_before_any_work():
    with pytest.raises(AAError, match="not a built-in"):
        ConvertConfig(metric="f1")
    assert ConvertConfig(metric=["iou", None]).metric == ("iou", None)
    with pytest.raises(AAError, match="finite score"):
        make_scorer(lambda y, o: float("nan"), None, shapes=[(2,)], labelled=[False]).score(
            [np.eye(2)], [np.eye(2)], None)
