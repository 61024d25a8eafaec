"""Variants run from a cut: only the ops after the latest single-tensor cut before a variant's
first change run, from the baseline's values there, and give the whole model's outputs."""

import functools

import numpy as np
import pytest

from aa_tflite.lowering import reach_all
from aa_tflite.runtime.interpreter import run_model
from aa_tflite.search import bench as bench_module
from aa_tflite.search import tail
from aa_tflite.search.bench import Bench, UnsafeVariant
from aa_tflite.search.calibrate import tensor_values
from aa_tflite.tflite import flatbuffer
from aa_tflite.types import AAError, SiteConfig
from tests.helpers import DIGITS_SITES, calibrated_mini


@pytest.fixture(scope="module")
def data():
    from converters.data import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="module")
def resnet(data):
    from aa_tflite.frontend.export import export

    return export(calibrated_mini("mini_resnet", data["x_cal"]), None,
                  representative_data=data["x_cal"])


def _live_after(model, p):
    """Brute force: the non-constant tensors written at or before op p (or inputs) read later."""
    graph = model.subgraphs[0]
    ops = graph.operators
    const = {k for k, t in enumerate(graph.tensors) if t.buffer > 0
             and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)}
    early = {int(i) for i in graph.inputs} | {int(o) for op in ops[:p + 1] for o in op.outputs}
    later = {int(i) for op in ops[p + 1:] for i in op.inputs if i >= 0} | {
        int(o) for o in graph.outputs}
    return (early & later) - const


@pytest.mark.parametrize("which", ["digits", "resnet"])
def test_cuts_are_exactly_the_ops_after_which_one_tensor_is_live(which, digits_tflite, resnet):
    tflite = digits_tflite if which == "digits" else resnet.tflite
    model = flatbuffer.read(tflite)
    got = tail.cuts(model)
    expected = [(p, next(iter(live))) for p in range(len(model.subgraphs[0].operators) - 1)
                if len(live := _live_after(model, p)) == 1]
    assert got == expected and len(got) >= 3
    if which == "resnet":  # a residual stream between blocks is a cut; inside a block is not
        ops = flatbuffer.describe(model)[0]
        assert any(ops[p].name == "ADD" for p, _ in got)
        assert any(ops[p].name != "ADD" and len(_live_after(model, p)) == 2
                   for p in range(len(ops) - 1))


@pytest.mark.parametrize("which", ["digits", "resnet"])
def test_variants_run_from_a_cut_give_the_whole_models_outputs_bit_for_bit(
        which, data, digits, digits_tflite, resnet, monkeypatch):
    tflite, x, sites = (digits_tflite, digits.x_val[:100], DIGITS_SITES) if which == "digits" \
        else (resnet.tflite, data["x_val"][:100], resnet.site_tensors)
    graphs = reach_all(tflite, sites)[0]
    reference = run_model(tflite, x, all_outputs=True)
    # These models run whole in milliseconds, where cutting a variant would not pay: cut anyway.
    assert Bench(tflite, graphs, x_fit=x, x_eval=x, y_eval=None,
                 reference=reference[0])._tail is None
    monkeypatch.setattr(bench_module, "TAIL_SECONDS", -1.0)
    bench = Bench(tflite, graphs, x_fit=x, x_eval=x, y_eval=None, reference=reference[0])
    assert bench._tail is not None and bench._tail.cuts
    model = flatbuffer.read(tflite)
    n_ops = len(model.subgraphs[0].operators)
    assert tail.first_change(model, flatbuffer.read(tflite)) == n_ops
    from_cut = 0
    for site, graph in graphs.items():
        for config in (SiteConfig(bits=4), SiteConfig(bits=2)):
            try:
                variant = bench.build({site: config})
            except (AAError, UnsafeVariant):
                continue
            first = tail.first_change(model, flatbuffer.read(variant))
            assert first <= graph.producer  # the site's own op is changed, or one before it
            got = bench._tail.run(variant, batch_size=64, num_threads=1)
            whole = run_model(variant, x, all_outputs=True)
            if got is None:
                continue
            from_cut += 1
            assert len(got) == len(whole)
            assert all(np.array_equal(a, b) for a, b in zip(got, whole, strict=True))
            assert bench._run(variant).score == bench.scorer.score(
                whole, bench.references, bench.labels)
    assert from_cut >= 2


def test_a_plan_changing_the_first_op_runs_whole(digits_tflite, digits):
    """No cut lies before a change to the first op's output: the variant runs whole."""
    model = flatbuffer.read(digits_tflite)
    variant = flatbuffer.read(digits_tflite)
    first_out = int(variant.subgraphs[0].operators[0].outputs[0])
    q = variant.subgraphs[0].tensors[first_out].quantization
    q.scale = np.asarray(q.scale) * 2
    edited = flatbuffer.write(variant)
    assert tail.first_change(model, flatbuffer.read(edited)) == 0
    runner = tail.TailRunner(digits_tflite, digits.x_val[:10], functools.partial(
        tensor_values, keep_quantized=True))
    assert runner.cuts and runner.run(edited, batch_size=8, num_threads=1) is None


def test_only_a_large_plan_maps_large_allocations(digits, digits_tflite, monkeypatch):
    """glibc's fixed mmap threshold costs a small model time (0.6 s of the digits CNN's 3.6 s) and
    saves a large one memory: the bench sets it only past ``heap.LARGE_PLAN`` of values."""
    from aa_tflite.search import heap

    calls = []
    monkeypatch.setattr(heap, "map_large_allocations", lambda: calls.append(1) or True)
    x = digits.x_val[:50]
    reference = run_model(digits_tflite, x)
    Bench(digits_tflite, reach_all(digits_tflite, DIGITS_SITES)[0], x_fit=x, x_eval=x,
          y_eval=None, reference=reference)
    assert calls == []
    monkeypatch.setattr(heap, "LARGE_PLAN", 1000)
    Bench(digits_tflite, reach_all(digits_tflite, DIGITS_SITES)[0], x_fit=x, x_eval=x,
          y_eval=None, reference=reference)
    assert calls == [1]


def test_corrections_fitted_from_a_cut_give_the_same_files(data, resnet, monkeypatch):
    """A correction's prefix run on the fitting inputs starts from the latest cut before the
    variant's first change, and reads the same int8 values: every built file is the same."""
    x = data["x_val"][:100]
    graphs = reach_all(resnet.tflite, resnet.site_tensors)[0]
    reference = run_model(resnet.tflite, x)
    whole = Bench(resnet.tflite, graphs, x_fit=x[:60], x_eval=x, y_eval=None, reference=reference)
    assert whole._fit_tail is None  # a model this quick runs whole
    monkeypatch.setattr(bench_module, "TAIL_SECONDS", -1.0)
    cut = Bench(resnet.tflite, graphs, x_fit=x[:60], x_eval=x, y_eval=None, reference=reference)
    assert cut._fit_tail is not None and cut._fit_tail.cuts
    started = []
    real_start = cut._fit_tail.start
    monkeypatch.setattr(cut._fit_tail, "start", lambda *a: started.append(r := real_start(*a)) or r)
    corrected = [s for s, g in graphs.items() if g.correction_consumer is not None]
    plans = [{s: SiteConfig(bits=b)} for s in corrected for b in (4, 2)]
    plans.append({s: SiteConfig(bits=4) for s in corrected})
    for plan in plans:
        assert cut.build(plan) == whole.build(plan)
    # Each site's producer has a cut before it here: every prefix run started from one.
    assert len(started) >= len(corrected) and None not in started
    # A tensor written at or before the cut cannot be read from there: that run is whole.
    variant = cut.build(plans[-2])
    p, t = cut._fit_tail.cuts[-1]
    assert real_start(variant, [t]) is None
    assert real_start(variant, [graphs[corrected[-1]].correction_consumer[1]]) is not None
