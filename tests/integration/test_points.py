"""Operating points: several budgets in one file, switched at run time (LiteRT, tflite-runtime,
TFLite Micro)."""

import json
import os
import subprocess

import numpy as np
import pytest

import aa_tflite
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.runtime.onthefly import OperatingPoints, PointsError, file_points
from aa_tflite.tflite import multipoint
from aa_tflite.tflite.kernel_math import kernel_bytes
from aa_tflite.tflite.metadata import read_metadata, strip_metadata
from aa_tflite.types import AAError
from tests.helpers import DEMO_BUDGETS, ROOT, need_pi_env, points_kwargs

INT8_PEAK = 3072  # the embedded digits model
BUDGETS = DEMO_BUDGETS  # KiB: 78%, 60% and 39% of the int8 peak
_kw = points_kwargs


@pytest.fixture(scope="module")
def multi(digits_points):
    return digits_points


@pytest.fixture(scope="module")
def singles(digits):
    return [aa_tflite.convert(digits.model, budget_kb=b, **_kw(digits)) for b in BUDGETS]


def _fresh(tflite: bytes, x: np.ndarray, kernels: str) -> np.ndarray:
    """Outputs of a fresh interpreter on a single-subgraph file, one sample per invoke."""
    interp = runtime.load_interpreter(tflite, kernels=kernels)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for sample in x:
        interp.set_tensor(inp["index"], runtime.quantize(sample[None], inp))
        interp.invoke()
        rows.append(runtime.dequantize(interp.get_tensor(out["index"]).copy(), out))
    return np.concatenate(rows)


def test_one_signature_per_budget_in_the_order_given(multi):
    keys = [multipoint.point_key(b) for b in BUDGETS]
    assert keys == ["kib2p4", "kib1p8", "kib1p2"]
    assert multipoint.signature_keys(multi.tflite) == keys
    assert [p.key for p in multi.points] == keys
    assert [p.budget_kb for p in multi.points] == list(BUDGETS)
    for p in multi.points:
        assert p.packed <= p.budget_kb * 1024
        assert p.tflm_arena is not None and p.latency_ms > 0 and 0.9 < p.score <= 1
    assert multi.tflm_arena == max(p.tflm_arena for p in multi.points)
    # packed peaks fall with the budget: the points are different plans
    assert multi.points[0].packed > multi.points[1].packed > multi.points[2].packed


def test_each_point_is_the_single_budget_file_and_runs_bit_for_bit(multi, singles, digits):
    x = digits.x_val[:60]
    for kernels in ("builtin", "xnnpack"):
        points = OperatingPoints(multi.tflite, kernels=kernels)
        for p, single in zip(multi.points, singles, strict=True):
            # the same plan and the same flatbuffer as convert with that budget alone
            assert strip_metadata(p.tflite) == strip_metadata(single.tflite)
            assert p.plan == single.plan
            assert np.array_equal(points.run(x, point=p.key), _fresh(single.tflite, x, kernels))


def test_switching_in_any_order_equals_fresh_interpreters(multi, digits):
    x = digits.x_val[:8]
    expected = {p.key: _fresh(p.tflite, x, "xnnpack") for p in multi.points}
    points = OperatingPoints(multi.tflite)
    order = ["kib1p2", "kib2p4", "kib1p2", "kib1p8", "kib2p4", "kib1p8", "kib1p2"]
    for key in order:
        points.switch(key)
        assert points.current == key
        assert np.array_equal(points.run(x), expected[key]), key


def test_the_file_describes_its_points(multi):
    meta = read_metadata(multi.tflite)
    assert [p["signature"] for p in meta["points"]] == [p.key for p in multi.points]
    for entry, p in zip(meta["points"], multi.points, strict=True):
        assert entry["budget_kb"] == p.budget_kb and entry["input_size"] is None
        assert entry["memory"]["packed_peak"] == p.packed
        assert entry["memory"]["tflm_arena"] == p.tflm_arena
        assert entry["scores"]["planned"] == p.score
        assert {int(t): b for t, b in entry["tensor_bits"].items()} == dict(p.report.tensor_bits)
        assert all(b < 8 for b in entry["tensor_bits"].values())
    # the run-time reader (no schema module) sees the same
    described = file_points(multi.tflite)
    assert [(d.key, d.packed, d.score) for d in described] == \
        [(p.key, p.packed, p.score) for p in multi.points]
    # each point's own file names itself as its one point
    for p in multi.points:
        assert [e["signature"] for e in read_metadata(p.tflite)["points"]] == [p.key]


def test_three_points_cost_at_most_1_2x_one_point_and_share_the_int8_kernels(multi):
    one = len(multi.points[0].tflite)
    assert len(multi.tflite) <= (1 + 0.1 * (len(multi.points) - 1)) * one
    assert len(multi.tflite) < sum(len(p.tflite) for p in multi.points)
    ratio = f"{len(multi.tflite) / one:.2f}x one point's file"
    assert ratio in multi.points_markdown()
    base = kernel_bytes(multi.baseline_tflite)
    assert all(kernel_bytes(p.tflite) == base for p in multi.points)  # byte for byte, every point
    assert any(p.plan.sites for p in multi.points)  # and the points do differ


def test_select_picks_the_best_point_that_fits(multi):
    points = OperatingPoints(multi.tflite)
    by_key = {p.key: p for p in points.points}
    chosen = points.select(budget_kb=2.0)
    assert chosen.packed <= 2048
    fitting = [p for p in points.points if p.packed <= 2048]
    assert chosen.score == max(p.score for p in fitting)
    assert points.select(budget_kb=10).score == max(p.score for p in points.points)
    assert points.select(budget_kb=1.2).key == "kib1p2"
    assert by_key["kib1p2"].packed <= 1.2 * 1024
    with pytest.raises(PointsError, match="No point fits"):
        points.select(budget_kb=0.5)
    assert points.latency_ms("kib1p8") > 0
    with pytest.raises(PointsError, match="No point fits"):
        points.select(max_latency_ms=1e-9)
    with pytest.raises(PointsError, match="Its points"):
        points.run(np.zeros((1, 8, 8, 1), np.float32), point="nope")
    arenas = [p.tflm_arena for p in points.points]
    assert all(arenas) and points.select(tflm_kb=max(arenas) / 1024).tflm_arena <= max(arenas)
    with pytest.raises(PointsError, match=r"tflm_kb=0\.5.*TFLM arena \d+ B"):
        points.select(tflm_kb=0.5)  # every point needs the int8 arena on stock TFLM


def test_save_writes_the_file_one_tflm_file_per_point_and_the_table(multi, tmp_path):
    files = multi.save(tmp_path / "digits")
    names = sorted(os.path.basename(f) for f in files)
    for p in multi.points:
        assert f"digits.{p.key}.tflite" in names
        with open(tmp_path / f"digits.{p.key}.tflite", "rb") as f:
            assert f.read() == p.tflite
    with open(tmp_path / "digits.tflite", "rb") as f:
        assert f.read() == multi.tflite
    report = json.loads((tmp_path / "digits.report.json").read_text())
    assert [r["signature"] for r in report["points"]] == [p.key for p in multi.points]
    assert (tmp_path / "digits.points.png").stat().st_size > 1000
    assert (tmp_path / "digits.timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| kib1p2 |" in (tmp_path / "digits.report.md").read_text()


def test_per_point_files_run_in_tflite_micro_with_the_largest_arena(multi, digits):
    from aa_tflite.tflite import memory

    x = digits.x_val[:30]
    for p in multi.points:
        arena = memory.tflm_arena(p.tflite)
        assert arena.total == p.tflm_arena <= multi.tflm_arena
        tflm = runtime.run_model(p.tflite, x, kernels="tflm")
        lite = runtime.run_model(p.tflite, x, kernels="builtin")
        assert np.array_equal(tflm.argmax(1), lite.argmax(1))
        scale = runtime.load_interpreter(p.tflite).get_output_details()[0]["quantization"][0]
        assert np.max(np.abs(tflm - lite)) <= 2 * scale + 1e-6  # two output steps at most


def test_same_inputs_same_bytes(multi, digits):
    again = aa_tflite.convert(digits.model, budget_kb=list(BUDGETS), **_kw(digits))
    assert again.tflite == multi.tflite
    assert [p.tflite for p in again.points] == [p.tflite for p in multi.points]


def test_one_budget_keeps_the_single_subgraph_file(singles):
    r = singles[1]
    assert len(r.points) == 1 and r.points[0].key == "serving_default"
    assert multipoint.signature_keys(r.tflite) == ["serving_default"]
    assert r.tflite == r.points[0].tflite
    points = OperatingPoints(r.tflite)
    assert [p.key for p in points.points] == ["serving_default"]


@pytest.mark.parametrize("budget, match", [
    ([], "empty list"),
    ([2.0, 2.0], "distinct"),
    ([2.0, -1], "positive number"),
    ([2.0, "3"], "positive number"),
])
def test_bad_budget_lists_get_clear_errors(digits, budget, match):
    with pytest.raises(AAError, match=match):
        aa_tflite.convert(digits.model, budget_kb=budget, **_kw(digits))


def test_a_budget_list_with_a_plan_is_refused(digits):
    with pytest.raises(AAError, match="no plan"):
        aa_tflite.convert(digits.model, budget_kb=[2, 1.5], plan=aa_tflite.Plan({}),
                          **_kw(digits))


def test_combine_refuses_files_of_different_conversions(multi):
    from tests.conftest import FIXTURES

    with open(os.path.join(FIXTURES, "mnist1d_int8.tflite"), "rb") as f:
        other = f.read()
    with pytest.raises(AAError, match="points of one file must come from one model"):
        multipoint.combine([("a", multi.points[0].tflite), ("b", other)])
    with pytest.raises(AAError, match="start with a letter"):
        multipoint.combine([("1a", multi.points[0].tflite)])


def test_operating_points_errors_are_clear(tmp_path):
    with pytest.raises(PointsError, match="No such file"):
        OperatingPoints(tmp_path / "missing.tflite")
    with pytest.raises(PointsError, match="TFL3"):
        file_points(b"not a model at all")


_PI_SCRIPT = """
import json, sys
import numpy as np
from aa_tflite.runtime.onthefly import OperatingPoints
points = OperatingPoints(sys.argv[1], kernels="builtin")
x = np.load(sys.argv[2])["x"]
out = {}
for key in ["kib1p2", "kib2p4", "kib1p8", "kib1p2"]:
    out.setdefault(key, points.run(x, point=key).tolist())
import tflite_runtime
print(json.dumps({"version": tflite_runtime.__version__, "numpy": np.__version__,
                  "keys": [p.key for p in points.points], "out": out}))
"""


@pytest.mark.pi
def test_every_point_runs_on_tflite_runtime_2_14(multi, digits, tmp_path):
    pi = need_pi_env()
    model, data = tmp_path / "multi.tflite", tmp_path / "x.npz"
    model.write_bytes(multi.tflite)
    x = digits.x_val[:20]
    np.savez(data, x=x)
    done = subprocess.run([pi, "-c", _PI_SCRIPT, str(model), str(data)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["version"].startswith("2.14") and got["numpy"].startswith("1.")
    assert got["keys"] == [p.key for p in multi.points]
    for p in multi.points:
        assert np.array_equal(np.asarray(got["out"][p.key], np.float32),
                              _fresh(p.tflite, x, "builtin")), p.key


@pytest.fixture(scope="module")
def fcn(digits):
    """A small fully convolutional digits classifier (global pooling before the Dense), trained
    here for a few epochs on the embedded digits data (deterministic)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, name="fc")(x)
    model = keras.Model(inp, out, name="fcn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_cal, _labels(digits), epochs=30, batch_size=32, verbose=0, shuffle=False)
    return model


def _labels(digits):
    """Labels for the calibration inputs: the embedded model's own predictions (it is 98%
    accurate, and the calibration split ships without labels)."""
    return np.argmax(digits.model.predict(digits.x_cal, verbose=0), 1)


def test_input_size_points_share_kernels_and_equal_single_size_files(fcn, digits):
    kw = dict(representative_data=digits.x_cal, progress=False, curve_points=0,
              eval_data=(digits.x_val[:200], digits.y_val[:200]))
    # int8 peaks: 1,536 B at 8x8 and 3,456 B at 12x12; 1.2 KiB needs low bits at both sizes
    multi = aa_tflite.convert(fcn, budget_kb=[2.0, 1.2], input_sizes=[8, 12], **kw)
    keys = ["px8_kib2", "px8_kib1p2", "px12_kib2", "px12_kib1p2"]
    assert multipoint.signature_keys(multi.tflite) == keys
    assert [p.input_size for p in multi.points] == [8, 8, 12, 12]
    meta = read_metadata(multi.tflite)["points"]
    assert [(m["signature"], m["input_size"]) for m in meta] == [(k, s) for k, s in
                                                                zip(keys, [8, 8, 12, 12])]
    # A 12x12 point is the file convert writes for the model rebuilt at 12x12 on resized data.
    from aa_tflite.frontend.resize import at_size, resize

    big = aa_tflite.convert(at_size(fcn, 12), budget_kb=1.2,
                            representative_data=resize(digits.x_cal, 12), progress=False,
                            curve_points=0, eval_data=(resize(digits.x_val[:200], 12),
                                                       digits.y_val[:200]))
    assert strip_metadata(multi.points[3].tflite) == strip_metadata(big.tflite)
    # Larger inputs, larger activations; the kernels are the same bytes and stored once.
    assert multi.points[2].report.int8_memory.packed_peak > \
        multi.points[0].report.int8_memory.packed_peak
    assert multi.points[2].tflm_arena > multi.points[0].tflm_arena
    from aa_tflite.tflite import flatbuffer

    combined = flatbuffer.read(multi.tflite)
    kernel = {tuple(int(d) for d in t.shape): t.buffer for t in combined.subgraphs[0].tensors
              if t.shape is not None and len(t.shape) == 4 and t.shape[0] == 8}
    assert list(kernel) == [(8, 3, 3, 1)]  # c1's kernel: its bytes do not depend on the size
    for graph in combined.subgraphs:
        assert [t.buffer for t in graph.tensors if t.shape is not None
                and tuple(int(d) for d in t.shape) == (8, 3, 3, 1)] == [kernel[(8, 3, 3, 1)]]
    assert len(multi.tflite) < sum(len(p.tflite) for p in multi.points)
    points = OperatingPoints(multi.tflite, kernels="builtin")
    x12 = resize(digits.x_val[200:230], 12)
    assert np.array_equal(points.run(x12, point="px12_kib1p2"),
                          _fresh(multi.points[3].tflite, x12, "builtin"))
    x8 = digits.x_val[200:230]
    assert np.array_equal(points.run(x8, point="px8_kib2"),
                          _fresh(multi.points[0].tflite, x8, "builtin"))
    with pytest.raises(PointsError, match=r"takes \(N, 12, 12, 1\)"):
        points.run(x8, point="px12_kib2")


def test_input_sizes_errors_are_clear(digits, fcn):
    kw = dict(representative_data=digits.x_cal, progress=False, curve_points=0)
    with pytest.raises(AAError, match="fully convolutional"):
        aa_tflite.convert(digits.model, budget_kb=2.0, input_sizes=[8, 12], **kw)
    with pytest.raises(AAError, match="positive integers"):
        aa_tflite.convert(fcn, budget_kb=2.0, input_sizes=[8, 0], **kw)
    with pytest.raises(AAError, match="distinct"):
        aa_tflite.convert(fcn, budget_kb=2.0, input_sizes=[8, 8], **kw)
