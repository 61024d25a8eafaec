"""The public API is exactly what ``aa_tflite.__all__`` lists, and every name resolves."""

import aa_tflite

EXPECTED = [
    "AAError", "AAReLU", "Bits", "BudgetError", "ConvertConfig", "Exported", "Kernels",
    "Lowering", "MemoryMode",
    "MemoryReport", "OperatingPoints", "Plan", "Point", "PointInfo", "Report", "Result",
    "Rewritten", "Site", "SiteConfig", "SiteKind",
    "SiteStats", "TflmArena", "convert", "evaluate", "export", "load_default",
    "load_interpreter", "memory_report", "plan_tensors", "read_metadata", "rewrite",
    "site_statistics",
    "tflm_arena", "thresholds_for_sparsity", "to_tflite",
]


def test_all_is_the_expected_sorted_list():
    assert aa_tflite.__all__ == EXPECTED
    assert sorted(aa_tflite.__all__) == aa_tflite.__all__  # ruff-style: capitals first


def test_every_exported_name_resolves():
    for name in aa_tflite.__all__:
        assert getattr(aa_tflite, name) is not None, name
