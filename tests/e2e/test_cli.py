"""The aa-tflite command: inspect, convert, demo, and its errors."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aa_tflite import cli
from aa_tflite.tflite import metadata
from aa_tflite.types import Plan
from tests.conftest import FIXTURES
from tests.helpers import ROOT


def _run(argv):
    return cli.main(cli.parse_args(argv))


def test_inspect_prints_ops_tensors_and_memory(capsys):
    assert _run(["inspect", os.path.join(FIXTURES, "digits_int8.tflite")]) == 0
    out = capsys.readouterr().out
    assert "CONV_2D +RELU" in out
    assert "| # | tensor | dtype |" in out
    for label in ("packed activation peak", "TFLM arena (real)", "weights"):
        assert label in out


def test_convert_with_budget_writes_all_files(tmp_path, digits, capsys):
    model_path = tmp_path / "digits.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "cal.npz", x=digits.x_cal)
    np.savez(tmp_path / "val.npz", x=digits.x_val[:250], y=digits.y_val[:250])
    prefix = tmp_path / "out" / "digits"
    rc = _run(["convert", str(model_path), "--budget-kb", "1.8", "--data",
               str(tmp_path / "cal.npz"), "--eval", str(tmp_path / "val.npz"), "--out",
               str(prefix), "--no-progress"])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "digits.report.json").read_text())
    assert report["planned_memory"]["packed_peak"] <= report["budget_bytes"] == int(1.8 * 1024)
    assert report["planned_memory"]["tflm"]["total"] <= report["int8_memory"]["tflm"]["total"]
    plan = Plan.from_json((tmp_path / "out" / "digits.plan.json").read_text())
    assert any(cfg.bits < 8 for cfg in plan.sites.values())
    for ext in (".tflite", ".report.md", ".sensitivity.png", ".memory.png"):
        assert (tmp_path / "out" / f"digits{ext}").exists()
    assert "Met: yes" in capsys.readouterr().out
    # inspect prints the report's packed figure for the file convert wrote, with and without
    # the metadata (then the bits come from the tensors' clamps and parameters).
    packed = report["planned_memory"]["packed_peak"]
    assert packed < report["int8_memory"]["packed_peak"]
    tflite = (tmp_path / "out" / "digits.tflite").read_bytes()
    (tmp_path / "stripped.tflite").write_bytes(metadata.strip_metadata(tflite))
    for path, source in ((prefix.with_suffix(".tflite"), "from the file's aa_tflite metadata"),
                         (tmp_path / "stripped.tflite", "no aa_tflite metadata; derived")):
        assert _run(["inspect", str(path), "--no-tflm"]) == 0
        out = capsys.readouterr().out
        assert f"packed activation peak : {packed:,} B" in out and source in out
    # The plan file round-trips through --plan and gives the same model.
    rc = _run(["convert", str(model_path), "--data", str(tmp_path / "cal.npz"), "--out",
               str(tmp_path / "again" / "digits"), "--plan",
               str(tmp_path / "out" / "digits.plan.json"), "--no-tflm", "--no-progress"])
    assert rc == 0
    # The same model; only the metadata differs (a given plan has no budget).
    again = (tmp_path / "again" / "digits.tflite").read_bytes()
    assert metadata.strip_metadata(again) == metadata.strip_metadata(tflite)
    assert metadata.read_metadata(again)["plan"] == metadata.read_metadata(tflite)["plan"]


def test_convert_needs_a_budget_or_a_plan(tmp_path, capsys):
    rc = _run(["convert", "m.keras", "--data", "x.npz", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--budget-kb" in capsys.readouterr().err


def test_an_unmeetable_budget_exits_2_with_the_smallest_figure(tmp_path, digits, capsys):
    model_path = tmp_path / "digits.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "cal.npz", x=digits.x_cal)
    rc = _run(["convert", str(model_path), "--budget-kb", "0.2", "--data",
               str(tmp_path / "cal.npz"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "smallest activation memory any plan reaches" in capsys.readouterr().err
    assert not (tmp_path / "o.tflite").exists()


# Lines TensorFlow and LiteRT log from C++: absl's "I0000 00:00:..." prefix, its start-up
# warning, and LiteRT's "INFO: ..." lines.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl|"
                        r"(INFO|WARNING|ERROR): )|cuInit|XNNPACK delegate", re.M)
# A figure of four or more digits without thousands separators (not decimals).
BARE_FIGURE = re.compile(r"(?<![\d.,])\d{4,}(?!\d)")


def _command(argv, **env):
    """``aa-tflite ARGV`` as a user runs it (the console entry point), in a fresh process."""
    return subprocess.run([sys.executable, "-m", "aa_tflite.cli", *argv], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, **env),
                          stdin=subprocess.DEVNULL)


def test_demo_makes_three_points_and_switches_between_them_quietly(tmp_path):
    """The demo as a new user runs it: no TensorFlow or LiteRT log line (even with the
    Makefile's TF_CPP_MIN_LOG_LEVEL=2), every figure with separators; ``--verbose`` lets the
    native logs through."""
    done = _command(["demo", "--out", str(tmp_path / "digits"), "--no-progress"],
                    TF_CPP_MIN_LOG_LEVEL="2")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert done.stderr == ""
    assert not NATIVE_LOG.search(out), NATIVE_LOG.search(out)
    assert "# Operating points" in out and "One file, 3 signatures" in out
    assert "Held-out top-1 (250 samples the planner did not see)" in out
    assert "| 7,040 |" in out  # the TFLM arena column
    assert BARE_FIGURE.findall(out.replace(str(tmp_path), "")) == []
    lines = [line for line in out.splitlines() if "ms per sample" in line]
    switched = [line.split(":")[0].strip() for line in lines]
    sizes = ["px4_kib3", "px6_kib3", "px8_kib3"]
    assert switched == ["kib2p4", "kib1p8", "kib1p2", "kib1p2", "kib1p8", "kib2p4",
                        *sizes, *reversed(sizes)]
    # Part 1's points share one arena; part 2's differ in it (and in accuracy), as printed.
    arenas = [re.search(r"TFLM arena ([\d,]+) B", line).group(1) for line in lines]
    assert len(set(arenas[:6])) == 1 and len(set(arenas[6:])) == 3, arenas
    assert "These points differ in what the device allocates" in out
    top1 = [float(re.search(r"top-1 ([\d.]+)", line).group(1)) for line in lines[6:9]]
    assert top1 == sorted(top1) and top1[-1] - top1[0] > 0.05, top1
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{stem}.{ext}" for stem in ("digits", "digits_sizes")
         for ext in ("tflite", "report.md", "report.json", "points.png", "timeline.png")]
        + [f"digits.{k}.{ext}" for k in ("kib2p4", "kib1p8", "kib1p2")
           for ext in ("tflite", "plan.json")]
        + [f"digits_sizes.{k}.{ext}" for k in sizes for ext in ("tflite", "plan.json")])
    points = ["points", str(tmp_path / "digits.tflite")]
    quiet, verbose = _command(points), _command(["--verbose", *points])
    assert quiet.returncode == verbose.returncode == 0
    assert quiet.stderr == "" and "| kib1p2 | 1.2 |" in quiet.stdout
    assert "Created TensorFlow Lite XNNPACK delegate" in verbose.stderr


def test_the_package_builds_without_setuptools_warnings(tmp_path):
    """``pip install`` of a fresh copy: no deprecation warning about the license field, nor
    about the data folder being an importable package (pip -v shows the backend's output)."""
    root = ROOT
    src = tmp_path / "src"
    shutil.copytree(os.path.join(root, "aa_tflite"), src / "aa_tflite",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(root, name), src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert re.findall(r"\w*Warning: .*", log) == []
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("aa_tflite-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"aa_tflite/data/digits.npz", "aa_tflite/data/digits_cnn.keras",
            "aa_tflite/data/digits_fcn.keras",
            "aa_tflite/py.typed", "aa_tflite/targets/tflm.py"} <= set(names)


def test_demo_with_one_fraction_writes_one_point(tmp_path, capsys):
    assert _run(["demo", "--out", str(tmp_path / "digits"), "--budget-fraction", "0.6",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Met: yes" in out and "TFLM arena, real" in out
    assert "serving_default" in out
    assert {f for f in os.listdir(tmp_path) if not f.startswith("digits_sizes")} == {
        "digits.memory.png", "digits.plan.json", "digits.report.json", "digits.report.md",
        "digits.sensitivity.png", "digits.tflite", "digits.timeline.png"}


def test_convert_with_budgets_then_points_and_run(tmp_path, digits, capsys):
    model_path = tmp_path / "digits.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "cal.npz", x=digits.x_cal)
    np.savez(tmp_path / "val.npz", x=digits.x_val[:250], y=digits.y_val[:250])
    np.savez(tmp_path / "test.npz", x=digits.x_val[250:300], y=digits.y_val[250:300])
    prefix = str(tmp_path / "digits")
    assert _run(["convert", str(model_path), "--budget-kb", "2.5,1.2", "--data",
                 str(tmp_path / "cal.npz"), "--eval", str(tmp_path / "val.npz"), "--out",
                 prefix, "--no-progress"]) == 0
    assert "One file, 2 signatures" in capsys.readouterr().out
    assert _run(["points", prefix + ".tflite"]) == 0
    out = capsys.readouterr().out
    assert "| kib2p5 | 2.5 |" in out and "| kib1p2 | 1.2 |" in out
    assert _run(["run", prefix + ".tflite", "--point", "kib1p2", "--data",
                 str(tmp_path / "test.npz")]) == 0
    out = capsys.readouterr().out
    from aa_tflite.runtime.onthefly import OperatingPoints

    expected = OperatingPoints(prefix + ".tflite").run(digits.x_val[250:300], point="kib1p2")
    acc = np.mean(expected.argmax(1) == digits.y_val[250:300])
    assert f"top-1 accuracy: {acc:.4f}" in out
    assert _run(["run", prefix + ".tflite", "--point", "nope", "--data",
                 str(tmp_path / "test.npz")]) == 2
    assert "No point 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        _run(["convert", str(model_path), "--budget-kb", "2,x", "--data", "c.npz", "--out",
              prefix])
    assert exit_.value.code == 2
    assert "comma-separated numbers such as 6,4,3" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["convert", "missing.keras", "--budget-kb", "4", "--data", "x.npz", "--out", "o"],
     "does not exist"),
    (["inspect", "missing.tflite"], "does not exist"),
])
def test_errors_are_reported_not_raised(argv, fragment, capsys):
    assert _run(argv) == 2
    assert fragment in capsys.readouterr().err


def test_bad_npz_is_a_clear_error(tmp_path, digits, capsys):
    model_path = tmp_path / "m.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    rc = _run(["convert", str(model_path), "--budget-kb", "4", "--data",
               str(tmp_path / "two.npz"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "name the inputs 'x'" in capsys.readouterr().err


def test_a_bit_menu_outside_the_table_is_a_clear_error(tmp_path, digits, capsys):
    model_path = tmp_path / "m.keras"
    digits.model.save(model_path)
    np.savez(tmp_path / "cal.npz", x=digits.x_cal)
    rc = _run(["convert", str(model_path), "--budget-kb", "2", "--data", str(tmp_path / "cal.npz"),
               "--out", str(tmp_path / "o"), "--bits", "7,4", "--no-tflm", "--no-progress"])
    assert rc == 2
    assert "bits must be one of [8, 6, 5, 4, 3, 2]. Received: bits=7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["convert", "m.keras", "--data", "x.npz", "--out", "o", "--bits", "4,x"])
    assert cli.parse_args(["convert", "m.keras", "--data", "x.npz", "--out", "o",
                           "--bits", "none"]).bits == ()
