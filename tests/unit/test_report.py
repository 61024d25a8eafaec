"""The report a person reads: its Markdown pinned by a snapshot (as larq pins its model summary),
and the budgeted figure taken per memory mode."""

import dataclasses
import json
import os

import pytest

from aa_tflite.report import Report, SiteRow
from aa_tflite.search.curve import CurveSample
from aa_tflite.types import MemoryReport, TflmArena

SNAPSHOT = os.path.join(os.path.dirname(__file__), "snapshots", "report.md")


def _report(**kw) -> Report:
    mem = MemoryReport(packed_peak=1792, int8_peak=3072, tflm=TflmArena(7040, 3072, 3968),
                       weights=48004, file_size=57880)
    int8 = MemoryReport(packed_peak=3072, int8_peak=3072, tflm=TflmArena(7040, 3072, 3968),
                        weights=48004, file_size=52000)
    fields = dict(
        model="digits_cnn", memory_mode="packed", budget_bytes=1843,
        metric="top-1 accuracy", float_score=0.98, int8_score=0.98, planned_score=0.976,
        predicted_loss=0.4, verified_loss=0.4, eval_samples=250, int8_memory=int8,
        planned_memory=mem, int8_sparse_peak=2480, planned_sparse_peak=1500,
        sites=(SiteRow(site="conv1_relu", tensor=7, bits=4, threshold=0.0, clip=None,
                       sparsity=0.191, packed_bytes=1536, sparse_bytes=1171, loss=0.4,
                       lowering="4-bit: int8 tensor"),
               SiteRow(site="conv2_relu", tensor=9, bits=8, threshold=0.0, clip=None,
                       sparsity=None, packed_bytes=None, sparse_bytes=None, loss=0.0,
                       lowering="plain int8")),
        options_measured=10, repairs=("Attempt 1: verified loss 2.00 points against 0.40 "
                                      "predicted; undid conv3_relu and searched again.",),
        seconds={"sensitivity": 1.25, "total": 3.5},
        curve=(CurveSample(2560, 0.98, 0.98), CurveSample(1792, 0.976, None)),
        sensitivity={"conv1_relu": (("4b", 0.4, 512),)}, notes=("A note.",),
        tensor_bits={7: 4}, kernels="xnnpack", options_skipped=5, target="android")
    fields.update(kw)
    return Report(**fields)


def test_the_markdown_report_matches_its_snapshot():
    text = _report().to_markdown()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        with open(SNAPSHOT, "w") as f:
            f.write(text)
    with open(SNAPSHOT) as f:
        assert text == f.read(), "the report changed: rerun with UPDATE_SNAPSHOTS=1 if meant"


def test_the_budget_line_takes_the_figure_of_the_memory_mode():
    # 1,792 packed fits 1,843 B; 7,040 TFLM does not; 1,500 packed+sparse fits.
    assert "Met: yes." in _report().to_markdown()
    assert "Met: NO." in _report(memory_mode="tflm").to_markdown()
    assert "Met: yes." in _report(memory_mode="packed+sparse", budget_bytes=1500).to_markdown()
    assert "Met: NO." in _report(memory_mode="packed+sparse", budget_bytes=1499).to_markdown()
    assert _report(memory_mode="tflm").int8_budget_figure() == 7040


def test_the_json_report_round_trips_its_curve_as_records():
    doc = json.loads(_report().to_json())
    assert doc["curve"][1] == {"peak": 1792, "predicted": 0.976, "verified": None}
    assert doc["tensor_bits"] == {"7": 4}


def test_a_report_without_a_tflm_figure_falls_back_to_packed():
    rep = _report(memory_mode="tflm", planned_memory=dataclasses.replace(
        _report().planned_memory, tflm=None))
    assert rep.budget_figure() == 1792
    with pytest.raises(ValueError):
        _report(memory_mode="bogus").budget_figure()


def test_inspect_says_whether_a_file_carries_an_offline_plan(digits_tflite):
    from aa_tflite.report import inspect_lines
    from aa_tflite.tflite import offline_plan

    plain = inspect_lines(digits_tflite, name="digits.tflite", measure_tflm=False)
    assert plain[0].startswith("digits.tflite: 10 ops")
    assert "TFLM offline memory plan: none (TFLM plans the arena itself)" in plain
    offsets, _ = offline_plan.plan_offsets(digits_tflite)
    planned = offline_plan.write_offline_plan(digits_tflite, offsets)
    lines = inspect_lines(planned, name="planned.tflite", measure_tflm=False)
    assert f"TFLM offline memory plan: yes, {len(offsets):,} tensors placed (TFLM uses it; " \
           "LiteRT and tflite-runtime ignore it)" in lines
    assert any(line.startswith("packed activation peak") for line in lines)
