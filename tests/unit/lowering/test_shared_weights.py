"""Corrections that leave weight bytes alone (``share_weights``): a reader takes a site's
correction slope, equalized range or signed half-range in its filter scales and bias, so every
point of one layout keeps the int8 conversion's kernels byte for byte."""

import numpy as np
import pytest

from aa_tflite.lowering import reach_all
from aa_tflite.lowering.relu import SiteEdit, apply_edits
from aa_tflite.runtime.interpreter import run_model
from aa_tflite.search.bench import Bench
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import analyse
from aa_tflite.tflite.kernel_math import kernel_bytes as _kernels
from aa_tflite.types import SiteConfig
from tests.conftest import FIXTURES, fixture_bytes
from tests.helpers import DIGITS_SITES


def _filter_scale(tflite: bytes, op_index: int) -> np.ndarray:
    ops, tensors = flatbuffer.describe(flatbuffer.read(tflite))
    return np.asarray(tensors[ops[op_index].inputs[1]].scale, np.float64)


def test_a_common_slope_moves_into_a_conv_readers_filter_scales(digits_data, digits_tflite):
    graphs = analyse(digits_tflite, DIGITS_SITES)
    op, t_in = graphs["conv2_relu"].correction_consumer
    n = flatbuffer.describe(flatbuffer.read(digits_tflite))[1][t_in].shape[-1]
    b = np.linspace(-0.05, 0.05, n)
    common = apply_edits(digits_tflite, graphs,
                         {"conv2_relu": SiteEdit(correction=(np.full(n, 1.25), b))})
    assert _kernels(common) == _kernels(digits_tflite)
    np.testing.assert_allclose(_filter_scale(common, op), 1.25 * _filter_scale(digits_tflite, op),
                               rtol=1e-6)
    # A slope per input channel cannot move there: that kernel is requantized, the rest stay.
    varied = apply_edits(digits_tflite, graphs,
                         {"conv2_relu": SiteEdit(correction=(np.linspace(0.8, 1.25, n), b))})
    changed = {k for k, v in _kernels(varied).items() if v != _kernels(digits_tflite)[k]}
    assert changed == {op}
    # Moved or folded, a common slope computes the same function, within an output step or two.
    folded = apply_edits(digits_tflite, graphs, {"conv2_relu": SiteEdit(correction=(
        np.full(n, 1.25) * (1 + 1e-9 * np.arange(n)), b))})
    assert _kernels(folded)[op] != _kernels(digits_tflite)[op] or np.any(
        _filter_scale(folded, op) != _filter_scale(common, op))
    x = digits_data.x_val[:200]
    got, want = run_model(common, x), run_model(folded, x)
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 2
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_a_per_channel_slope_moves_into_a_depthwise_readers_filter_scales():
    mobile = fixture_bytes("mobile_int8.tflite")
    graphs = analyse(mobile, {"expand1": 18})  # 1x1 expand conv + ReLU6, read by a depthwise
    op, _ = graphs["expand1"].correction_consumer
    a = np.linspace(0.7, 1.3, 48)
    edited = apply_edits(mobile, graphs, {"expand1": SiteEdit(correction=(a, np.zeros(48)))})
    assert _kernels(edited) == _kernels(mobile)
    np.testing.assert_allclose(_filter_scale(edited, op), a * _filter_scale(mobile, op),
                               rtol=1e-6)
    x = np.load(f"{FIXTURES}/mobile_cal.npz")["x"].astype(np.float32)
    assert run_model(edited, x).shape == run_model(mobile, x).shape


@pytest.fixture(scope="module")
def digits_benches(digits_data, digits_tflite):
    graphs, _ = reach_all(digits_tflite, DIGITS_SITES)
    kw = dict(x_fit=digits_data.x_cal[:64], x_eval=digits_data.x_val[:100],
              y_eval=digits_data.y_val[:100], reference=None)
    return {share: Bench(digits_tflite, graphs, share_weights=share, **kw)
            for share in (True, False)}


def test_every_plan_keeps_the_int8_kernels_when_weights_are_shared(digits_benches,
                                                                   digits_tflite):
    base = _kernels(digits_tflite)
    plans = [{s: SiteConfig(bits=4) for s in DIGITS_SITES},
             {s: SiteConfig(bits=b, threshold=0.0) for s, b in zip(DIGITS_SITES, (6, 3, 2, 5))},
             {"conv1_relu": SiteConfig(bits=2), "fc1_relu": SiteConfig(bits=3)}]
    shared, folded = digits_benches[True], digits_benches[False]
    for plan in plans:
        assert _kernels(shared.build(plan)) == base
    # The check can fail: folded into the kernels, the corrections change some of them.
    assert any(_kernels(folded.build(p)) != base for p in plans)
    # And sharing costs little here: 4 bits everywhere scores within 2 points either way.
    losses = [b.loss(b.measure(b.build(plans[0]))) for b in (shared, folded)]
    assert losses[0] <= losses[1] + 2.0, losses
