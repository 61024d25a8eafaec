"""The Edge TPU check on every reference model: which ops would map, where the first CPU
fallback cuts the graph, and what else the documented constraints flag.

Run ``python -m benchmarks.edgetpu`` (about 2 minutes here). Each model is converted at 60% of
its int8 packed peak, exported as ``aa-tflite export --target edgetpu`` does, and checked with
``aa_tflite.targets.edgetpu.check_edgetpu``. Nothing is compiled: ``edgetpu_compiler`` cannot be
installed here. Writes ``benchmarks/results/edgetpu.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "edgetpu.json")


def measure(name: str) -> dict:
    import aa_tflite
    from aa_tflite.targets.edgetpu import export_edgetpu
    from aa_tflite.tflite import memory
    from benchmarks.planning_time import _train

    model, data = _train(name)
    int8 = aa_tflite.export(model, None, representative_data=data["x_cal"]).tflite
    budget = 0.6 * memory.plan_tensors(int8)[0] / 1024
    result = aa_tflite.convert(model, budget_kb=budget, representative_data=data["x_cal"],
                               progress=False, curve_points=0, measure_tflm=False,
                               target="edgetpu")
    with tempfile.TemporaryDirectory() as out:
        done = export_edgetpu(result.tflite, out, name=name)
    (point,) = done.points.values()
    check = point["check"]
    fallback = None if check.first_fallback is None else check.ops[check.first_fallback]
    return {"model": name, "ops": len(check.ops),
            "mapped_before_fallback": (len(check.ops) if check.first_fallback is None
                                       else check.first_fallback),
            "first_fallback": None if fallback is None else {
                "op": fallback[0], "name": fallback[1], "reason": fallback[3]},
            "also_flagged": sorted({f"{n} ({why.split(',')[0]})" for k, n, ok, why in check.ops
                                    if not ok and k != (fallback or (None,))[0]}),
            "problems": list(check.problems), "low_bit_tensors": len(result.report.tensor_bits),
            "compiled": bool(point["compiler_log"])}


def table(rows: list[dict]) -> list[str]:
    out = ["| model | ops | mapped before the first CPU fallback | first fallback | other ops "
           "flagged | low-bit tensors |", "|" + "---|" * 6]
    for r in rows:
        f = r["first_fallback"]
        where = "none: the whole graph maps" if f is None else \
            f"op {f['op']} {f['name']} ({f['reason']})"
        others = "; ".join(r["also_flagged"]) or "-"
        out.append(f"| {r['model']} | {r['ops']} | {r['mapped_before_fallback']} | {where} | "
                   f"{others} | {r['low_bit_tensors']} |")
    return out


def main() -> None:
    sys.path.append(ROOT)
    from absl import logging

    from aa_tflite.files import atomic_write
    from benchmarks.planning_time import MODELS

    logging.set_verbosity(logging.WARNING)
    rows = []
    for name in MODELS:
        rows.append(measure(name))
        print(json.dumps(rows[-1]), flush=True)
    atomic_write(RESULTS, json.dumps(rows, indent=2))
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
