"""Signed lowering: a weighted op's un-activated output held to 2^b levels, at zero cost."""

import numpy as np
import pytest

from aa_tflite.lowering import offset, relu, signed, stream
from aa_tflite.precision import precision
from aa_tflite.runtime.interpreter import load_interpreter, quantize, run, run_model
from aa_tflite.search.calibrate import stored_levels, tensor_values
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.analyse import analyse
from aa_tflite.tflite.safety import scale_problems
from aa_tflite.types import AAError
from tests.helpers import adversarial, calibrated_mini

MODELS = ("mini_xception", "mini_mobilenetv2")


@pytest.fixture(scope="module")
def data():
    from converters.data import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="module")
def plain(data):
    from aa_tflite.frontend.export import export

    return {name: export(calibrated_mini(name, data["x_cal"]), None, representative_data=data["x_cal"],
                         io_dtype="int8").tflite for name in MODELS}


@pytest.fixture(scope="module")
def values(plain, data):
    out = {}
    for name, tflite in plain.items():
        ok = [t for t, g in signed.reachable(tflite).items() if g.ok]
        out[name] = tensor_values(tflite, ok, data["x_cal"])
    return out


def _lower(tflite: bytes, values, bits: int) -> bytes:
    return signed.apply(tflite, {t: signed.SignedChoice(bits, *signed.fit(v, bits))
                                 for t, v in values.items()})


def test_reachable_finds_separable_depthwise_and_bottlenecks_feeding_a_conv(plain):
    ops, _ = flatbuffer.describe(flatbuffer.read(plain["mini_xception"]))
    graphs = signed.reachable(plain["mini_xception"])
    ok = {t for t, g in graphs.items() if g.ok}
    depthwise = {o.outputs[0] for o in ops if o.name == "DEPTHWISE_CONV_2D"}
    assert ok == depthwise and len(ok) == 5  # every separable conv's depthwise half
    assert all(ops[graphs[t].consumers[0]].name == "CONV_2D" for t in ok)
    notes = [n for g in graphs.values() for n in g.notes]
    assert sum("read by ADD" in n for n in notes) == 2  # the branches' pointwise halves
    assert sum("read by MAX_POOL_2D" in n for n in notes) == 1
    assert sum("graph output" in n for n in notes) == 1  # the logits

    ops, _ = flatbuffer.describe(flatbuffer.read(plain["mini_mobilenetv2"]))
    graphs = signed.reachable(plain["mini_mobilenetv2"])
    projects = [o for o in ops if o.name == "CONV_2D" and o.fused_activation == "NONE"]
    assert len(projects) == 4 and all(o.outputs[0] in graphs for o in projects)
    ok = [t for t, g in graphs.items() if g.ok]
    assert ok == [projects[-1].outputs[0]]  # the last bottleneck feeds the head conv directly
    for o in projects[:-1]:  # the others reach a residual ADD (one also feeds the next block)
        assert any("read by ADD" in n for n in graphs[o.outputs[0]].notes)
    assert all(g.producer_op == "CONV_2D" for t, g in graphs.items() if t in ok)


@pytest.mark.parametrize("bits", [6, 4, 2])
@pytest.mark.parametrize("name", MODELS)
def test_signed_tensors_hold_2_to_the_bits_levels_on_real_and_adversarial_inputs(
        name, bits, plain, values, data):
    lowered = _lower(plain[name], values[name], bits)
    p = precision(bits)
    inp = load_interpreter(lowered).get_input_details()[0]
    x = data["x_val"]
    real = [quantize(x[i:i + 100], inp) for i in range(0, len(x), 100)]
    real.append(quantize(x[:100] * 5.0, inp))  # 5x the calibration range
    shape = tuple(int(d) for d in inp["shape"][1:])
    tensors = sorted(values[name])
    for kind, batches in (("real", real), ("adversarial", adversarial(shape,
                                                                        np.random.RandomState(0)))):
        seen = stored_levels(lowered, tensors, batches)
        for t, levels in seen.items():
            assert len(levels) <= p.levels, (kind, t, sorted(levels))
            assert min(levels) >= p.zero_point and max(levels) <= 127, (kind, t, sorted(levels))
        if kind == "real":  # the fitted grid is used, not collapsed onto a few levels
            assert all(len(levels) >= p.levels // 2 for levels in seen.values())
        else:  # the clamp holds at both ends, not wrap-around
            assert any(127 in v for v in seen.values()) and any(p.zero_point in v
                                                              for v in seen.values())


@pytest.mark.parametrize("name", MODELS)
def test_lowering_adds_no_op_or_tensor_and_keeps_the_tflm_arena(name, plain, values):
    lowered = _lower(plain[name], values[name], 4)
    ops0, t0 = flatbuffer.describe(flatbuffer.read(plain[name]))
    ops1, t1 = flatbuffer.describe(flatbuffer.read(lowered))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]
    assert [(t.shape, t.dtype) for t in t0] == [(t.shape, t.dtype) for t in t1]
    graphs = signed.reachable(plain[name])
    model0, model1 = flatbuffer.read(plain[name]), flatbuffer.read(lowered)
    for t in values[name]:
        g = graphs[t]
        assert ops1[g.producer].fused_activation == "RELU_N1_TO_1"
        assert t1[t].scale == (1 / 8,) and t1[t].zero_point == (120,)
        w = ops0[g.producer].inputs[1]  # the producer's int8 kernel stays bit for bit
        data0 = model0.buffers[model0.subgraphs[0].tensors[w].buffer].data
        data1 = model1.buffers[model1.subgraphs[0].tensors[w].buffer].data
        assert np.array_equal(data0, data1)
    changed = [o.index for o, p in zip(ops1, ops0) if o.fused_activation != p.fused_activation]
    assert sorted(changed) == sorted(graphs[t].producer for t in values[name])
    assert scale_problems(lowered) == []
    assert memory.tflm_arena(lowered) == memory.tflm_arena(plain[name])


@pytest.mark.parametrize("name", MODELS)
def test_six_bits_stays_close_to_the_int8_model(name, plain, values, data):
    x = data["x_val"]
    ref = run_model(plain[name], x)
    spread = ref.std()
    for bits, max_rel, min_agree in ((6, 0.05, 0.95), (4, None, None)):
        out = run_model(_lower(plain[name], values[name], bits), x)
        rel = float(np.abs(out - ref).mean() / spread)
        agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
        print(f"{name} {bits} bits: mean |d| / std {rel:.4f}, top-1 agreement {agree:.3f}")
        if max_rel is not None:
            assert rel <= max_rel and agree >= min_agree, (bits, rel, agree)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("name", MODELS)
def test_tflite_micro_runs_it_like_litert(name, bits, plain, values, data):
    """TFLM matches LiteRT's reference kernels within one output step. LiteRT's optimized
    kernels (and XNNPACK) round some requantizations differently; a one-level flip of a 2-bit
    tensor moves the logits far more than an int8 one, so they get a looser bound."""
    from ai_edge_litert import interpreter as litert

    lowered = _lower(plain[name], values[name], bits)
    x = data["x_val"][:100]
    step = load_interpreter(lowered).get_output_details()[0]["quantization"][0]
    tflm = run_model(lowered, x, kernels="tflm")
    ref = run(litert.Interpreter(model_content=lowered,
                                 experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF),
              x)
    assert np.abs(tflm - ref).max() <= step * 1.001
    assert np.mean(tflm.argmax(1) == ref.argmax(1)) >= 0.99
    spread = tflm.max() - tflm.min()
    for kernels in ("builtin", "xnnpack"):
        out = run_model(lowered, x, kernels=kernels)
        assert np.abs(out - tflm).max() <= 0.25 * spread, kernels
        assert np.mean(out.argmax(1) == tflm.argmax(1)) >= 0.9, kernels


def test_composes_with_relu_site_edits(plain, values, data):
    from aa_tflite.lowering.relu import fit_clip, site_edit
    from aa_tflite.types import SiteConfig

    tflite = plain["mini_xception"]
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    relus = {f"op{o.index}": o.outputs[0] for o in ops
             if o.fused_activation == "RELU" or o.name == "RELU"}
    graphs = analyse(tflite, relus)
    relu_values = tensor_values(tflite, list(relus.values()), data["x_cal"])
    edits = {s: site_edit(SiteConfig(clip=fit_clip(relu_values[t], bits=4), bits=4), graphs[s])
             for s, t in relus.items() if graphs[s].can_requantize}
    assert len(edits) >= 3
    first = relu.apply_edits(tflite, graphs, edits)
    both = _lower(first, values["mini_xception"], 4)
    inp = load_interpreter(both).get_input_details()[0]
    batches = [quantize(data["x_val"][:200], inp)]
    batches += adversarial(tuple(int(d) for d in inp["shape"][1:]), np.random.RandomState(2))
    seen = stored_levels(both, sorted({*values["mini_xception"], *(
        graphs[s].tensor for s in edits)}), batches)
    assert all(len(v) <= 16 and min(v) >= 112 for v in seen.values())
    ref, out = run_model(first, data["x_val"]), run_model(both, data["x_val"])
    assert np.mean(ref.argmax(1) == out.argmax(1)) >= 0.9


def test_fit_keeps_the_int8_step_and_covers_each_channel():
    rng = np.random.RandomState(0)
    v = np.stack([rng.normal(2.0, 1.0, 5000), rng.normal(-1.0, 0.1, 5000),
                  np.full(5000, 0.25)], axis=-1)
    v = np.round(v / 0.01) * 0.01  # dequantized int8-like values, step 0.01
    for bits in (6, 4, 2):
        c, m = signed.fit(v, bits)
        assert c.shape == m.shape == (3,)
        assert np.all(m / 2 ** (bits - 1) >= 0.01 * (1 - 1e-6))  # never below the int8 step
        g = signed.grid(c, m, bits)
        assert g.shape == (2 ** bits, 3)
        assert g[0, 0] < 0.5 < 3.5 < g[-1, 0] and g[0, 1] < -1.1 < -0.9 < g[-1, 1]  # the bulk
        assert np.min(np.abs(g[:, 2] - 0.25)) < 1e-9  # a constant channel is exact

        def err(levels, k):  # squared error of rounding channel k to its nearest level
            return np.mean(np.min((v[:, k, None] - levels[None, :]) ** 2, axis=1))

        for k in range(2):  # no worse than the plain min-max grid
            naive = np.linspace(v[:, k].min(), v[:, k].max(), 2 ** bits)
            assert err(g[:, k], k) <= err(naive, k) * (1 + 1e-9)
    c, m = signed.fit(v, 4, min_step=0.5)
    assert np.all(m >= 0.5 * 8 * (1 - 1e-9))
    with pytest.raises(AAError, match="bits"):
        signed.fit(v, 8)


def test_refuses_what_it_cannot_lower(plain, values):
    tflite = plain["mini_mobilenetv2"]
    graphs = signed.reachable(tflite)
    blocked = next(t for t, g in graphs.items() if not g.ok)
    with pytest.raises(AAError, match="read by ADD"):
        signed.apply(tflite, {blocked: signed.SignedChoice(4, 0.0, 1.0)})
    with pytest.raises(AAError, match="not a signed activation"):
        signed.apply(tflite, {0: signed.SignedChoice(4, 0.0, 1.0)})
    t = next(iter(values["mini_mobilenetv2"]))
    with pytest.raises(AAError, match="positive"):
        signed.apply(tflite, {t: signed.SignedChoice(4, 0.0, -1.0)})
    with pytest.raises(AAError, match="one value per channel"):
        signed.apply(tflite, {t: signed.SignedChoice(4, np.zeros(3), 1.0)})
    assert signed.apply(tflite, {t: signed.SignedChoice(8, 0.0, 1.0)}) == tflite
    lowered = _lower(tflite, values["mini_mobilenetv2"], 4)
    assert t not in signed.reachable(lowered)  # its producer now clamps: not lowered twice


# The offset form: signed tensors that reach a residual ADD whose other input a biased conv writes.


@pytest.fixture(scope="module")
def offset_model(data):
    """mini_xception's entry_b: a separable conv + BN (no activation) -> max pool -> ADD, whose
    other input is the strided 1x1 shortcut conv + BN."""
    from aa_tflite.frontend.export import export

    return export(calibrated_mini("mini_xception", data["x_cal"]), None,
                  representative_data=data["x_cal"], io_dtype="int8").tflite


def _offset_lower(tflite, x, bits):
    graphs = offset.offset_reachable(tflite)
    vals = tensor_values(tflite, list(graphs), x)
    return graphs, offset.apply_offset(tflite, {
        t: offset.OffsetChoice(bits, *offset.fit_offset(vals[t], bits, min_step=g.scale))
        for t, g in graphs.items()})


def test_offset_form_reaches_the_pre_add_branch_of_a_projection_block(offset_model):
    graphs = offset.offset_reachable(offset_model)
    ops, _ = flatbuffer.describe(flatbuffer.read(offset_model))
    assert graphs, "mini_xception's entry_b branch feeds max pool -> ADD with a conv shortcut"
    for t, g in graphs.items():
        assert ops[g.add].name == "ADD" and ops[g.producer].fused_activation == "NONE"
        assert [ops[k].name for k in range(len(ops)) if any(u in ops[k].inputs
                                                             for u in g.group)] .count("ADD") == 1
        assert ops[g.partner_producer].name in ("CONV_2D", "DEPTHWISE_CONV_2D")
        assert not signed.reachable(offset_model)[t].ok  # the other form cannot take it


@pytest.mark.parametrize("bits", [6, 4, 2])
def test_offset_form_holds_its_levels_keeps_the_graph_and_the_add_output(offset_model, data,
                                                                          bits):
    graphs, lowered = _offset_lower(offset_model, data["x_cal"], bits)
    p = precision(bits)
    ops0, t0 = flatbuffer.describe(flatbuffer.read(offset_model))
    ops1, t1 = flatbuffer.describe(flatbuffer.read(lowered))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]
    assert [(t.shape, t.dtype) for t in t0] == [(t.shape, t.dtype) for t in t1]
    assert memory.tflm_arena(lowered) == memory.tflm_arena(offset_model)
    inp = load_interpreter(lowered).get_input_details()[0]
    group = sorted({u for g in graphs.values() for u in g.group})
    batches = [quantize(data["x_val"][:64], inp), quantize(data["x_val"][:64] * 5, inp),
               *adversarial((8, 8, 1), np.random.RandomState(0))]
    for t, levels in stored_levels(lowered, group, batches).items():
        assert len(levels) <= p.levels and min(levels) >= p.zero_point, (t, sorted(levels))
    # The ADD's output is what it was, up to the lowered tensor's rounding: (y - low) + (o + low).
    adds = {g.add for g in graphs.values()}
    outs = [ops0[k].outputs[0] for k in adds]
    x = data["x_val"][:64]
    before, after = tensor_values(offset_model, outs, x), tensor_values(lowered, outs, x)
    for t in outs:
        spread = float(np.ptp(before[t]))
        err = float(np.sqrt(np.mean((after[t] - before[t]) ** 2)))
        assert err <= (0.05 if bits >= 4 else 0.25) * spread, (t, err, spread)


def test_offset_form_runs_in_tflite_micro_like_litert(offset_model, data):
    _, lowered = _offset_lower(offset_model, data["x_cal"], 4)
    x = data["x_val"][:100]
    tflm = run_model(lowered, x, kernels="tflm")
    for kernels in ("builtin", "xnnpack"):
        out = run_model(lowered, x, kernels=kernels)
        assert np.mean(out.argmax(1) == tflm.argmax(1)) >= 0.95, kernels


def test_planning_sites_name_each_lowering_and_say_why_the_rest_stay_int8(offset_model):
    from aa_tflite.lowering import reach_all

    sites, notes = reach_all(offset_model, {})
    by_offset = {s: g for s, g in sites.items() if s.startswith("offset:")}
    plain = {s: g for s, g in sites.items() if s.startswith("signed:")}
    by_stream = {s: g for s, g in sites.items() if s.startswith("stream:")}
    assert by_offset and plain and len(sites) == len(by_offset) + len(plain) + len(by_stream)
    assert {g.tensor for g in by_stream.values()} == set(stream.stream_reachable(offset_model))
    assert all(g.signed and g.lowering == "offset" and g.group for g in by_offset.values())
    assert all(g.signed and g.lowering == "signed" for g in plain.values())
    assert {g.tensor for g in by_offset.values()} == set(offset.offset_reachable(offset_model))
    # Every signed tensor neither form reaches is in the notes, with the reason.
    unreached = [t for t, g in signed.reachable(offset_model).items() if not g.ok
                 and t not in offset.offset_reachable(offset_model)
                 and t not in stream.stream_reachable(offset_model)]
    assert len(notes) == len(unreached) and all("stays int8" in n for n in notes)


@pytest.mark.parametrize("name", MODELS)
def test_one_half_range_keeps_every_reader_kernel_and_stays_close(name, plain, values, data):
    """``SignedClamp.fit`` without ``per_channel`` (what ``share_weights`` asks where a reader is
    not depthwise): one half-range, per-channel centres. Every int8 kernel stays the plain
    conversion's bytes, and 4 bits everywhere stays close to the per-channel form."""
    from aa_tflite.lowering.signed import SignedClamp
    from aa_tflite.tflite.analyse import SiteGraph
    from aa_tflite.tflite.kernel_math import kernel_bytes as kernels
    from aa_tflite.types import SiteConfig

    tflite = plain[name]
    graphs = signed.reachable(tflite)

    form = SignedClamp()
    one = {}
    for t, v in values[name].items():
        unit = SiteGraph(name=f"t{t}", lowering="signed", tensor=t, group=(t,),
                         producer=graphs[t].producer, producer_op=graphs[t].producer_op,
                         scale=graphs[t].scale)
        one[t] = form.fit(lambda v=v: v, SiteConfig(bits=4), unit, per_channel=False)
        assert np.ndim(one[t].half_range) == 0  # one half-range for the tensor
    shared = signed.apply(tflite, one)
    assert kernels(shared) == kernels(tflite)
    assert kernels(_lower(tflite, values[name], 4)) != kernels(tflite)  # per channel: folded
    x, y = data["x_val"], data["y_val"]
    acc = [np.mean(run_model(m, x).argmax(1) == y) for m in (shared, _lower(tflite, values[name],
                                                                          4))]
    assert acc[0] >= acc[1] - 0.03, acc
