"""The Android demo's plain-Java core (android_demo/core), compiled with javac and run with
Debian's junit4 against assets that `aa-tflite export --target android` wrote and values that
Python computed for them. The Android layer itself needs the Android SDK and is not built here."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from aa_tflite.runtime import interpreter as runtime
from aa_tflite.runtime.onthefly import OperatingPoints, PointsError
from aa_tflite.targets.android import export_android
from aa_tflite.types import AAError
from tests.helpers import ROOT, need

CORE = os.path.join(ROOT, "android_demo", "core", "src")
JARS = ["/usr/share/java/junit4.jar", "/usr/share/java/hamcrest-core.jar"]


def _need_java():
    missing = [p for p in JARS if not os.path.exists(p)]
    need(f"javac or junit4 missing ({missing}); `make test` installs junit4"
         if shutil.which("javac") is None or missing else "")


@pytest.fixture(scope="module")
def assets(digits, digits_points, tmp_path_factory):
    multi = digits_points
    out = tmp_path_factory.mktemp("assets")
    x, y = digits.x_val[250:266], digits.y_val[250:266]
    export_android(multi.tflite, out, samples_x=x, samples_y=y)
    points = OperatingPoints(multi.tflite, kernels="builtin")
    cases = [(None, None), (2.0, None), (1.2, None), (0.5, None), (None, 0.5), (None, 1.01),
             (2.4, 0.9)]
    select = []
    for budget, score in cases:
        try:
            key = points.select(budget_kb=budget, min_score=score).key
        except PointsError:
            key = None
        select.append({"budget_kb": budget, "min_score": score, "key": key})
    runner = points._runner(multi.points[0].key)
    (name, in_detail), = runner.get_input_details().items()
    (out_name, out_detail), = runner.get_output_details().items()
    raw, top1, conf = {}, {}, {}
    for p in multi.points:
        r = points._runner(p.key)
        rows = [r(**{name: runtime.quantize(s[None], in_detail)})[out_name][0] for s in x]
        logits = np.stack([runtime.dequantize(q, out_detail) for q in rows]).astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        raw[p.key] = [q.astype(int).tolist() for q in rows]
        top1[p.key] = logits.argmax(1).tolist()
        conf[p.key] = probs.max(1).astype(np.float32).tolist()
    expected = {
        "points": [{"key": p.key, "budget_kb": p.budget_kb, "packed": p.packed,
                    "tflm_arena": p.tflm_arena, "score": p.score} for p in multi.points],
        "select": select,
        "input": {"scale": float(in_detail["quantization"][0]),
                  "zero_point": int(in_detail["quantization"][1])},
        "quantized": [runtime.quantize(s, in_detail).astype(int).reshape(-1).tolist()
                      for s in x[:4]],
        "labels": [int(v) for v in y],
        "output": {"scale": float(out_detail["quantization"][0]),
                   "zero_point": int(out_detail["quantization"][1])},
        "raw_outputs": raw, "top1": top1, "confidence": conf}
    (out / "expected.json").write_text(json.dumps(expected))
    return multi, out


def test_export_writes_the_apps_assets(assets, digits):
    multi, out = assets
    assert sorted(os.listdir(out)) == ["expected.json", "labels.txt", "metadata.json",
                                      "model.tflite", "samples.bin", "samples.json"]
    assert (out / "model.tflite").read_bytes() == multi.tflite
    assert (out / "labels.txt").read_text().split() == [str(k) for k in range(10)]
    meta = json.loads((out / "metadata.json").read_text())
    assert [p["signature"] for p in meta["points"]] == [p.key for p in multi.points]
    x = np.frombuffer((out / "samples.bin").read_bytes(), "<f4").reshape(16, 8, 8, 1)
    assert np.array_equal(x, digits.x_val[250:266])


def test_java_core_passes_its_junit_tests_on_the_exported_assets(assets, tmp_path):
    _need_java()
    _, out = assets
    classes = tmp_path / "classes"
    classes.mkdir()
    sources = [os.path.join(d, f) for sub in ("main", "test") for d, _, fs in
               os.walk(os.path.join(CORE, sub, "java")) for f in fs if f.endswith(".java")]
    cp = os.pathsep.join([str(classes), *JARS])
    done = subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(classes), "-cp", cp,
                           *sources], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ran = subprocess.run(["java", f"-Daatflite.fixtures={out}", "-cp", cp,
                          "org.junit.runner.JUnitCore", "dev.aatflite.core.CoreTest"],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert "OK (6 tests)" in ran.stdout


def test_export_android_errors_are_clear(assets, tmp_path):
    multi, _ = assets
    with pytest.raises(AAError, match="the model takes"):
        export_android(multi.tflite, tmp_path, samples_x=np.zeros((2, 4, 4, 1)))
    with pytest.raises(AAError, match="labels for a model with 10 outputs"):
        export_android(multi.tflite, tmp_path, samples_x=np.zeros((2, 8, 8, 1)), labels=["a"])


def test_the_apps_committed_assets_are_a_three_point_model_with_its_samples():
    """`make android-assets` wrote them; the app builds from them as they are."""
    from aa_tflite.runtime.onthefly import file_points

    assets = os.path.join(ROOT, "android_demo", "app", "src", "main", "assets")
    with open(os.path.join(assets, "model.tflite"), "rb") as f:
        model = f.read()
    points = file_points(model)
    assert len(points) == 3 and all(p.packed and p.score for p in points)
    with open(os.path.join(assets, "samples.json")) as f:
        shape = json.load(f)["shape"]
    assert os.path.getsize(os.path.join(assets, "samples.bin")) == 4 * int(np.prod(shape))
    with open(os.path.join(assets, "metadata.json")) as f:
        assert [p["signature"] for p in json.load(f)["points"]] == [p.key for p in points]


def test_export_android_returns_the_exported_record(assets, tmp_path):
    multi, _ = assets
    done = export_android(multi.tflite, tmp_path, samples_x=np.zeros((3, 8, 8, 1)))
    assert done.target == "android" and list(done.points) == [p.key for p in multi.points]
    assert [os.path.basename(f) for f in done.files] == [
        "model.tflite", "metadata.json", "labels.txt", "samples.bin", "samples.json"]
    assert done.info["samples"] == 3
    assert done.lines == ("android assets: 3 points (kib2p4, kib1p8, kib1p2), 3 samples.",)
