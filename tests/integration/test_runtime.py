"""The interpreter loader and batched evaluation."""

import time

import numpy as np
import pytest

from aa_tflite.frontend.export import to_tflite
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.types import AAError, Kernels


def test_backend_is_litert_here():
    assert runtime.interpreter_backend() == "ai_edge_litert"


def test_batched_evaluation_equals_one_by_one(digits, digits_tflite):
    x, y = digits.x_val[:70], digits.y_val[:70]
    batched = runtime.evaluate(digits_tflite, x, batch_size=32)  # 32, 32, then 6
    interp = runtime.load_interpreter(digits_tflite)
    single = np.concatenate([runtime.run(interp, x[i:i + 1], batch_size=1) for i in range(len(x))])
    assert np.array_equal(batched, single)
    acc = runtime.evaluate(digits_tflite, x, y, batch_size=32)
    assert acc == pytest.approx(np.mean(np.argmax(single, axis=1) == y))
    assert acc > 0.9


def test_float_io_model_agrees_with_int8_io(digits):
    x = digits.x_val[:100]
    f = runtime.evaluate(to_tflite(digits.model, digits.x_cal, io_dtype="float32"), x)
    q = runtime.evaluate(to_tflite(digits.model, digits.x_cal, io_dtype="int8"), x)
    assert np.mean(np.argmax(f, 1) == np.argmax(q, 1)) > 0.98


def test_errors(digits_tflite):
    with pytest.raises(AAError, match="model takes"):
        runtime.evaluate(digits_tflite, np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(AAError, match="labels"):
        runtime.evaluate(digits_tflite, np.zeros((2, 8, 8, 1), np.float32), np.zeros(3))


def test_tensor_values_from_the_cut_model_equal_the_whole_model_preserved(digits, digits_tflite):
    """tensor_values runs only the ops a tensor needs; the values equal those of the whole model
    run with every tensor preserved, bit for bit, for every op's output."""
    from aa_tflite.search.calibrate import _prefix_model, tensor_values
    from aa_tflite.tflite import flatbuffer

    x = digits.x_val[:40]
    ops, tensors = flatbuffer.describe(flatbuffer.read(digits_tflite))
    outs = [t for op in ops for t in op.outputs if len(tensors[t].shape) >= 2]  # activations
    assert len(outs) >= 6
    whole = runtime.load_interpreter(digits_tflite, preserve_all_tensors=True)
    details = {d["index"]: d for d in whole.get_tensor_details()}
    for _ in runtime.batches(whole, x, batch_size=64):
        expected = {t: runtime.dequantize(whole.get_tensor(t).copy(), details[t]) for t in outs}
    for t in outs:
        cut = _prefix_model(digits_tflite, [t])
        n_ops = len(flatbuffer.read(cut).subgraphs[0].operators)
        assert n_ops == 1 + next(op.index for op in ops if t in op.outputs)
        assert np.array_equal(tensor_values(digits_tflite, [t], x)[t], expected[t])
    inp = int(flatbuffer.read(digits_tflite).subgraphs[0].inputs[0])
    assert _prefix_model(digits_tflite, [inp]) is None  # the input: the whole model runs


def test_fit_values_keep_the_fit_positions_and_zero_statistics_of_the_full_tensors(
        digits, digits_tflite):
    """What the bench keeps of the baseline: each tensor's fit positions and non-zero statistics,
    read a batch at a time, equal to those read from its full values, whatever the batch."""
    from aa_tflite.search import calibrate
    from aa_tflite.tflite import flatbuffer

    x = digits.x_val[:40]
    ops, tensors = flatbuffer.describe(flatbuffer.read(digits_tflite))
    outs = [t for op in ops for t in op.outputs if len(tensors[t].shape) >= 2]
    full = calibrate.tensor_values(digits_tflite, outs, x, keep_quantized=True)
    expected = calibrate.nonzero_stats(full, outs)
    for batch_size in (64, 7, 1):  # one batch; uneven batches; one sample at a time
        kept = calibrate.FitValues(digits_tflite, outs, x, limit=500, batch_size=batch_size)
        assert kept.zero_stats(outs) == expected
        for t in outs:
            assert np.array_equal(kept.positions(t), full.positions(t, 500))
            assert len(kept.positions(t)) <= 500
    assert any(len(full[t].reshape(-1, full[t].shape[-1])) > 500 for t in outs)  # subsampled
    assert any(len(full[t].reshape(-1, full[t].shape[-1])) < 500 for t in outs)  # kept whole
    assert outs[0] in kept and -1 not in kept


def test_the_runtime_imports_neither_tensorflow_nor_the_schema_nor_other_stages():
    """What a Raspberry Pi imports: numpy, an interpreter and ``aa_tflite.types``, nothing else
    of aa_tflite (checked in a fresh process)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, aa_tflite.runtime, aa_tflite.runtime.guard\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "tflite_micro")]
    assert "ai_edge_litert.schema_py_generated" not in loaded
    ours = {m for m in loaded if m.startswith("aa_tflite")}
    assert ours == {"aa_tflite", "aa_tflite.types", "aa_tflite.runtime",
                    "aa_tflite.runtime.interpreter", "aa_tflite.runtime.onthefly",
                    "aa_tflite.runtime.guard"}


def test_make_interpreter_serves_both_litert_kernel_sets_and_refuses_the_rest(digits, digits_tflite):
    x = digits.x_val[:16]
    outs = {}
    for kernels in (Kernels.BUILTIN, Kernels.XNNPACK):
        interp = runtime.make_interpreter(digits_tflite, kernels, num_threads=1)
        outs[kernels] = np.concatenate([runtime.run(interp, x[i:i + 1], batch_size=1)
                                        for i in range(len(x))])
    assert np.array_equal(outs[Kernels.BUILTIN].argmax(1), outs[Kernels.XNNPACK].argmax(1))
    with pytest.raises(AAError, match="micro_interpreter"):
        runtime.make_interpreter(digits_tflite, Kernels.TFLM)
    with pytest.raises(AAError, match="kernels must be one of"):
        runtime.make_interpreter(digits_tflite, "gpu")
    with pytest.raises(AAError, match="TFL3"):
        runtime.make_interpreter(b"not a model", Kernels.BUILTIN)
    micro = runtime.micro_interpreter(digits_tflite)
    assert tuple(micro.get_input_details(0)["shape"]) == (1, 8, 8, 1)


def test_median_latency_warms_up_once_then_times_each_repeat(digits_tflite):
    calls = []
    assert runtime.median_latency_ms(lambda: calls.append(1), repeats=7) >= 0
    assert len(calls) == 8
    assert 0 < runtime.sample_latency_ms(digits_tflite, repeats=3) < 1000


def test_a_time_bounded_latency_stops_after_its_seconds_once_it_has_enough_invokes():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    low, mid, high = runtime.latency_quantiles_ms(slow, repeats=100, max_seconds=0.05)
    assert len(calls) == 1 + runtime.MIN_REPEATS  # the warm-up, then the fewest timed invokes
    assert 20 <= low <= mid <= high
    calls.clear()
    runtime.latency_quantiles_ms(slow, repeats=100, max_seconds=0.3)
    assert runtime.MIN_REPEATS + 1 < len(calls) < 100


def test_operating_points_take_the_litert_kernel_sets_only(digits_tflite):
    from aa_tflite.runtime import OperatingPoints
    from aa_tflite.runtime.onthefly import PointsError

    with pytest.raises(PointsError, match="kernels must be 'xnnpack' or 'builtin'"):
        OperatingPoints(digits_tflite, kernels=Kernels.TFLM)
