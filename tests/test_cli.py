"""The aa-tflite command: inspect, convert, demo, and its errors."""

import json
import os

import numpy as np
import pytest

from aa_tflite import cli
from aa_tflite.types import Plan
from tests.conftest import FIXTURES


def _run(argv):
    return cli.main(cli.parse_args(argv))


def test_inspect_prints_ops_tensors_and_memory(capsys):
    assert _run(["inspect", os.path.join(FIXTURES, "digits_int8.tflite")]) == 0
    out = capsys.readouterr().out
    assert "CONV_2D +RELU" in out
    assert "| # | tensor | dtype |" in out
    for label in ("packed activation peak", "TFLM arena (real)", "weights"):
        assert label in out


def test_convert_with_eval_writes_all_files(tmp_path, digits, capsys):
    model_path = tmp_path / "digits.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "cal.npz", x=digits.x_cal)
    np.savez(tmp_path / "val.npz", x=digits.x_val, y=digits.y_val)
    out = tmp_path / "out"
    rc = _run(["convert", str(model_path), "--data", str(tmp_path / "cal.npz"),
               "--eval", str(tmp_path / "val.npz"), "--out", str(out), "--sparsity-points", "10"])
    assert rc == 0
    report = json.loads((out / "digits.report.json").read_text())
    assert report["accuracy"]["int8"] > 0.95
    assert report["memory"]["tflm"]["head"] == report["memory_int8_baseline"]["tflm"]["head"]
    plan = Plan.from_json((out / "digits.plan.json").read_text())
    assert set(plan.sites) == {"conv1_relu", "conv2_relu", "conv3_relu", "fc1_relu"}
    assert all(cfg.threshold > 0 for cfg in plan.sites.values())
    assert (out / "digits.tflite").read_bytes()[4:8] == b"TFL3"
    assert "| site | threshold |" in (out / "digits.report.md").read_text()
    # A plan file round-trips through --plan and gives the same model.
    rc = _run(["convert", str(model_path), "--data", str(tmp_path / "cal.npz"), "--out",
               str(tmp_path / "again"), "--plan", str(out / "digits.plan.json")])
    assert rc == 0
    assert (tmp_path / "again" / "digits.tflite").read_bytes() == (out / "digits.tflite").read_bytes()


def test_demo_runs_and_reports(tmp_path, capsys):
    assert _run(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Top-1 on held-out data: float" in out
    assert "TFLM arena (real)" in out
    assert sorted(os.listdir(tmp_path)) == ["digits.plan.json", "digits.report.json",
                                           "digits.report.md", "digits.tflite"]


@pytest.mark.parametrize("argv, fragment", [
    (["convert", "missing.keras", "--data", "x.npz", "--out", "o"], "does not exist"),
    (["inspect", "missing.tflite"], "No such file"),
])
def test_errors_are_reported_not_raised(argv, fragment, capsys):
    assert _run(argv) == 2
    assert fragment in capsys.readouterr().err


def test_bad_npz_is_a_clear_error(tmp_path, digits, capsys):
    model_path = tmp_path / "m.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    rc = _run(["convert", str(model_path), "--data", str(tmp_path / "two.npz"), "--out",
               str(tmp_path)])
    assert rc == 2
    assert "name the inputs 'x'" in capsys.readouterr().err
