"""The benchmark's bookkeeping: which point counts at <= 1.5 points, and the reductions."""

import pytest

from benchmarks.curves import best_fraction, headline, timing


def _row(mct=True):
    row = {
        "model": "m",
        "int8": {"packed": 1000, "sparse": 800, "accuracy": 0.95},
        "all_4bit": {"packed": 500, "sparse": 400, "accuracy": 0.90},  # loses 5 points
        "precision_only": [
            {"fraction": 0.6, "packed": 600, "sparse": 500, "accuracy": 0.945, "seconds": 2.0},
            {"fraction": 0.5, "packed": 500, "sparse": 420, "accuracy": 0.92, "seconds": 2.0},
            {"fraction": 0.4, "infeasible": True, "smallest": 450, "seconds": 0.1}],
        "thresholds_only": [{"fraction": 0.9, "packed": 1000, "sparse": 720, "accuracy": 0.95}],
        "aa_tflite": [{"fraction": 0.5, "packed": 600, "sparse": 400, "accuracy": 0.94}],
    }
    if mct:
        row["mct"] = {"int8_activation_memory": 2000.0, "int8_sim": 0.96, "points": [
            {"fraction": 0.6, "seconds": 1.0, "accuracy_sim": 0.955, "activation_memory": 1400.0},
            {"fraction": 0.5, "seconds": 1.0, "accuracy_sim": 0.90, "activation_memory": 1000.0},
            {"fraction": 0.4, "seconds": 1.0, "error": "cannot meet"}]}
    return row


def test_best_fraction_keeps_only_points_within_the_bound():
    row = _row()
    assert best_fraction(row["precision_only"], 1000, 0.95, "packed") == 0.6  # 0.5 loses 3 pts
    assert best_fraction(row["precision_only"], 1000, 0.99, "packed") is None


def test_headline_reductions_and_notes():
    by = {h["baseline"]: h for h in headline(_row())}
    assert by["uniform int8"]["reduction"] == pytest.approx(0.4)
    assert by["all sites 4-bit"]["reduction"] is None
    assert "loses 5.0 points" in by["all sites 4-bit"]["note"]
    assert by["thresholds only"]["reduction"] == pytest.approx(1 - 0.5 / 0.9)
    assert by["precision only"]["reduction"] == pytest.approx(1 - 0.5 / 0.625)
    assert by["Sony MCT (simulated)"]["reduction"] == pytest.approx(1 - 0.6 / 0.7)
    assert "Sony MCT (simulated)" not in {h["baseline"] for h in headline(_row(mct=False))}


def test_timing_is_a_ratio_at_the_60_percent_budget():
    assert timing(_row()) == {"aa_seconds": 2.0, "mct_seconds": 1.0, "ratio": 2.0}
    assert timing(_row(mct=False))["ratio"] is None
