"""Regenerates the README's results sections from ``benchmarks/results/*.json``.

Run ``python -m benchmarks.readme`` (``make bench`` does it last). Each section sits between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; nothing between the markers is typed by hand.
"""

from __future__ import annotations

import json
import os
import re

from aa_tflite.files import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _plan_quality() -> list[str]:
    from benchmarks.plan_quality import RESULTS, table

    with open(RESULTS) as f:
        rows = json.load(f)
    lines = table(rows)
    for r in rows:
        if "kl_from_float_int8" in r:
            lines.append("")
            lines.append(f"{r['model']}: output KL from float {r['kl_from_float_int8']:.4f} (int8) "
                         f"and {r['kl_from_float_planned']:.4f} (planned) nats; "
                         f"{_low_bits(r)}; "
                         f"{r['options_measured']} options measured; {len(r['repairs'])} repairs.")
    return lines


def _low_bits(r: dict) -> str:
    if "low_bit_sites" in r:
        per = ", ".join(f"{n} at {b} bits" for b, n in sorted(r["low_bit_sites"].items(),
                                                               key=lambda x: -int(x[0])))
        return f"{sum(r['low_bit_sites'].values())} of {r['sites']} sites below 8 bits ({per})"
    return f"{r['four_bit_sites']} of {r['sites']} sites at 4 bits"


def _planning_time() -> list[str]:
    from benchmarks.planning_time import RESULTS

    with open(RESULTS) as f:
        data = json.load(f)
    before, after = data.get("before", {}), data.get("after", {})
    lines = ["| model | before: time (s) | options | after: time (s) | options | after / before | "
             "one int8 conversion (s) | after / int8 conversion |", "|---|---|---|---|---|---|---|---|"]
    for name, a in after.items():
        b = before.get(name)

        def cell(r):
            if r is None:
                return "- | -"
            return f"{r['seconds']:.1f} | " + ("infeasible" if r.get("infeasible")
                                               else str(r.get("options", "-")))
        ratio = ("-" if b is None else "n/a (before: BudgetError, no plan)"
                 if b.get("infeasible") or a.get("infeasible")
                 else f"{a['seconds'] / b['seconds']:.2f}")
        int8 = (f"{a['int8_conversion_seconds']:.2f} | {a['x_int8_conversion']:.1f}x"
                if "x_int8_conversion" in a else "- | -")
        lines.append(f"| {name} | {cell(b)} | {cell(a)} | {ratio} | {int8} |")
    repeats = sorted({r.get("repeats", 3) for r in after.values()})
    lines += ["", f"Median of {'/'.join(map(str, repeats))} conversions at 60% of each model's "
              "int8 packed peak, on this machine (2 cores), each after one plain int8 "
              "conversion of the same model, then as many int8 conversions back to back. "
              "\"before\" is the package before the bit menu, "
              "tie groups and signed tensors (4-bit ReLU sites only); \"after\" is this version "
              "(`benchmarks/planning_time.py`). \"after / int8 conversion\" is the planning "
              "time as a multiple of one plain int8 conversion of the same model "
              "(`aa_tflite.to_tflite`): of the two medians (alternated, back to back), the quicker, "
              "so the larger multiple. A "
              "row named after a file is a model kept outside the project (`--outside`), fed "
              "smooth random images and scored by agreement with float."]
    return lines


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _curves() -> list[str]:
    from benchmarks.curves import RESULTS

    with open(RESULTS) as f:
        data = json.load(f)
    lines = ["| model | baseline | memory figure | baseline at ≤ 1.5 pts | aa_tflite at ≤ 1.5 pts "
             "| memory reduction at ≤ 1.5 pts loss | aa_tflite time (s) | MCT time (s) | "
             "aa/MCT time |", "|" + "---|" * 9]
    timing = data["timing"]
    for h in data["headline"]:
        t = timing[h["model"]]
        red = "n/a" if h["reduction"] is None else f"**{h['reduction']:.1%}**"
        note = f" ({h['note']})" if h["note"] else ""
        mct_t = "-" if t["mct_seconds"] is None else f"{t['mct_seconds']:.1f}"
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        lines.append(f"| {h['model']} | {h['baseline']}{note} | {h['memory']} | "
                     f"{_pct(h['baseline_fraction'])} | {_pct(h['aa_fraction'])} | {red} | "
                     f"{t['aa_seconds']:.1f} | {mct_t} | {ratio} |")
    lines += ["", "Fractions are of each model's own int8 figure. Accuracy per point, on the "
              "held-out half (top-1; the users' models in their own metric):", "",
              "| model | float | int8 | all 4-bit | MCT int8 (simulated) |", "|---|---|---|---|---|"]
    for r in data["models"]:
        mct = r.get("mct") or {}
        mct_int8 = f"{mct['int8_sim']:.3f}" if "int8_sim" in mct else "-"
        lines.append(f"| {r['model']} | {r['float']:.3f} | {r['int8']['accuracy']:.3f} | "
                     f"{r['all_4bit']['accuracy']:.3f} | {mct_int8} |")
    lines.append("")
    for r in data["models"]:
        lines.append(f"![{r['model']}](benchmarks/results/curves_{r['model']}.png)")
    ran = data.get("last_run")
    if ran and len(ran) < len(data["models"]):
        lines += ["", f"The last run covered {', '.join(ran)} ({data['seconds']:.0f} s, `python -m "
                  f"benchmarks.curves --models {' '.join(ran)}`); the other rows come from the "
                  "earlier full run (the history of `benchmarks/results/curves.json` says "
                  "which)."]
    else:
        lines += ["", f"Whole run: {data['seconds']:.0f} s (`python -m benchmarks.curves`)."]
    return lines


def _fuzz() -> list[str]:
    from benchmarks.fuzz import RESULTS, drift_summary, summary

    with open(RESULTS) as f:
        data = json.load(f)
    results = data["results"]
    lines = [summary(results), ""]
    by_mode: dict[str, dict[str, int]] = {}
    for r in results:
        if "mode" in r:
            row = by_mode.setdefault(r["mode"], {})
            row[r["outcome"]] = row.get(r["outcome"], 0) + 1
    lines.append("By memory mode: " + "; ".join(
        f"`{m}`: " + ", ".join(f"{n} {o}" for o, n in sorted(c.items()))
        for m, c in sorted(by_mode.items())) + ".")
    lines += ["", drift_summary(results)]
    seeds = f"seeds {min(r['seed'] for r in results)}–{max(r['seed'] for r in results)}"
    if data.get("partial"):
        lines += ["", f"A partial run: {len(results)} graphs ({seeds}) of "
                  f"`python -m benchmarks.fuzz --graphs {data['partial']}`, stopped early; "
                  f"{data['workers']} worker processes."]
    else:
        lines += ["", f"{len(results)} graphs ({seeds}) in {data['seconds']:.0f} s with "
                  f"{data['workers']} worker processes (`python -m benchmarks.fuzz --graphs "
                  f"{len(results)}`)."]
    return lines


def _kernels() -> list[str]:
    from benchmarks.kernels import RESULTS, table

    with open(RESULTS) as f:
        rows = json.load(f)
    return [*table(rows), "", f"Held-out halves ({rows[0]['test_samples']} samples for digits); "
            "budget 50% of each model's int8 packed peak (`python -m benchmarks.kernels`)."]


def _points() -> list[str]:
    from benchmarks.points import FRACTIONS, RESOLUTION_RESULTS, RESULTS, resolution_table, table

    with open(RESULTS) as f:
        rows = json.load(f)
    worst = max(rows, key=lambda r: r["ratio_to_one_point"])
    limit = 1 + 0.1 * (len(FRACTIONS) - 1)
    over = [r["model"] for r in rows if r["ratio_to_one_point"] > limit]
    return [*table(rows), "",
            f"Budgets at {', '.join(f'{f:.0%}' for f in FRACTIONS)} of each model's int8 packed "
            "peak, one `convert` call each; top-1 on the held-out half of the validation split "
            "(`python -m benchmarks.points`). Largest ratio: "
            f"{worst['ratio_to_one_point']:.2f}x ({worst['model']}); "
            + (f"above the {limit:.1f}x target: {', '.join(over)}." if over else
               f"every model is within the {limit:.1f}x target (1 + 0.1 per extra point).")
            + " \"weights = int8's\": every point's kernels are the plain int8 conversion's "
            "bytes (`share_weights=True`, the default). \"kernel corrections\" is the same "
            "call with `share_weights=False`, corrections folded into the kernels: its file "
            "ratio and each point's held-out top-1."
            + " \"switch + run\" is one single-sample run right after switching from another "
            "point; \"run\" the same on the point already in use (XNNPACK, 1 thread). RSS is "
            "what the process grew by at each point's first run (LiteRT allocates a point's "
            "arena then and keeps it)."] + _resolution(resolution_table, RESOLUTION_RESULTS)


def _points_layouts() -> list[str]:
    from benchmarks.points import LAYOUT_RESULTS, layouts_table

    if not os.path.exists(LAYOUT_RESULTS):
        return ["(not measured yet: `python -m benchmarks.points --layouts`)"]
    with open(LAYOUT_RESULTS) as f:
        row = json.load(f)
    return [f"{row['model']} (random weights, BatchNorm calibrated), `memory=\"tflm\"` budgets "
            "at the arenas of its firmware layouts, one file (`python -m benchmarks.points "
            f"--layouts`): {row['file_bytes']:,} B in all.", "", *layouts_table(row), "",
            "\"adds to the file\" is the file with the point less the file without it: the first "
            "point carries the weights; a point of another layout adds its ops, tensors and the "
            "weights it does not share (a channel split's weight chunks); a point whose layout "
            "is already in the file adds only its subgraph's tables. Each budget takes the "
            "layout with the least work that fits it, so a budget that both the split and the "
            "patched layout meet gets the split. The score is agreement with the float model "
            "(random weights: no labels)."]


def _planning_scale() -> list[str]:
    from benchmarks.planning_scale import RESULTS, table

    if not os.path.exists(RESULTS):
        return ["(not measured yet: `python -m benchmarks.planning_scale`)"]
    with open(RESULTS) as f:
        rows = json.load(f)
    return [*table(rows), "", "Random weights, BatchNorm calibrated on crops of scikit-learn's "
            "two sample photographs in one process and saved; a second process loads the file, "
            "as a user loads a trained model, and is measured, so peak RSS is its own. \"RSS "
            "before convert\" is what that process holds then: TensorFlow, the model and one "
            "int8 conversion. 64 calibration and 64 loss inputs (agreement with float) "
            "(`python -m benchmarks.planning_scale`). Targets: 10x one int8 conversion and 3 GB "
            "for MobileNetV2-1.0, 15x for the WRN."]


def _resolution(resolution_table, path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = json.load(f)
    return ["", "Input-size points (`python -m benchmarks.points --resolution`), plain int8 at "
            "each size, one file per model: the knob stock runtimes pay for.", "",
            *resolution_table(rows), "",
            "mini_mobilenet was trained on 8x8 digits; its other sizes see the held-out digits "
            "resized (bilinear, antialiased). MobileNetV2-0.35 has random weights, so it shows "
            "memory and latency only."]


def _edgetpu() -> list[str]:
    from benchmarks.edgetpu import RESULTS, table

    with open(RESULTS) as f:
        rows = json.load(f)
    return [*table(rows), "", "Each model planned to 60% of its int8 packed peak with "
            "`target=\"edgetpu\"` and checked as `aa-tflite export --target edgetpu` does "
            "(`python -m benchmarks.edgetpu`); nothing was compiled (no `edgetpu_compiler` "
            "here)."]


def _offline_plan() -> list[str]:
    from benchmarks.offline_plan import RESULTS, table

    with open(RESULTS) as f:
        return table(json.load(f))


def _real_arena() -> list[str]:
    from benchmarks.real_arena import RESULTS, best_line, table

    with open(RESULTS) as f:
        rows = json.load(f)
    return [*table(rows), "", best_line(rows), "", "Arena: the smallest TFLM allocates the file in "
            "(stock kernels); x stock against the converter's own int8 file; latency against it on "
            "LiteRT (XNNPACK, 1 thread); plan: seconds `firmware_model` took "
            "(`python -m benchmarks.real_arena`)."]


def _users() -> list[str]:
    from benchmarks.users import RESULTS, table

    with open(RESULTS) as f:
        return table(json.load(f))


SECTIONS = {"plan_quality": _plan_quality, "curves": _curves, "fuzz": _fuzz,
            "kernels": _kernels, "planning_time": _planning_time, "points": _points,
            "edgetpu": _edgetpu, "offline_plan": _offline_plan,
            "real_arena": _real_arena, "users": _users, "points_layouts": _points_layouts,
            "planning_scale": _planning_scale}


def main() -> None:
    with open(README) as f:
        text = f.read()
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- results:{name} --> section")
        body = "\n".join(make())
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    atomic_write(README, text)
    print(f"Regenerated {', '.join(SECTIONS)} in README.md")


if __name__ == "__main__":
    main()
