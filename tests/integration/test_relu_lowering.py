"""The ReLU zero-point lowering on models converted in the test: residual and nested sites,
ties through a concatenation, and the threshold against the Keras-level shift export."""

import functools

import numpy as np
import pytest

from aa_tflite.lowering import relu
from aa_tflite.lowering.relu import fit_clip
from aa_tflite.precision import precision
from aa_tflite.runtime.interpreter import evaluate, load_interpreter, quantize
from aa_tflite.search.calibrate import stored_levels, tensor_values
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.analyse import analyse
from aa_tflite.types import AAError, SiteConfig
from tests.helpers import (
    DIGITS_SITES,
    adversarial,
    all_low_bit,
    assert_runs_in_tflite_micro_like_litert,
    concat_model,
)


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


def test_per_channel_clips_are_fitted_on_the_stored_int8_values(digits, digits_tflite):
    """The bench hands the ReLU lowering a site's stored int8 values (counted per level, a
    quarter of the float copy's memory); the equalized edit is the one fitted on the floats."""
    from aa_tflite.lowering import reach_all
    from aa_tflite.runtime.interpreter import run_model
    from aa_tflite.search.bench import Bench
    from aa_tflite.tflite.levels import Stored

    x = digits.x_val[:120]
    graphs = reach_all(digits_tflite, DIGITS_SITES)[0]
    bench = Bench(digits_tflite, graphs, x_fit=x, x_eval=x, y_eval=None,
                  reference=run_model(digits_tflite, x))
    fitted = 0
    for site, graph in graphs.items():
        if graph.lowering != "relu" or not graph.can_equalize:
            continue
        stored = bench.unit_values([site], stored=True)
        assert isinstance(stored, Stored) and stored.raw.dtype == np.int8
        floats = bench.unit_values([site])
        np.testing.assert_array_equal(stored.values(), floats)
        for bits in (2, 4):
            config = SiteConfig(bits=bits)
            got = relu.ReluZeroPoint().fit(functools.partial(bench.unit_values, [site]), config,
                                           graph, per_channel=True)
            want = relu.equalized_edit(floats, config, graph)
            assert got.scale == want.scale
            np.testing.assert_array_equal(got.channel_scale, want.channel_scale)
            fitted += 1
    assert fitted >= 2
