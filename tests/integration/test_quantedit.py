"""Flatbuffer edits: b-bit tensors hold 2^b levels for any input, nothing is added at run time."""

import numpy as np
import pytest

from aa_tflite.lowering import relu
from aa_tflite.lowering.relu import fit_clip
from aa_tflite.precision import DEFAULT_MENU, precision
from aa_tflite.runtime.interpreter import evaluate, load_interpreter, quantize
from aa_tflite.search.calibrate import stored_levels, tensor_values
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.analyse import analyse
from aa_tflite.types import AAError, SiteConfig
from tests.helpers import (
    DIGITS_SITES,
    MNIST1D_SITES,
    adversarial,
    all_low_bit,
    assert_runs_in_tflite_micro_like_litert,
    concat_model,
)

# The tensors besides the site tensors that carry the sites' levels: digits' max-pool (16) and
# flatten RESHAPE (21) outputs; in MNIST-1D the convs' outputs behind each site's RESHAPE (19, 22,
# 25), the EXPAND_DIMS outputs the next conv reads (21, 24) and conv3's flatten RESHAPE (26).
PASS_THROUGH = {"digits": {16, 21}, "mnist1d": {19, 21, 22, 24, 25, 26}}


@pytest.mark.parametrize("bits", DEFAULT_MENU)
@pytest.mark.parametrize("which", ["digits", "mnist1d"])
def test_low_bit_sites_hold_at_most_2_to_the_bits_levels_on_real_and_adversarial_inputs(
        which, bits, digits, digits_tflite, mnist1d_tflite):
    rng = np.random.RandomState(0)
    if which == "digits":
        tflite, x = digits_tflite, digits.x_val
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
def test_low_bit_edit_adds_no_op_or_tensor_and_keeps_the_tflm_arena(bits, digits, digits_tflite):
    _, edited = all_low_bit(digits_tflite, DIGITS_SITES, digits.x_cal, bits)
    ops0, t0 = flatbuffer.describe(flatbuffer.read(digits_tflite))
    ops1, t1 = flatbuffer.describe(flatbuffer.read(edited))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]
    assert [(t.shape, t.dtype) for t in t0] == [(t.shape, t.dtype) for t in t1]
    assert t1[14].zero_point == (128 - 2 ** bits,) and t0[14].zero_point == (-128,)
    assert memory.tflm_arena(edited) == memory.tflm_arena(digits_tflite)
    if bits >= 4:  # all four sites at 2 bits loses more than that, by design of the test
        assert evaluate(edited, digits.x_val, digits.y_val) >= evaluate(
            digits_tflite, digits.x_val, digits.y_val) - 0.02


@pytest.mark.parametrize("bits", [4, 2])
def test_edited_model_runs_in_tflite_micro_like_in_litert(bits, digits, digits_tflite):
    _, edited = all_low_bit(digits_tflite, DIGITS_SITES, digits.x_cal, bits)
    assert_runs_in_tflite_micro_like_litert(edited, digits.x_val)


def test_residual_and_nested_sites_go_four_bit_at_zero_cost(tiny_model, tiny_data):
    from aa_tflite.frontend.export import export

    exported = export(tiny_model, None, representative_data=tiny_data)
    sites = {s: t for s, t in exported.site_tensors.items() if t is not None}
    graphs, edited = all_low_bit(exported.tflite, sites, tiny_data)
    assert {"act", "inner/iconv_relu", "inner/irelu6", "c1_relu", "fc_relu"} <= set(sites)
    assert all(g.can_requantize for g in graphs.values())  # ADD rescales: no tie there
    ops0, _ = flatbuffer.describe(flatbuffer.read(exported.tflite))
    ops1, _ = flatbuffer.describe(flatbuffer.read(edited))
    # Same ops, except that a requantized standalone RELU6 is written as RELU (TFLM's RELU6
    # copies instead of requantizing); same tensors in and out.
    assert [o.name for o in ops0] == [o.name.replace("RELU", "RELU6") if a.name == "RELU6" else
                                      o.name for a, o in zip(ops0, ops1)]
    assert [(o.inputs, o.outputs) for o in ops0] == [(o.inputs, o.outputs) for o in ops1]
    assert [o.name for o in ops1].count("RELU6") < [o.name for o in ops0].count("RELU6")
    inp = load_interpreter(edited).get_input_details()[0]
    group = sorted({t for g in graphs.values() for t in g.group})
    batches = [quantize(tiny_data, inp), quantize(tiny_data * 10, inp)]
    batches += adversarial(tuple(int(d) for d in inp["shape"][1:]), np.random.RandomState(1))
    for t, levels in stored_levels(edited, group, batches).items():
        assert len(levels) <= 16, (t, sorted(levels))
    assert_runs_in_tflite_micro_like_litert(edited, tiny_data)


def test_empty_edit_is_the_same_bytes_and_analysis_finds_groups(digits_tflite):
    graphs = analyse(digits_tflite, DIGITS_SITES)
    assert relu.apply_edits(digits_tflite, graphs, {}) == digits_tflite
    assert graphs["conv2_relu"].group == (15, 16)  # the max-pool output shares its parameters
    assert graphs["conv3_relu"].group == (17, 21)  # so does the flatten reshape
    assert graphs["conv3_relu"].correction_consumer == (8, 21)
    assert all(g.can_requantize and g.can_threshold for g in graphs.values())


def test_threshold_edit_matches_the_keras_shift_export(digits, digits_tflite):
    from aa_tflite.frontend.export import export

    t = 0.05
    graphs = analyse(digits_tflite, DIGITS_SITES)
    ours = relu.apply_edits(digits_tflite, graphs, {"conv1_relu": relu.SiteEdit(threshold=t)})
    keras_way = export(digits.model, {"conv1_relu": SiteConfig(threshold=t)},
                       representative_data=digits.x_cal, bias_correction=False).tflite
    a = np.asarray(evaluate(ours, digits.x_val)).argmax(1)
    b = np.asarray(evaluate(keras_way, digits.x_val)).argmax(1)
    assert np.mean(a == b) >= 0.98
    zeros = [np.mean(tensor_values(m, [14], digits.x_val)[14] == 0) for m in (ours, keras_way)]
    assert abs(zeros[0] - zeros[1]) < 0.01
    assert zeros[0] > np.mean(tensor_values(digits_tflite, [14], digits.x_val)[14] == 0) + 0.05


def test_edits_that_cannot_be_made_are_refused(digits_tflite):
    graphs = analyse(digits_tflite, DIGITS_SITES)
    with pytest.raises(AAError, match="sites this model does not have"):
        relu.apply_edits(digits_tflite, graphs, {"nope": relu.SiteEdit(threshold=1)})
    with pytest.raises(AAError, match="positive"):
        relu.apply_edits(digits_tflite, graphs,
                         {"conv1_relu": relu.SiteEdit(scale=-1.0, zero_point=112)})


def test_residual_add_site_is_not_offered_a_threshold(tiny_model, tiny_data):
    from aa_tflite.frontend.export import export

    exported = export(tiny_model, None, representative_data=tiny_data)
    graphs = analyse(exported.tflite, exported.site_tensors)
    assert graphs["act"].producer_op == "ADD"
    assert not graphs["act"].can_threshold
    assert any("threshold not offered" in n for n in graphs["act"].notes)
    with pytest.raises(AAError, match="cannot take a threshold"):
        relu.apply_edits(exported.tflite, graphs, {"act": relu.SiteEdit(threshold=0.1)})


@pytest.mark.parametrize("bits", [4, 2])
def test_sites_feeding_a_concatenation_move_as_one_tie_group(bits):
    exported, data = concat_model()
    tflite = exported.tflite
    graphs = analyse(tflite, exported.site_tensors)
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    cat = next(op for op in ops if op.name == "CONCATENATION")
    pool = next(op for op in ops if op.name == "MAX_POOL_2D")
    for site in ("a_relu", "b_relu"):
        g = graphs[site]
        assert g.tie == ("a_relu", "b_relu") and g.joins == (cat.index,)
        assert g.can_requantize and not g.can_equalize
        assert cat.outputs[0] in g.group and pool.outputs[0] in g.group
    assert graphs["c_relu"].tie == ()
    # One change for one site of the tie would break the shared scale: refused.
    p = precision(bits)
    with pytest.raises(AAError, match="share one scale"):
        relu.apply_edits(tflite, graphs, {"a_relu": relu.SiteEdit(
            scale=0.1, zero_point=p.zero_point)})
    values = tensor_values(tflite, [graphs["a_relu"].tensor, graphs["b_relu"].tensor], data)
    clip = fit_clip(np.concatenate([v.reshape(-1) for v in values.values()]), bits=bits)
    edit = relu.SiteEdit(scale=p.step(clip), zero_point=p.zero_point)
    edited = relu.apply_edits(tflite, graphs, {"a_relu": edit, "b_relu": edit})
    # Same ops, same tensors, same TFLM arena; every tensor of the tie holds 2^bits levels.
    ops1, _ = flatbuffer.describe(flatbuffer.read(edited))
    assert [(o.name, o.inputs, o.outputs) for o in ops] == [(o.name, o.inputs, o.outputs)
                                                            for o in ops1]
    assert memory.tflm_arena(edited) == memory.tflm_arena(tflite)
    inp = load_interpreter(edited).get_input_details()[0]
    group = sorted(set(graphs["a_relu"].group) | set(graphs["b_relu"].group))
    batches = [quantize(data, inp), quantize(data * 10, inp),
               *adversarial((8, 8, 3), np.random.RandomState(1))]
    seen = stored_levels(edited, group, batches)
    assert set(seen) == set(group)
    for t, levels in seen.items():
        assert len(levels) <= p.levels and min(levels) >= p.zero_point, (t, sorted(levels))
    assert_runs_in_tflite_micro_like_litert(edited, data)


def test_a_tie_with_an_input_that_cannot_change_is_not_offered():
    exported, _ = concat_model(third_input_is_a_site=False)
    graphs = analyse(exported.tflite, exported.site_tensors)
    for site in ("a_relu", "b_relu"):
        assert not graphs[site].can_requantize
        assert any("input 2 of CONCATENATION" in n for n in graphs[site].notes)
        assert graphs[site].can_threshold  # a threshold does not change the shared scale
    assert graphs["c_relu"].can_requantize
    with pytest.raises(AAError, match="cannot change its bits"):
        relu.apply_edits(exported.tflite, graphs,
                         {"a_relu": relu.SiteEdit(scale=0.1, zero_point=112)})
