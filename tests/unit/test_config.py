"""ConvertConfig: every option named, defaulted and checked in one place."""

import dataclasses

import numpy as np
import pytest

from aa_tflite.config import Budget, ConvertConfig, budget_list
from aa_tflite.types import AAError, Kernels, MemoryMode, Plan


def test_defaults_are_checked_and_normalised():
    cfg = ConvertConfig()
    assert cfg.memory is MemoryMode.PACKED and cfg.bits == (6, 5, 4, 3, 2)
    assert cfg.measure_kernels is Kernels.BUILTIN and cfg.sizes == [None]
    cfg = ConvertConfig(memory="packed+sparse", bits=[2, 4, 4, 8], sparsity_points=[10],
                        max_accuracy_drop=np.float32(1.5), input_sizes=(np.int64(8), 12))
    assert cfg.memory is MemoryMode.PACKED_SPARSE and cfg.bits == (4, 2)
    assert cfg.sparsity_points == (10.0,) and cfg.max_accuracy_drop == 1.5
    assert cfg.sizes == [8, 12] and all(type(s) is int for s in cfg.sizes)


@pytest.mark.parametrize("target, kernels", [
    (None, Kernels.BUILTIN), ("android", Kernels.XNNPACK), ("pi", Kernels.XNNPACK),
    ("web", Kernels.XNNPACK), ("tflm", Kernels.TFLM), ("edgetpu", Kernels.BUILTIN)])
def test_the_target_chooses_the_kernels_unless_kernels_is_given(target, kernels):
    assert ConvertConfig(target=target).measure_kernels is kernels
    assert ConvertConfig(target=target, kernels="tflm").measure_kernels is Kernels.TFLM


@pytest.mark.parametrize("options, fragment", [
    ({"memory": "sparse"}, "memory must be one of"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop must be"),
    ({"max_accuracy_drop": True}, "max_accuracy_drop must be"),
    ({"bits": [7]}, "bits must be one of"),
    ({"bits": "4"}, "bits must be a list"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"max_fit_samples": 2.5}, "max_fit_samples must be an integer"),
    ({"curve_points": -1}, "curve_points must be an integer >= 0"),
    ({"kernels": "gpu"}, "kernels must be one of"),
    ({"target": "phone"}, "target must be one of"),
    ({"plan": {"a": 1}}, "plan must be an aa_tflite.Plan"),
    ({"input_sizes": [8, 0]}, "input_sizes must be a list of positive integers"),
    ({"input_sizes": [8, 8]}, "input_sizes must be distinct"),
    ({"input_sizes": [8], "plan": Plan({})}, "cannot take one given plan"),
])
def test_a_bad_option_names_itself_and_the_fix(options, fragment):
    with pytest.raises(AAError, match=fragment):
        ConvertConfig(**options)


def test_replace_rechecks_and_keeps_the_target_live():
    cfg = dataclasses.replace(ConvertConfig(target="tflm"), target="android")
    assert cfg.measure_kernels is Kernels.XNNPACK
    with pytest.raises(AAError, match="memory must be one of"):
        dataclasses.replace(cfg, memory="nope")


def test_the_tflm_target_counts_the_real_arena_unless_told_otherwise():
    assert ConvertConfig(target="tflm").memory is MemoryMode.TFLM
    assert ConvertConfig(target="tflm", memory="packed").memory is MemoryMode.PACKED
    assert ConvertConfig().memory is ConvertConfig(target="android").memory is MemoryMode.PACKED


def test_budgets():
    assert Budget.of(1.5).nbytes == 1536 and Budget.of(np.float64(2)).kb == 2.0
    assert [b.kb for b in budget_list([6, 4.5], plan=None)] == [6.0, 4.5]
    assert budget_list(None, plan=Plan({})) == [None]
    for bad, fragment in ((None, "budget_kb is required"), ([], "empty list"),
                          (0, "positive number"), (float("nan"), "positive number"),
                          ("4", "positive number"), ([4, True], "positive number")):
        with pytest.raises(AAError, match=fragment):
            budget_list(bad, plan=None)


def test_weights_are_shared_unless_kernel_corrections_are_asked_for():
    from aa_tflite import cli

    assert ConvertConfig().share_weights is True
    assert ConvertConfig(share_weights=0).share_weights is False
    base = ["convert", "m.keras", "--data", "x.npz", "--out", "o"]
    assert cli.parse_args(base).kernel_corrections is False
    assert cli.parse_args([*base, "--kernel-corrections"]).kernel_corrections is True
