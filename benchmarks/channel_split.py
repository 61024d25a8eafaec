"""TFLite Micro's arena after a channel split of pointwise -> depthwise pairs, with and without
an offline memory plan, against the stock arena.

Run ``python -m benchmarks.channel_split`` (a few minutes; ``--skip-mobilenet`` for the
miniatures only). For mini_mobilenet, mini_mobilenetv2 and mini_xception (untrained, BatchNorm
statistics set on the digits) and MobileNetV2-0.35 at 96x96 (random weights, BatchNorm
recalibrated), it converts the model to a stock int8 ``.tflite`` and measures four files:

- ``stock``: the converter's file;
- ``stock+plan``: with our offline plan (``plan_offsets(t, in_place="auto", library="all")``:
  overlaps proven for TFLM's reference kernels, CMSIS-NN and ESP-NN alike);
- ``split``: ``best_split(t, max_k=8)``, the pairs at the peak split while TFLM's total goes down;
- ``split+plan``: ``best_split`` choosing splits for the planned arena, then planned.

For each: TFLM's head, tail and total, the smallest arena TFLM allocates it in (found by trying),
whether TFLM's outputs in that arena and XNNPACK's outputs equal the stock file's bit for bit on
real and adversarial inputs, and the LiteRT latency (XNNPACK, 1 thread, median of single-sample
invokes, rounds alternating between the files). Writes ``benchmarks/results/channel_split.json``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from aa_tflite.runtime.interpreter import micro_run
from benchmarks.offline_plan import int8_inputs, mobilenet_96, run_and_save

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "channel_split.json")
MINIS = ("mini_mobilenet", "mini_mobilenetv2", "mini_xception")
VARIANTS = ("stock", "stock+plan", "split", "split+plan")


def _models(skip_mobilenet: bool):
    """(name, stock int8 .tflite, float inputs to run) per model."""
    import keras

    import aa_tflite
    from aa_tflite.frontend.embedded import default_data
    from converters import mini
    from converters.imagenet import calibrate_batchnorm

    x_cal, x_val, _ = default_data()
    for name in MINIS:
        keras.utils.set_random_seed(0)
        model = calibrate_batchnorm(mini.BUILDERS[name](keras), x_cal)
        yield name, aa_tflite.to_tflite(model, x_cal), x_val[:32]
    if skip_mobilenet:
        return
    yield mobilenet_96()


def _plan(tflite: bytes) -> bytes:
    from aa_tflite.tflite.offline_plan import plan_offsets, write_offline_plan

    offsets, _ = plan_offsets(tflite, in_place="auto", library="all")
    return write_offline_plan(tflite, offsets, overlaps="auto", library="all")


def _planned_total(tflite: bytes) -> int:
    from aa_tflite.tflite import memory

    return memory.tflm_arena(_plan(tflite)).total


def _xnnpack_outputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from aa_tflite.runtime.interpreter import make_interpreter

    interp = make_interpreter(tflite, "xnnpack", num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    res = []
    for i in range(len(x)):
        interp.set_tensor(inp, x[i:i + 1])
        interp.invoke()
        res.append(interp.get_tensor(out).copy())
    return np.concatenate(res)


def _latencies(files: dict[str, bytes], rounds: int = 5, repeats: int = 100) -> dict[str, float]:
    """Median over rounds (files alternating) of each file's median single-sample latency."""
    from aa_tflite.runtime.interpreter import sample_latency_ms

    times: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(rounds):
        for name, tflite in files.items():
            times[name].append(sample_latency_ms(tflite, "xnnpack", num_threads=1,
                                                 repeats=repeats))
    return {name: float(np.median(t)) for name, t in times.items()}


def _variant(tflite: bytes, x: np.ndarray, stock_tflm, stock_xnn, splits) -> dict:
    from aa_tflite.tflite import flatbuffer, memory

    arena = memory.tflm_arena(tflite)
    smallest = memory.smallest_arena(tflite, total=arena.total)
    tflm = micro_run(tflite, x, arena_size=smallest)
    return {"splits": {str(k): v for k, v in splits.items()}, "head": arena.head,
            "tail": arena.tail, "total": arena.total, "smallest_arena": smallest,
            "ops": len(flatbuffer.describe(flatbuffer.read(tflite))[0]),
            "tflm_bit_exact": bool(np.array_equal(tflm, stock_tflm)),
            "tflm_max_diff_steps": int(np.abs(tflm.astype(int) - stock_tflm.astype(int)).max()),
            "xnnpack_bit_exact": bool(np.array_equal(_xnnpack_outputs(tflite, x), stock_xnn)),
            "file_bytes": len(tflite), "weights": memory.weights_size(tflite)}


def run(skip_mobilenet: bool = False) -> list[dict]:
    from aa_tflite.tflite.channel_split import best_split, split_candidates

    rows = []
    for name, tflite, x_float in _models(skip_mobilenet):
        x = int8_inputs(tflite, x_float)
        stock_tflm, stock_xnn = micro_run(tflite, x), _xnnpack_outputs(tflite, x)
        t = time.perf_counter()
        split, record = best_split(tflite, max_k=8)
        split_seconds = time.perf_counter() - t
        t = time.perf_counter()
        split_for_plan, plan_record = best_split(tflite, max_k=8, measure=_planned_total)
        plan_seconds = time.perf_counter() - t
        files = {"stock": tflite, "stock+plan": _plan(tflite), "split": split,
                 "split+plan": _plan(split_for_plan)}
        splits = {"stock": {}, "stock+plan": {}, "split": record.splits,
                  "split+plan": plan_record.splits}
        latency = _latencies(files)
        variants = {}
        for v in VARIANTS:
            variants[v] = _variant(files[v], x, stock_tflm, stock_xnn, splits[v])
            variants[v]["latency_ms"] = round(latency[v], 4)
            variants[v]["latency_ratio"] = round(latency[v] / latency["stock"], 3)
        row = {"model": name, "inputs": len(x),
               "pairs": [{"conv": p.conv, "channels": p.channels, "alive": p.alive,
                          "at_peak": p.at_peak} for p in split_candidates(tflite)],
               "search_seconds": {"split": round(split_seconds, 1),
                                  "split+plan": round(plan_seconds, 1)},
               "tried": {key: [[{str(k): n for k, n in splits.items()}, arena]
                               for splits, arena in rec.tried]
                         for key, rec in (("split", record), ("split+plan", plan_record))},
               "variants": variants}
        rows.append(row)
        print("\n".join(_lines(row)), flush=True)
    return rows


def _lines(r: dict) -> list[str]:
    out = []
    base = r["variants"]["stock"]["smallest_arena"]
    for name in VARIANTS:
        v = r["variants"][name]
        splits = ", ".join(f"op {k}: K={n}" for k, n in v["splits"].items()) or "-"
        exact = "yes" if v["tflm_bit_exact"] and v["xnnpack_bit_exact"] else \
            f"NO ({v['tflm_max_diff_steps']} steps)"
        out.append(f"| {r['model']} | {name} | {splits} | {v['head']:,} | {v['tail']:,} | "
                   f"{v['smallest_arena']:,} ({v['smallest_arena'] / base:.2f}x) | "
                   f"{v['latency_ratio']:.2f}x | {exact} ({r['inputs']}) |")
    return out


def table(rows: list[dict]) -> list[str]:
    """The results as markdown table lines."""
    return ["| model | file | split (conv op: chunks) | TFLM head (B) | tail (B) | arena (B) | "
            "LiteRT latency | bit-exact, TFLM and XNNPACK (inputs) |",
            "|" + "---|" * 8, *[line for r in rows for line in _lines(r)]]


def main() -> None:
    run_and_save(__doc__, run, table, RESULTS)


if __name__ == "__main__":
    main()
