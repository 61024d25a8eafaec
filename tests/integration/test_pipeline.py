"""convert(): budget met, plan and report, files, determinism, errors."""

import dataclasses
import json

import numpy as np
import pytest

import aa_tflite
from aa_tflite.config import Budget, ConvertConfig
from aa_tflite.frontend.prepare import int8_baseline, prepare
from aa_tflite.runtime import interpreter as runtime_mod
from aa_tflite.runtime.interpreter import evaluate
from aa_tflite.search.baseline import baseline
from aa_tflite.search.bench import Bench
from aa_tflite.search.calibrate import tensor_values
from aa_tflite.search.measure import MeasureCache, candidate_list, measure
from aa_tflite.search.verify import verify
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.analyse import analyse
from aa_tflite.types import AAError, BudgetError, Plan, SiteConfig

INT8_PEAK = 3072  # the embedded digits model (pinned in test_memory against TFLM)


def _convert(digits, **kw):
    kw.setdefault("budget_kb", 0.6 * INT8_PEAK / 1024)
    kw.setdefault("eval_data", (digits.x_val[:250], digits.y_val[:250]))
    return aa_tflite.convert(digits.model, representative_data=digits.x_cal, progress=False, **kw)


def _baseline(digits, *, bench=Bench, **options):
    """The stages up to the baseline, on the digits model with 250 labelled eval samples."""
    options = {"sparsity_points": (), **options}
    cfg = ConvertConfig(progress=False, measure_tflm=False, curve_points=0, **options)
    prep = prepare(digits.model, digits.x_cal, (digits.x_val[:250], digits.y_val[:250]), cfg)
    exported, data, notes = int8_baseline(prep, cfg)
    return cfg, baseline(exported.tflite, exported.site_tensors, data, cfg, notes=notes,
                         bench=bench)


@pytest.fixture(scope="module")
def result(digits):
    return _convert(digits)


def test_budget_is_met_with_low_bit_sites_and_little_loss(result, digits):
    rep = result.report
    assert rep.int8_memory.packed_peak == INT8_PEAK
    assert rep.planned_memory.packed_peak <= rep.budget_bytes == int(0.6 * INT8_PEAK)
    low = {r.site: r.bits for r in rep.sites if r.bits < 8}
    assert low and low == {s: int(c.bits) for s, c in result.plan.sites.items() if c.bits < 8}
    # The figure in the report is the planner's over the real file, low-bit tensors packed.
    graphs = analyse(result.tflite, {r.site: r.tensor for r in rep.sites})
    bits = {t: b for s, b in low.items() for t in graphs[s].group}
    assert bits == rep.tensor_bits
    assert memory.plan_tensors(result.tflite, bits=bits)[0] == rep.planned_memory.packed_peak
    held_out = evaluate(result.tflite, digits.x_val[250:], digits.y_val[250:])
    base = evaluate(result.baseline_tflite, digits.x_val[250:], digits.y_val[250:])
    assert held_out >= base - 0.015


def test_the_file_carries_its_plan_and_figures(result):
    from aa_tflite.tflite import metadata

    rep, meta = result.report, aa_tflite.read_metadata(result.tflite)
    assert meta["plan"] == json.loads(result.plan.to_json())
    assert meta["memory"]["packed_peak"] == rep.planned_memory.packed_peak
    assert meta["memory"]["tflm_arena"] == rep.planned_memory.tflm.total
    assert meta["scores"]["planned"] == rep.planned_score
    assert {int(t): b for t, b in meta["tensor_bits"].items()} == rep.tensor_bits
    assert rep.planned_memory.file_size == len(result.tflite)
    # Without the metadata, the bits derived from the tensors give the same packed figure.
    bare = metadata.strip_metadata(result.tflite)
    assert metadata.stored_bits(bare) == rep.tensor_bits
    assert memory.plan_tensors(bare, bits=metadata.stored_bits(bare))[0] == \
        rep.planned_memory.packed_peak


def test_planned_model_keeps_the_int8_tflm_arena_and_runs_there(result, digits):
    from tests.helpers import assert_runs_in_tflite_micro_like_litert

    assert_runs_in_tflite_micro_like_litert(result.tflite, digits.x_val)
    rep = result.report
    assert rep.planned_memory.tflm is not None
    assert rep.planned_memory.tflm.total <= rep.int8_memory.tflm.total
    assert rep.planned_memory.weights == pytest.approx(rep.int8_memory.weights, rel=0.01)


def test_low_bit_tensors_of_the_result_hold_2_to_the_bits_levels(result, digits):
    low = [r for r in result.report.sites if r.bits < 8]
    assert low
    values = tensor_values(result.tflite, [r.tensor for r in low], digits.x_val * 3)
    for r in low:
        assert len(np.unique(values[r.tensor])) <= 2 ** r.bits


def test_report_has_scores_memory_sites_and_time(result):
    rep = result.report
    assert rep.metric == "top-1 accuracy"
    assert 0.9 < rep.float_score <= 1 and 0.9 < rep.int8_score <= 1
    assert rep.verified_loss == pytest.approx(100 * (rep.int8_score - rep.planned_score))
    # the three sites alive while the int8 model holds over half the budget, each offered the
    # whole menu (6, 5, 4, 3, 2 bits); the last site's options are skipped
    assert sorted(rep.sensitivity) == ["conv1_relu", "conv2_relu", "conv3_relu"]
    assert rep.options_measured == 3 * 5 and rep.options_skipped == 5 and rep.seconds["total"] > 0
    stages = {k: v for k, v in rep.seconds.items() if k != "total"}
    assert list(stages)[:2] == ["export+calibrate", "candidates"]  # every stage is timed
    assert sum(stages.values()) == pytest.approx(rep.seconds["total"], abs=0.05 + 0.02 * sum(
        stages.values()))
    assert [label for label, _, _ in rep.sensitivity["conv1_relu"]] == ["6b", "5b", "4b", "3b",
                                                                        "2b"]
    md = rep.to_markdown()
    for text in ("packed activation peak", "packed+sparse peak", "TFLM arena, real", "weights",
                 "| conv1_relu |", "Met: yes", "levels, no op added"):
        assert text in md
    assert rep.planned_sparse_peak <= rep.planned_memory.packed_peak
    assert json.loads(rep.to_json())["budget_bytes"] == rep.budget_bytes


def test_plan_round_trips_and_save_writes_every_file(result, tmp_path):
    assert Plan.from_json(result.plan.to_json()) == result.plan
    files = result.save(tmp_path / "sub" / "digits")
    names = sorted(p.split("/")[-1] for p in files)
    assert names == ["digits.memory.png", "digits.plan.json", "digits.report.json",
                     "digits.report.md", "digits.sensitivity.png", "digits.tflite",
                     "digits.timeline.png"]
    assert (tmp_path / "sub" / "digits.tflite").read_bytes() == result.tflite
    for png in ("digits.memory.png", "digits.sensitivity.png", "digits.timeline.png"):
        assert (tmp_path / "sub" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.startswith(".")]


def test_same_inputs_give_the_same_bytes(result, digits):
    again = _convert(digits)  # the same options: the metadata records the TFLM arena too
    assert again.tflite == result.tflite
    assert again.plan.to_json() == result.plan.to_json()


def test_a_given_plan_is_written_without_search(result, digits):
    plan = Plan({"conv2_relu": SiteConfig(bits=4), "conv1_relu": SiteConfig(clip=0.5, bits=4)})
    out = _convert(digits, budget_kb=None, plan=plan, measure_tflm=False)
    assert out.plan == plan and out.report.options_measured == 0
    rows = {r.site: r for r in out.report.sites}
    assert "per-channel clips" in rows["conv2_relu"].lowering  # clip None: from the data
    assert "top level 0.5 " in rows["conv1_relu"].lowering  # the given clip is the top level
    assert "Budget: none" in out.report.to_markdown()
    with pytest.raises(AAError, match="sites this model does not have"):
        _convert(digits, budget_kb=None, plan=Plan({"nope": SiteConfig(bits=4)}))


def test_user_model_is_not_modified(digits):
    before = [w.copy() for w in digits.model.get_weights()]
    _convert(digits, measure_tflm=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, digits.model.get_weights()))


def test_options_of_units_never_measured_are_never_fitted(digits):
    """Under memory="packed" a unit's options are listed without its values; their clips are
    fitted only when the unit is measured, and equal those fitted up front."""
    from aa_tflite.search.bench import candidates

    cfg, base = _baseline(digits, memory="packed")
    todo = candidate_list(base, cfg)
    assert todo and all(not isinstance(c.fitted, SiteConfig) for c in todo)
    got = measure(base, todo, cfg, Budget(0.6 * INT8_PEAK / 1024), MeasureCache())
    fitted = {c.unit for c in todo if c.fitted._configs is not None}
    assert got.skipped and fitted == set(got.options) != {c.unit for c in todo}
    for c in todo:  # the same labels, configs and order as the options fitted up front
        graph = base.graphs[base.units[c.unit][0]]
        eager = dict(candidates(graph, base.bench.unit_values(base.units[c.unit]),
                                memory=cfg.memory, bits=cfg.bits,
                                per_channel=len(base.units[c.unit]) == 1
                                and base.bench.per_channel(graph)))
        assert c.config == eager[c.label] and c.bits == c.config.bits
    assert [c.label for c in todo if c.unit == todo[0].unit] == [
        label for label, _ in candidates(base.graphs[base.units[todo[0].unit][0]],
                                         base.bench.unit_values(base.units[todo[0].unit]),
                                         memory=cfg.memory, bits=cfg.bits, per_channel=False)]


def test_only_units_alive_over_the_budget_are_measured_unless_the_budget_needs_more(result,
                                                                                   digits):
    """The options skipped are exactly those of sites whose tensors are never alive while the
    int8 model's live bytes exceed the budget; an out-of-reach budget measures every option."""
    rep = result.report
    _, layout = memory.plan_tensors(result.baseline_tflite)
    buffers = [aa_tflite.search.planner.Buffer(t.index, t.first, t.last, t.nbytes) for t in layout]
    hot = aa_tflite.search.planner.hot_tensors(buffers, rep.budget_bytes // 2)
    site_tensor = {r.site: r.tensor for r in rep.sites}
    assert {s for s, t in site_tensor.items() if t in hot} == set(rep.sensitivity)
    assert "5 skipped" in rep.to_markdown()
    assert not aa_tflite.search.planner.hot_tensors(buffers, INT8_PEAK)  # nothing over the peak
    # Out of reach of the hot sites alone: the rest are measured, so a BudgetError's floor is
    # the true one.
    cfg, base = _baseline(digits, bits=[4], max_fit_samples=64, max_eval_samples=100)
    todo = candidate_list(base, cfg)
    measured = measure(base, todo, cfg, Budget(0.5), MeasureCache())
    assert measured.skipped == 0 and measured.count == len(todo) == 4
    # With every precision offered, a budget below even the narrowest plan is known to be out
    # of reach before any measurement: only each unit's narrowest option is measured (for the
    # error's plan), and the floor is the one measuring everything gives.
    cfg, base = _baseline(digits, max_fit_samples=64, max_eval_samples=100)
    todo = candidate_list(base, cfg)
    few = measure(base, todo, cfg, Budget(0.5), MeasureCache())
    units = {c.unit for c in todo}
    assert few.count == len(units) < len(todo) and few.skipped == len(todo) - len(units)
    assert all(min(o.config.bits for o in opts) == 2 for opts in few.options.values())
    buffers = base.buffers
    full = measure(base, todo, cfg, None, MeasureCache())  # every option
    assert (aa_tflite.search.planner.floor(buffers, few.options).peak
            == aa_tflite.search.planner.floor(buffers, full.options).peak)


def test_impossible_budget_names_the_smallest_figure(digits):
    with pytest.raises(BudgetError, match="smallest activation memory any plan reaches") as err:
        _convert(digits, budget_kb=0.5, measure_tflm=False)
    assert err.value.smallest_bytes > 512 and err.value.plan


def test_budget_error_names_the_tensors_that_set_the_floor_and_why():
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((12, 12, 16))  # the input (2,304 B) is live at the peak
    x = keras.layers.Conv2D(8, 3, padding="same", name="lin")(i)  # signed, no activation
    x = keras.layers.Activation("tanh", name="tanh")(x)  # which no consumer can absorb
    x = keras.layers.Conv2D(8, 1, activation="relu", name="a")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(3)(x))
    x_cal = np.random.RandomState(0).rand(64, 12, 12, 16).astype(np.float32)
    with pytest.raises(BudgetError) as err:
        aa_tflite.convert(model, budget_kb=0.5, representative_data=x_cal, progress=False,
                          measure_tflm=False, curve_points=0)
    text = str(err.value)
    assert "the model input" in text
    assert "output of CONV_2D (op 0), signed" in text and "read by TANH" in text
    assert err.value.smallest_bytes == 2304 + 1152  # input + the signed conv output, at int8
    # The same reasons, as records: one per live tensor, which the message lists line by line.
    floor = {f.nbytes: f for f in err.value.tensors}
    assert sorted(floor) == [1152, 2304] and sum(floor) == err.value.smallest_bytes
    assert floor[2304].why.startswith("the model input") and floor[2304].shape == (1, 12, 12, 16)
    assert "signed" in floor[1152].why and f"tensor {floor[1152].tensor} " in text
    # The plan at the floor is the cheapest one: the ReLU site is not live at the floor, so
    # the plan leaves it at int8 (the smallest options everywhere would lose accuracy for
    # nothing).
    assert err.value.plan == {}


def test_max_accuracy_drop_is_enforced(digits):
    # packed+sparse at a tight budget needs 2-3 bits and thresholds; no loss at all cannot hold.
    with pytest.raises(BudgetError, match="max_accuracy_drop"):
        _convert(digits, budget_kb=0.61, memory="packed+sparse", max_accuracy_drop=0.0,
                 measure_tflm=False)


def test_packed_sparse_mode_uses_thresholds_and_meets_the_budget(digits):
    out = _convert(digits, budget_kb=1.0, memory="packed+sparse", measure_tflm=False)
    rep = out.report
    assert rep.memory_mode == "packed+sparse"
    assert rep.planned_sparse_peak <= rep.budget_bytes < rep.int8_sparse_peak
    assert any(lab.startswith("8b +") for v in rep.sensitivity.values() for lab, _, _ in v)


def test_tflm_mode_budgets_the_real_arena_and_meets_it_with_exact_rewrites(digits):
    """memory='tflm' counts the arena TFLM really allocates. No precision shrinks it; batch 1
    (Flatten's shape ops folded) does: the stock 7,040 B arena does not fit 6.7 KiB, the
    rewritten model does, and computes exactly what the int8 model computes."""
    with pytest.raises(BudgetError, match="TFLM stores every activation in int8") as err:
        _convert(digits, budget_kb=2, memory="tflm")
    assert err.value.smallest_bytes < 7040 and err.value.tensors
    assert sum(f.nbytes for f in err.value.tensors) <= err.value.smallest_bytes
    stock = memory.smallest_arena(_convert(digits, budget_kb=64, memory="tflm").baseline_tflite)
    assert stock == 7040
    out = _convert(digits, budget_kb=6.7, memory="tflm")
    rep = out.report
    assert out.plan.sites == {} and rep.budget_figure() <= rep.budget_bytes < stock
    assert "Met: yes" in rep.to_markdown() and any("batch 1" in n for n in rep.notes)
    ops, _ = flatbuffer.describe(flatbuffer.read(out.tflite))
    assert "SHAPE" not in [o.name for o in ops]
    x = digits.x_val[:40]
    for kernels in ("builtin", "tflm"):
        assert np.array_equal(runtime_mod.run_model(out.tflite, x, kernels=kernels),
                              runtime_mod.run_model(out.baseline_tflite, x, kernels=kernels))


def test_without_labels_the_metric_is_agreement(digits):
    out = _convert(digits, eval_data=None, measure_tflm=False)
    assert out.report.metric == "top-1 agreement with float"
    assert out.report.float_score == 1.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"budget_kb": -1}, "budget_kb must be a positive number"),
    ({"budget_kb": "48"}, "budget_kb must be a positive number"),
    ({"memory": "sparse"}, "memory must be one of"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop must be"),
    ({"budget_kb": None}, "budget_kb is required"),
])
def test_bad_options_are_clear_errors(digits, kwargs, fragment):
    with pytest.raises(AAError, match=fragment):
        _convert(digits, **kwargs)


def test_bad_eval_data_is_a_clear_error(digits):
    with pytest.raises(AAError, match="250 inputs and 10 labels"):
        _convert(digits, eval_data=(digits.x_val[:250], digits.y_val[:10]))
    with pytest.raises(AAError, match="keras.Model"):
        aa_tflite.convert("model.keras", budget_kb=1, representative_data=digits.x_cal)


def test_equal_bytes_are_measured_once_and_old_runs_make_room(digits, monkeypatch):
    """The search verifies a plan, then a narrower menu's or the curve's plan may be the same
    file: its metrics come from the first run. The kept runs are capped by their outputs' size."""
    from aa_tflite.search import bench as bench_module

    _, base = _baseline(digits)
    bench, runs = base.bench, []
    real = bench._run
    monkeypatch.setattr(bench, "_run", lambda tfl: runs.append(tfl) or real(tfl))
    units = list(base.units)
    one = bench.build(base.expand({units[0]: SiteConfig(bits=4)}))
    two = bench.build(base.expand({units[1]: SiteConfig(bits=4)}))
    three = bench.build(base.expand({units[0]: SiteConfig(bits=6)}))
    first = bench.measure(one)
    assert bench.measure(bytes(one)) is first and runs == [one]
    assert bench.measure(two).score == real(two).score and runs == [one, two]
    monkeypatch.setattr(bench_module, "MEASURED_BYTES", first.outputs.nbytes)  # room for one
    assert bench.measure(one) is first and len(runs) == 2  # a hit evicts nothing
    bench.measure(three)  # a run: the older ones go, to make room
    bench.measure(three)
    bench.measure(one)
    assert runs == [one, two, three, one]


def test_only_large_fits_take_the_fit_lock(digits, monkeypatch):
    """Two options build on two threads; a fit of many values (a 224x224 network's tensor) holds
    float copies of them, so large fits take turns. The digits model's fits are small."""
    from aa_tflite.search import bench as bench_module

    _, base = _baseline(digits)
    bench, site = base.bench, next(iter(base.graphs))
    assert bench._fitting([site]) is not bench._fit_lock
    monkeypatch.setattr(bench_module, "_LOCKED_VALUES", bench.base_values.size(
        base.graphs[site].tensor) - 1)
    assert bench._fitting([site]) is bench._fit_lock
    assert bench._fitting([], [base.graphs[site].tensor]) is bench._fit_lock


class _PenalisedBench(Bench):
    """A bench on which any plan of two or more sites verifies 5 points worse than measured:
    losses that are not additive, which the repair step must notice."""

    def build(self, configs, **kw):
        self._multi = len([c for c in configs.values() if c != SiteConfig()]) > 1
        return super().build(configs, **kw)

    def measure(self, tflite):
        m = super().measure(tflite)
        if getattr(self, "_multi", False) and m.accuracy is not None:
            m = dataclasses.replace(m, accuracy=m.accuracy - 0.05, score=m.score - 0.05)
        return m


def test_a_plan_that_verifies_worse_than_predicted_is_repaired(digits):
    # The bench is a parameter of the baseline stage: this one penalises every multi-site plan.
    cfg, base = _baseline(digits, bits=[4], bench=_PenalisedBench)
    budget = Budget(0.6 * INT8_PEAK / 1024)
    measured = measure(base, candidate_list(base, cfg), cfg, budget, MeasureCache())
    # With 4 bits only, two sites must change to meet the budget.
    got = verify(base, measured, cfg, budget)
    repairs = got.repairs
    assert repairs and "verified loss" in repairs[0] and "undid" in repairs[0]
    # Both 4-bit sites are needed for this budget, so no repaired plan fits; the best is kept.
    assert "kept the best verified plan" in repairs[-1]
    bits = base.tensor_bits(got.configs)
    assert len({c.bits for c in got.configs.values()} - {8}) == 1 and len(got.configs) >= 2
    assert memory.plan_tensors(got.tflite, bits=bits)[0] <= budget.nbytes
    assert base.bench.loss(got.metrics) == pytest.approx(got.predicted + 5, abs=0.5)
    with pytest.raises(BudgetError, match="above max_accuracy_drop=1"):
        verify(base, measured, dataclasses.replace(cfg, max_accuracy_drop=1), budget)


class _ThresholdPenalisedBench(Bench):
    """A bench that misleads the search: alone, a 4-bit site measures 3 samples worse than it
    is, and a plan that thresholds a site and changes another verifies one sample worse (less
    than the repair step's tolerance). The full menu's plan then thresholds, and only the
    narrower menus' plans can catch it. Keyed by the built bytes: options build on threads."""

    def build(self, configs, **kw):
        changed = [c for c in configs.values() if c != SiteConfig()]
        built = super().build(configs, **kw)
        penalty = 0.0
        if len(changed) == 1 and changed[0].bits == 4:
            penalty = 0.012
        elif len(changed) > 1 and any(c.threshold > 0 for c in changed):
            penalty = 0.004
        self.__dict__.setdefault("_penalty", {})[built] = penalty
        return built

    def measure(self, tflite):
        m = super().measure(tflite)
        p = self.__dict__.get("_penalty", {}).get(tflite, 0.0)
        if p and m.accuracy is not None:
            m = dataclasses.replace(m, accuracy=m.accuracy - p, score=m.score - p)
        return m


@pytest.mark.parametrize("bench", [Bench, _ThresholdPenalisedBench])
def test_the_full_menu_never_verifies_worse_than_a_narrower_one(digits, bench):
    """At the same budget, the plan the full menu returns verifies at least as well as each
    narrower menu's plan (no thresholds; thresholds at 8 bits), built and measured here."""
    from aa_tflite.search import planner
    from aa_tflite.search.verify import narrower_menus

    cfg, base = _baseline(digits, memory="packed+sparse", bits=[4], sparsity_points=(10.0, 20.0, 30.0),
                          bench=bench)
    budget = Budget(0.55 * INT8_PEAK / 1024)
    measured = measure(base, candidate_list(base, cfg), cfg, budget, MeasureCache())
    menus = narrower_menus(measured.options)
    assert set(menus) == {"precision only", "thresholds only"}
    got = verify(base, measured, cfg, budget)
    buffers = _planning_buffers(base, cfg)
    for name, menu in menus.items():
        try:
            plan = planner.search(buffers, menu, budget.nbytes)
        except BudgetError:
            continue
        other = base.bench.measure(base.bench.build(base.expand(plan.configs())))
        assert base.bench.loss(got.metrics) <= base.bench.loss(other) + 1e-9, name
    if bench is _ThresholdPenalisedBench:  # the full menu's own plan thresholds and loses
        assert all(c.threshold == 0 for c in got.configs.values()), got.repairs


def _planning_buffers(base, cfg):
    from aa_tflite.search.memory_modes import memory_model

    return memory_model(cfg.memory).planning_buffers(base)


def test_float_io_models_are_planned_too(digits):
    out = _convert(digits, io_dtype="float32", measure_tflm=False, curve_points=0)
    assert out.report.planned_memory.packed_peak <= out.report.budget_bytes
    assert evaluate(out.tflite, digits.x_val[250:], digits.y_val[250:]) > 0.95


def _separable_model():
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(i)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", name="sep")(x)  # signed middle
    x = keras.layers.ReLU(name="sep_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(10, name="out")(x), name="sep")


def test_signed_tensors_are_planned_and_hold_their_levels(digits):
    model = _separable_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.x_val[:250], digits.y_val[:250], epochs=10, verbose=0)
    # The depthwise half of the separable conv is a signed tensor live at the peak: only the
    # signed lowering can meet this budget.
    out = aa_tflite.convert(model, budget_kb=0.55, representative_data=digits.x_cal,
                            eval_data=(digits.x_val[250:], digits.y_val[250:]), progress=False,
                            measure_tflm=False, curve_points=0)
    signed_sites = {s: c for s, c in out.plan.sites.items() if s.startswith("signed:")}
    assert signed_sites and all(c.bits < 8 for c in signed_sites.values())
    rep = out.report
    assert rep.planned_memory.packed_peak <= rep.budget_bytes
    rows = {r.site: r for r in rep.sites}
    for s, c in signed_sites.items():
        assert "signed" in rows[s].lowering and "RELU_N1_TO_1" in rows[s].lowering
        t = rows[s].tensor
        values = tensor_values(out.tflite, [t], digits.x_val * 4)[t]
        assert len(np.unique(values)) <= 2 ** int(c.bits)
    # The file says the same: metadata and derived bits agree with the report.
    from aa_tflite.tflite import metadata

    assert metadata.stored_bits(metadata.strip_metadata(out.tflite)) == rep.tensor_bits
    ops0, _ = flatbuffer.describe(flatbuffer.read(out.baseline_tflite))
    ops1, _ = flatbuffer.describe(flatbuffer.read(out.tflite))
    assert [(o.name, o.inputs, o.outputs) for o in ops0] == [(o.name, o.inputs, o.outputs)
                                                             for o in ops1]


@pytest.mark.parametrize("target, kernels", [("android", "xnnpack"), ("tflm", "tflm"),
                                             (None, "builtin")])
def test_the_target_chooses_the_kernels_losses_are_measured_on(digits, target, kernels):
    r = _convert(digits, budget_kb=2.5, target=target, measure_tflm=False, curve_points=0,
                 memory="packed")  # target "tflm" alone would count TFLM's real arena
    assert r.report.kernels == kernels and r.report.target == target
    from aa_tflite.tflite.metadata import read_metadata

    meta = read_metadata(r.tflite)
    assert meta["kernels"] == kernels and meta["target"] == target
    if target:
        assert f"the kernels target '{target}' runs" in r.report.to_markdown()


def test_an_explicit_kernels_wins_and_a_bad_target_is_named(digits):
    r = _convert(digits, budget_kb=2.5, target="android", kernels="builtin",
                 measure_tflm=False, curve_points=0)
    assert r.report.kernels == "builtin"
    with pytest.raises(AAError, match="target must be one of"):
        _convert(digits, budget_kb=2.5, target="phone")


def test_tflm_kernels_verified_score_is_what_tflite_micro_scores(digits):
    """kernels="tflm" (the reference kernels: TFLite Micro itself) measures every loss and the
    verified score on TFLM, so the report's scores are TFLM's on the same samples."""
    x, y = digits.x_val[:120], digits.y_val[:120]
    r = _convert(digits, budget_kb=1.2, kernels="tflm", eval_data=(x, y), measure_tflm=False,
                 curve_points=0)
    tflm = runtime_mod.run_model(r.tflite, x, kernels="tflm")
    assert r.report.planned_score == float(np.mean(tflm.argmax(1) == y))
    base = runtime_mod.run_model(r.baseline_tflite, x, kernels="tflm")
    assert r.report.int8_score == float(np.mean(base.argmax(1) == y))
    assert r.report.kernels == "tflm"


def test_cached_corrections_give_the_same_bytes_as_fresh_fits(digits):
    """Bench.build reuses a consumer correction fitted for the same execution-order prefix; a
    plan built after others (cache warm) equals the same plan built on a fresh bench."""
    kw = dict(bits=[4, 2], max_fit_samples=64, max_eval_samples=100)
    (_, warm), (_, cold) = _baseline(digits, **kw), _baseline(digits, **kw)
    four, two = SiteConfig(bits=4), SiteConfig(bits=2)
    for plan in ({"conv1_relu": four}, {"conv1_relu": four, "conv2_relu": two}):
        warm.bench.build(plan)
    assert warm.bench._corrections  # fitted and kept
    plan = {"conv1_relu": four, "conv2_relu": two, "conv3_relu": four}
    assert warm.bench.build(plan) == cold.bench.build(plan)
    assert len(warm.bench._corrections) == 3 and len(cold.bench._corrections) == 3


def test_a_budget_at_the_int8_figure_returns_int8_without_measuring(digits):
    """The int8 model meets a budget equal to its own packed peak: no option is measured, no
    curve is built, and the plan is the int8 model; one byte less needs a plan."""
    r = _convert(digits, budget_kb=3072 / 1024)
    assert r.report.options_measured == 0 and r.plan.sites == {} and r.report.curve == ()
    assert r.report.budget_figure() == 3072 and r.report.verified_loss == 0.0
    r = _convert(digits, budget_kb=3071 / 1024, curve_points=0)
    assert r.report.options_measured > 0 and r.report.budget_figure() <= 3071
