"""Measures the two threshold lowerings on the reference models.

For each model and each threshold level (the per-site thresholds that add +10 and +20 points of
sparsity over the ReLU's own), prints held-out top-1 accuracy, the measured sparsity of the site
tensors in the interpreter, the op count and the real TFLM arena, for ``shift`` and ``exact``.

Run: ``python -m benchmarks.lowering`` (about a minute). Writes ``benchmarks/results/lowering.json``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from aa_tflite.frontend.export import export, to_tflite
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.search import calibrate
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.types import SiteConfig


def _sparsity(tflite: bytes, site_tensors: dict, x: np.ndarray) -> float:
    tensors = [t for t in site_tensors.values() if t is not None]
    values = calibrate.tensor_values(tflite, tensors, x)
    zeros = sum(int(np.sum(values[t] == 0)) for t in tensors)
    return zeros / sum(values[t].size for t in tensors)


def measure(name: str, model, data: dict, levels=(10, 20)) -> list[dict]:
    x_cal, x_val, y_val = data["x_cal"], data["x_val"], data["y_val"]
    rows = []
    plain = to_tflite(model, x_cal)
    base = export(model, representative_data=x_cal)
    same = np.array_equal(runtime.evaluate(plain, x_val), runtime.evaluate(base.tflite, x_val))
    stats = calibrate.site_statistics(base.tflite, base.site_tensors, x_cal)

    def row(label: str, tflite: bytes, site_tensors: dict) -> dict:
        ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
        arena = memory.tflm_arena(tflite)
        r = {"model": name, "variant": label,
             "top1": runtime.evaluate(tflite, x_val, y_val),
             "sparsity": _sparsity(tflite, site_tensors, x_val),
             "ops": len(ops), "tflm_total": arena.total, "tflm_head": arena.head,
             "packed_peak": memory.plan_tensors(tflite)[0]}
        rows.append(r)
        return r

    row("int8 plain", plain, base.site_tensors)
    rows[-1]["identity_bit_exact"] = bool(same)
    for level in levels:
        plan = {s: SiteConfig(threshold=calibrate.thresholds_for_sparsity(st, [level])[0])
                for s, st in stats.items()}
        for lowering in ("shift", "exact"):
            ex = export(model, plan, representative_data=x_cal, lowering=lowering)
            row(f"+{level} pts, {lowering}", ex.tflite, ex.site_tensors)
    return rows


def main() -> None:
    from converters import digits_cnn, mnist1d_cnn

    all_rows = []
    for name, recipe in (("digits_cnn", digits_cnn), ("mnist1d_cnn", mnist1d_cnn)):
        t0 = time.time()
        model, data = recipe.train()
        all_rows += measure(name, model, data)
        print(f"{name}: {time.time() - t0:.1f} s")
    header = "| model | variant | top-1 | site sparsity | ops | TFLM arena (head) |"
    print(header + "\n|---|---|---|---|---|---|")
    for r in all_rows:
        print(f"| {r['model']} | {r['variant']} | {r['top1']:.4f} | {r['sparsity']:.3f} | "
              f"{r['ops']} | {r['tflm_total']} ({r['tflm_head']}) |")
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/lowering.json", "w") as f:
        json.dump(all_rows, f, indent=2)


if __name__ == "__main__":
    main()
