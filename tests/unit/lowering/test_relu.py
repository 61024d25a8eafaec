"""The ReLU zero-point lowering on committed int8 files: b-bit tensors hold 2^b levels for any
input, and nothing is added at run time."""

import numpy as np
import pytest

from aa_tflite.lowering import relu
from aa_tflite.precision import DEFAULT_MENU, precision
from aa_tflite.runtime.interpreter import evaluate, load_interpreter, quantize
from aa_tflite.search.calibrate import stored_levels
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.analyse import analyse
from aa_tflite.types import AAError
from tests.helpers import (
    DIGITS_SITES,
    MNIST1D_SITES,
    adversarial,
    all_low_bit,
    assert_runs_in_tflite_micro_like_litert,
)

# The tensors besides the site tensors that carry the sites' levels: digits' max-pool (16) and
# flatten RESHAPE (21) outputs; in MNIST-1D the convs' outputs behind each site's RESHAPE (19, 22,
# 25), the EXPAND_DIMS outputs the next conv reads (21, 24) and conv3's flatten RESHAPE (26).
PASS_THROUGH = {"digits": {16, 21}, "mnist1d": {19, 21, 22, 24, 25, 26}}


@pytest.mark.parametrize("bits", DEFAULT_MENU)
@pytest.mark.parametrize("which", ["digits", "mnist1d"])
def test_low_bit_sites_hold_at_most_2_to_the_bits_levels_on_real_and_adversarial_inputs(
        which, bits, digits_data, digits_tflite, mnist1d_tflite):
    rng = np.random.RandomState(0)
    if which == "digits":
        tflite, x = digits_tflite, digits_data.x_val
        sites = DIGITS_SITES
    else:
        from tests.conftest import FIXTURES

        tflite = mnist1d_tflite
        x = np.load(f"{FIXTURES}/mnist1d_cal.npz")["x"]
        sites = MNIST1D_SITES
    graphs, edited = all_low_bit(tflite, sites, x[:100], bits)
    p = precision(bits)
    inp = load_interpreter(edited).get_input_details()[0]
    real = [quantize(x[i:i + 50], inp) for i in range(0, len(x), 50)]
    real += [quantize(x[:50] * 5.0, inp)]  # 5x the calibration range
    shape = tuple(int(d) for d in inp["shape"][1:])
    group = sorted({t for g in graphs.values() for t in g.group})
    assert set(group) - set(sites.values()) == PASS_THROUGH[which]  # checked too, below
    for name, batches in (("real", real), ("adversarial", adversarial(shape, rng))):
        seen = stored_levels(edited, group, batches)
        for t, levels in seen.items():
            assert len(levels) <= p.levels, (name, t, sorted(levels))
            assert min(levels) >= p.zero_point and max(levels) <= 127
        if name == "adversarial":  # saturation at the top level, not wrap-around
            assert any(127 in levels for levels in seen.values())


@pytest.mark.parametrize("bits", [6, 4, 2])
def test_low_bit_edit_adds_no_op_or_tensor_and_keeps_the_tflm_arena(bits, digits_data,
                                                                    digits_tflite):
    _, edited = all_low_bit(digits_tflite, DIGITS_SITES, digits_data.x_cal, bits)
    ops0, t0 = flatbuffer.describe(flatbuffer.read(digits_tflite))
    ops1, t1 = flatbuffer.describe(flatbuffer.read(edited))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]
    assert [(t.shape, t.dtype) for t in t0] == [(t.shape, t.dtype) for t in t1]
    assert t1[14].zero_point == (128 - 2 ** bits,) and t0[14].zero_point == (-128,)
    assert memory.tflm_arena(edited) == memory.tflm_arena(digits_tflite)
    if bits >= 4:  # all four sites at 2 bits loses more than that, by design of the test
        assert evaluate(edited, digits_data.x_val, digits_data.y_val) >= evaluate(
            digits_tflite, digits_data.x_val, digits_data.y_val) - 0.02


@pytest.mark.parametrize("bits", [4, 2])
def test_edited_model_runs_in_tflite_micro_like_in_litert(bits, digits_data, digits_tflite):
    _, edited = all_low_bit(digits_tflite, DIGITS_SITES, digits_data.x_cal, bits)
    assert_runs_in_tflite_micro_like_litert(edited, digits_data.x_val)


def test_empty_edit_is_the_same_bytes_and_analysis_finds_groups(digits_tflite):
    graphs = analyse(digits_tflite, DIGITS_SITES)
    assert relu.apply_edits(digits_tflite, graphs, {}) == digits_tflite
    assert graphs["conv2_relu"].group == (15, 16)  # the max-pool output shares its parameters
    assert graphs["conv3_relu"].group == (17, 21)  # so does the flatten reshape
    assert graphs["conv3_relu"].correction_consumer == (8, 21)
    assert all(g.can_requantize and g.can_threshold for g in graphs.values())


def test_edits_that_cannot_be_made_are_refused(digits_tflite):
    graphs = analyse(digits_tflite, DIGITS_SITES)
    with pytest.raises(AAError, match="sites this model does not have"):
        relu.apply_edits(digits_tflite, graphs, {"nope": relu.SiteEdit(threshold=1)})
    with pytest.raises(AAError, match="positive"):
        relu.apply_edits(digits_tflite, graphs,
                         {"conv1_relu": relu.SiteEdit(scale=-1.0, zero_point=112)})


def _fit_clip_reference(values, threshold, bits):
    """fit_clip as first written: a full float64 copy, shifted and clipped in place."""
    v = np.maximum(np.array(values, np.float64).reshape(-1) - threshold, 0.0)
    pos = v[v > 0]
    if pos.size == 0:
        return 0.0
    if pos.size > 200_000:
        v = v[np.linspace(0, v.size - 1, 200_000).astype(np.int64)]
    top, best = precision(bits).top, None
    for c in np.quantile(pos, relu._CLIP_QUANTILES):
        c = float(c)
        if c <= 0:
            continue
        err = float(np.mean((v - np.clip(np.round(v / (c / top)), 0, top) * (c / top)) ** 2))
        if best is None or err < best[0] - 1e-15:
            best = (err, c)
    return best[1]


@pytest.mark.parametrize("threshold", [0.0, 0.37, 5.0])
@pytest.mark.parametrize("size", [1000, 300_000])
def test_fit_clip_without_a_full_copy_picks_the_clip_it_picked_with_one(threshold, size):
    """fit_clip reads the positive values without shifting a copy of every value: the same clip,
    bit for bit, on small and subsampled inputs, with and without a threshold."""
    rng = np.random.RandomState(size)
    values = np.where(rng.rand(size) < 0.4, 0.0, rng.gamma(2.0, 1.0, size)).astype(np.float32)
    together = relu.fit_clip_bits(values, threshold, menu=(2, 4, 6))
    for bits in (2, 4, 6):
        assert relu.fit_clip(values, threshold, bits=bits) == _fit_clip_reference(
            values, threshold, bits) == together[bits]


def _fit_clips_reference(values, threshold, bits):
    """fit_clips as first written: a float64 copy of every value, NaN-masked quantiles."""
    v = np.maximum(np.asarray(values, np.float64).reshape(-1, np.shape(values)[-1]) - threshold,
                   0.0)
    live = np.any(v > 0, axis=0)
    cands = np.zeros((len(relu._CLIP_QUANTILES), v.shape[1]))
    cols = np.flatnonzero(live)
    cands[:, cols] = np.nanquantile(np.where(v[:, cols] > 0, v[:, cols], np.nan),
                                    relu._CLIP_QUANTILES, axis=0)
    if len(v) > relu._CLIP_ROWS:
        v = v[np.linspace(0, len(v) - 1, relu._CLIP_ROWS).astype(np.int64)]
    out = np.zeros(live.shape)
    if live.any():
        out[live] = relu._best_clips(v[:, live], cands[:, live], precision(bits).top)
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.37])
@pytest.mark.parametrize("rows", [700, 80_000])
def test_fit_clips_a_channel_at_a_time_picks_the_clips_of_the_full_copy(threshold, rows):
    """fit_clips reads a channel (or a block of channels) at a time and shares its quantiles
    between precisions: the same clips, bit for bit, with dead channels, more channels than a
    block, int8-like levels and a threshold; a second call with the same values hits the kept
    quantiles and still agrees."""
    rng = np.random.RandomState(rows)
    codes = np.clip(rng.normal(-100, 60, size=(rows, 37)).round(), -128, 127)
    values = ((codes + 128) * 0.0235).astype(np.float32)
    values[:, 3] = 0.0  # a dead channel
    values[:, 30] = 0.2  # alive only below the threshold
    for bits in (2, 4, 6, 4):
        got = relu.fit_clips(values, threshold, bits=bits)
        np.testing.assert_array_equal(got, _fit_clips_reference(values, threshold, bits))
    assert got[3] == 0.0 and (got[30] == 0.0) == (threshold > 0.2)


@pytest.mark.parametrize("threshold", [0.0, 0.35])
@pytest.mark.parametrize("rows", [700, 40_000])
def test_fit_clips_on_stored_levels_picks_the_clips_of_the_float_values(threshold, rows):
    """Counted per stored level, the candidates are the float path's bit for bit and every
    value's error is weighed: below ``_CLIP_ROWS`` rows the same clips."""
    from aa_tflite.tflite.levels import Stored

    rng = np.random.default_rng(rows)
    raw = np.clip(-128 + rng.exponential(25, (rows, 20)) * (rng.random((rows, 20)) > 0.5),
                  -128, 127).astype(np.int8)
    raw[:, 3] = -128  # a dead channel
    raw[:, 7] = np.minimum(raw[:, 7], -120)  # alive only below the threshold
    stored = Stored(raw, 0.047, -128)
    for bits in (2, 4, 6):
        got = relu.fit_clips(stored, threshold, bits=bits)
        np.testing.assert_array_equal(got, relu.fit_clips(stored.values(), threshold, bits=bits))
        assert got[3] == 0.0
