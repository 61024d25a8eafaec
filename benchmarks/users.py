"""The models users have (``converters/users.py``): two outputs, a dense prediction, ReLU then
BatchNorm. Each is trained on the digits, planned at 80%, 70% and 60% of its int8 packed peak with
the metric that fits it, and scored on held-out data.

Run ``python -m benchmarks.users`` (a few minutes). The planner sees the first half of the
held-out split; every score here is on the second half, with the model's metric
(``converters.users.METRICS``: top-1 per head averaged, IoU of the stroke mask, top-1). Planning
time is also given as a multiple of one plain int8 conversion of the same model, measured in the
same run. Writes ``benchmarks/results/users.json``.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "users.json")
FRACTIONS = (0.8, 0.7, 0.6)


def halves(y, half: int):
    if isinstance(y, list):
        return [v[:half] for v in y], [v[half:] for v in y]
    return y[:half], y[half:]


def scorer_for(name: str, model):
    from aa_tflite.metrics import make_scorer
    from converters.users import METRICS

    shapes = [tuple(int(d) for d in o.shape[1:]) for o in model.outputs]
    return make_scorer(METRICS[name], None, shapes=shapes, labelled=[True] * len(shapes))


def held_out(scorer, outputs, y) -> float:
    outs = outputs if isinstance(outputs, list) else [outputs]
    return round(scorer.score(outs, None, y if isinstance(y, list) else [y]), 4)


def run_model_rows() -> list[dict]:
    import aa_tflite
    from aa_tflite.runtime.interpreter import run_model
    from aa_tflite.types import Plan
    from converters.users import BUILDERS, METRICS, train

    rows = []
    for name in BUILDERS:
        model, data = train(name)
        half = len(data["x_val"]) // 2
        y_plan, y_test = halves(data["y_val"], half)
        x_plan, x_test = data["x_val"][:half], data["x_val"][half:]
        scorer = scorer_for(name, model)
        t0 = time.perf_counter()
        aa_tflite.to_tflite(model, data["x_cal"])
        int8_seconds = time.perf_counter() - t0
        kw = dict(representative_data=data["x_cal"], eval_data=(x_plan, y_plan),
                  metric=METRICS[name], progress=False, curve_points=0, memory="packed")
        first = aa_tflite.convert(model, budget_kb=None, plan=Plan({}), **kw)
        peak = first.report.int8_memory.packed_peak
        row = {"model": name, "metric": first.report.metric, "int8_peak": peak,
               "float": held_out(scorer, model.predict(x_test, verbose=0), y_test),
               "int8": held_out(scorer, run_model(first.baseline_tflite, x_test,
                                                    all_outputs=True), y_test),
               "int8_conversion_seconds": round(int8_seconds, 2),
               "notes": [n for n in first.report.notes if "BatchNorm" in n or "Output" in n],
               "points": []}
        for f in FRACTIONS:
            t0 = time.perf_counter()
            try:
                r = aa_tflite.convert(model, budget_kb=f * peak / 1024, **kw)
            except aa_tflite.BudgetError as e:
                row["points"].append({"fraction": f, "infeasible": True,
                                      "smallest": e.smallest_bytes})
                continue
            seconds = time.perf_counter() - t0
            row["points"].append({
                "fraction": f, "packed": r.report.planned_memory.packed_peak,
                "score": held_out(scorer, run_model(r.tflite, x_test, all_outputs=True),
                                   y_test),
                "seconds": round(seconds, 2), "x_int8_conversion": round(seconds / int8_seconds,
                                                                          1),
                "low_bit_sites": sum(1 for s in r.report.sites if s.bits < 8)})
        rows.append(row)
        print("\n".join(_lines(row)), flush=True)
    return rows


def _lines(r: dict) -> list[str]:
    out = []
    for p in r["points"]:
        if p.get("infeasible"):
            cells = f"not reachable (smallest {p['smallest']:,} B) | - | - | - |"
        else:
            cells = (f"{p['packed']:,} B | {p['score']:.4f} | {100 * (r['int8'] - p['score']):+.2f}"
                     f" | {p['seconds']:.1f} s ({p['x_int8_conversion']:.1f}x) |")
        out.append(f"| {r['model']} | {r['metric']} | {r['float']:.4f} | {r['int8']:.4f} | "
                   f"{p['fraction']:.0%} of {r['int8_peak']:,} B | {cells}")
    return out


def table(rows: list[dict]) -> list[str]:
    """The README's table."""
    return ["| model | metric | float | int8 | budget | planned packed peak | planned score | "
            "drop vs int8 (pts) | planning (x one int8 conversion) |",
            "|---|---|---|---|---|---|---|---|---|", *[line for r in rows for line in _lines(r)]]


def main() -> None:
    rows = run_model_rows()
    with open(RESULTS, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
