"""TFLite Micro's arena with an offline memory plan of ours, against the stock arena.

Run ``python -m benchmarks.offline_plan`` (a few minutes; ``--skip-mobilenet`` for seconds). For
the digits CNN, the six miniatures (untrained, BatchNorm statistics set on the digits) and
MobileNetV2-0.35 at 96x96 (random weights, BatchNorm recalibrated), it converts the model to a
stock int8 ``.tflite``, measures TFLM's arena (head, tail, total), then plans the head with the
in-place overlaps proven for every kernel library (``library="all"``, the default) and with those
proven for TFLM's reference kernels only (``library="reference"``). Each planned file is checked
(``check_plan``), allocated by TFLM in exactly its measured arena (and refused 64 B under), and run
there on real and adversarial inputs; its outputs must equal the stock file's bit for bit. "Arena"
is the smallest arena TFLM allocates the file in (found by trying), which can exceed TFLM's
reported head plus tail when the head is small: TFLM plans in the free space between the two.
Writes ``benchmarks/results/offline_plan.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from aa_tflite.runtime.interpreter import micro_run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "offline_plan.json")
LIBRARIES = ("all", "reference")


def _models(skip_mobilenet: bool):
    """(name, stock int8 .tflite, float inputs to run) per model."""
    import aa_tflite
    from aa_tflite.frontend.embedded import default_data, load_default
    from converters import mini
    from converters.imagenet import calibrate_batchnorm

    d = load_default()
    yield "digits CNN", aa_tflite.to_tflite(d.model, d.x_cal), d.x_val[:32]
    x_cal, x_val, _ = default_data()
    for name, build in mini.BUILDERS.items():
        import keras

        keras.utils.set_random_seed(0)
        model = calibrate_batchnorm(build(keras), x_cal)
        yield name, aa_tflite.to_tflite(model, x_cal), x_val[:32]
    if skip_mobilenet:
        return
    yield mobilenet_96()


def mobilenet_96() -> tuple[str, bytes, np.ndarray]:
    """MobileNetV2-0.35 at 96x96, random weights with BatchNorm calibrated on smooth random
    images, as int8 ``.tflite``; and 8 more such images to run it on."""
    import aa_tflite
    from converters.imagenet import calibrate_batchnorm, mobilenet_v2

    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, size=(136, 96, 96, 3)).astype(np.float32)
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
    model = calibrate_batchnorm(mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3)), x[:64])
    return "MobileNetV2-0.35 96x96", aa_tflite.to_tflite(model, x[:128]), x[128:]


def int8_inputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """``x`` quantized, then adversarial inputs: both extremes, noise and a checkerboard."""
    from aa_tflite.runtime.interpreter import make_interpreter, quantize
    from aa_tflite.types import Kernels

    detail = make_interpreter(tflite, Kernels.BUILTIN).get_input_details()[0]
    shape = tuple(detail["shape"][1:])
    board = np.where(np.indices(shape).sum(axis=0) % 2, 127, -128)
    bad = [np.full(shape, 127), np.full(shape, -128), board,
           np.random.RandomState(0).randint(-128, 128, size=shape)]
    return np.concatenate([quantize(x, detail), np.stack(bad).astype(np.int8)])


def _planned(tflite: bytes, library: str, x: np.ndarray, stock_out: np.ndarray) -> dict:
    from aa_tflite.runtime import guard
    from aa_tflite.tflite import memory
    from aa_tflite.tflite.offline_plan import (
        check_plan,
        in_place_candidates,
        plan_offsets,
        write_offline_plan,
    )
    from aa_tflite.types import Kernels

    t = time.perf_counter()
    offsets, head = plan_offsets(tflite, in_place="auto", library=library)
    seconds = time.perf_counter() - t
    problems = check_plan(tflite, offsets, overlaps="auto", library=library)
    planned = write_offline_plan(tflite, offsets, overlaps="auto", library=library)
    arena = memory.tflm_arena(planned)
    smallest = memory.smallest_arena(planned, total=arena.total)
    out = micro_run(planned, x, arena_size=smallest)
    short = guard.probe(planned, kernels=Kernels.TFLM, tflm_arena_size=smallest - 64)
    return {"library": library, "allowed_overlaps": len(in_place_candidates(
                tflite, library=library)),
            "planned_head": head, "tflm_head": arena.head, "tflm_tail": arena.tail,
            "tflm_total": arena.total, "smallest_arena": smallest,
            "check_problems": len(problems),
            "fails_64_under": not short.ok, "bit_exact": bool(np.array_equal(out, stock_out)),
            "max_diff_steps": int(np.abs(out.astype(int) - stock_out.astype(int)).max()),
            "plan_seconds": round(seconds, 3)}


def run(skip_mobilenet: bool = False) -> list[dict]:
    from aa_tflite.tflite import memory

    rows = []
    for name, tflite, x_float in _models(skip_mobilenet):
        x = int8_inputs(tflite, x_float)
        stock = memory.tflm_arena(tflite)
        stock_out = micro_run(tflite, x)
        row = {"model": name, "inputs": len(x), "stock_head": stock.head,
               "stock_tail": stock.tail, "stock_total": stock.total,
               "stock_smallest_arena": memory.smallest_arena(tflite, total=stock.total),
               "greedy_head": memory.plan_tensors(tflite, alignment=16)[0],
               "planned": [_planned(tflite, lib, x, stock_out) for lib in LIBRARIES]}
        rows.append(row)
        print("\n".join(_lines(row)), flush=True)
    return rows


def _lines(r: dict) -> list[str]:
    out = []
    for p in r["planned"]:
        out.append(f"| {r['model']} | {r['stock_head']:,} / {r['stock_tail']:,} / "
                   f"{r['stock_smallest_arena']:,} | {p['library']} ({p['allowed_overlaps']}) | "
                   f"{p['tflm_head']:,} ({p['tflm_head'] / r['stock_head']:.2f}x) | "
                   f"{p['smallest_arena']:,} "
                   f"({p['smallest_arena'] / r['stock_smallest_arena']:.2f}x) | "
                   f"{'yes' if p['bit_exact'] else 'NO'} ({r['inputs']}) | "
                   f"{'yes' if p['fails_64_under'] else 'NO'} | {p['plan_seconds']} |")
    return out


def table(rows: list[dict]) -> list[str]:
    """The results as markdown table lines."""
    return ["| model | stock TFLM head / tail / arena (B) | library (overlaps allowed) | planned "
            "head (B) | planned arena (B) | TFLM bit-exact (inputs) | fails 64 B under | "
            "plan (s) |",
            "|" + "---|" * 8, *[line for r in rows for line in _lines(r)]]


def run_and_save(description: str, run_rows, make_table, results: str) -> None:
    """The command line of a results benchmark: run (``--skip-mobilenet`` leaves out the
    ImageNet-scale model), print the table, write the results file atomically."""
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()
    rows = run_rows(args.skip_mobilenet)
    print("\n".join(make_table(rows)))
    from aa_tflite.files import atomic_write

    atomic_write(results, json.dumps(rows, indent=2))


def main() -> None:
    run_and_save(__doc__, run, table, RESULTS)


if __name__ == "__main__":
    main()
