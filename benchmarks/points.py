"""Operating points: one file with three budgets per reference model, switched at run time.

Run ``python -m benchmarks.points`` (about 10 minutes here), ``--resolution`` for the
input-size points (plain int8 at several sizes: the knob stock runtimes pay for), and
``--layouts`` for points that differ in their TFLite Micro layout (MobileNetV2-0.35 at 96x96). For each
reference model it converts once with ``budget_kb`` at 90%, 75% and 60% of the int8 packed
peak, and measures:

* the three-point file against one point's file and against three separate files (target: at
  most 1.2x one point's file, i.e. 1 + 0.1 per extra point), and whether every point's weight
  buffers are the plain int8 conversion's, byte for byte;
* the same points with corrections folded into the int8 kernels (``share_weights=False``, the
  behaviour before weights were shared): that file's ratio and each point's held-out top-1;
* per point: held-out top-1 accuracy, packed peak, TFLM arena, LiteRT latency;
* one switch: the median time of a single-sample run right after switching from another point,
  against a run on the same point (``OperatingPoints``, XNNPACK, 1 thread);
* resident memory (RSS, from ``/proc/self/statm``) after opening the file and after running
  each point for the first time: LiteRT allocates a point's arena on first use, never frees it.

Held-out: points are planned on half of each model's validation split and scored on the other.
Writes ``benchmarks/results/points.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "points.json")
MODELS = ("digits_cnn", "mnist1d_cnn", "mini_resnet", "mini_vgg", "mini_mobilenet",
          "mini_xception", "mini_squeezenet", "mini_mobilenetv2", "dense_vgg")
FRACTIONS = (0.9, 0.75, 0.6)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _switch_ms(points, keys, x1: np.ndarray, rounds: int = 200) -> tuple[float, float]:
    """Median single-sample run time right after a switch, and on the same point (ms)."""
    for k in keys:
        points.run(x1, point=k)
    switched, same = [], []
    for r in range(rounds):
        a, b = keys[r % len(keys)], keys[(r + 1) % len(keys)]
        points.run(x1, point=a)
        t = time.perf_counter()
        points.run(x1, point=b)
        switched.append(time.perf_counter() - t)
        t = time.perf_counter()
        points.run(x1, point=b)
        same.append(time.perf_counter() - t)
    return float(np.median(switched)) * 1000, float(np.median(same)) * 1000


def _train(name: str):
    if name == "dense_vgg":  # a large Dense layer (converters.users)
        from converters.users import train

        return train(name)
    from benchmarks.planning_time import _train as train_reference

    return train_reference(name)


def _kernel_corrections(model, budgets, data, half: int, x_test, y_test) -> dict:
    """The same points with corrections folded into the int8 kernels (``share_weights=False``,
    the previous behaviour): its file ratio and held-out top-1 per point."""
    import aa_tflite
    from aa_tflite.runtime.interpreter import run_model

    result = aa_tflite.convert(model, budget_kb=budgets, representative_data=data["x_cal"],
                               eval_data=(data["x_val"][:half], data["y_val"][:half]),
                               progress=False, curve_points=0, share_weights=False)
    return {"file_bytes": len(result.tflite),
            "ratio_to_one_point": round(len(result.tflite) / len(result.points[0].tflite), 3),
            "held_out_top1": [float(np.mean(run_model(p.tflite, x_test).argmax(1) == y_test))
                              for p in result.points]}


def _shared_weights(result) -> bool:
    """Whether every point's weight buffers are the int8 baseline's, byte for byte."""
    from aa_tflite.tflite.kernel_math import kernel_bytes

    base = kernel_bytes(result.baseline_tflite)
    return all(kernel_bytes(p.tflite) == base for p in result.points)


def measure(name: str) -> dict:
    import aa_tflite
    from aa_tflite.runtime.onthefly import OperatingPoints
    from aa_tflite.tflite import memory

    model, data = _train(name)
    half = len(data["x_val"]) // 2
    x_test, y_test = data["x_val"][half:], data["y_val"][half:]
    int8 = aa_tflite.export(model, None, representative_data=data["x_cal"]).tflite
    peak = memory.plan_tensors(int8)[0]
    budgets = [round(f * peak / 1024, 3) for f in FRACTIONS]
    t = time.perf_counter()
    result = aa_tflite.convert(model, budget_kb=budgets, representative_data=data["x_cal"],
                               eval_data=(data["x_val"][:half], data["y_val"][:half]),
                               progress=False, curve_points=0)
    seconds = time.perf_counter() - t
    kernel = _kernel_corrections(model, budgets, data, half, x_test, y_test)
    rss0 = _rss_kib()
    points = OperatingPoints(result.tflite, num_threads=1)
    rss = [_rss_kib() - rss0]
    rows = []
    for p in result.points:
        acc = float(np.mean(points.run(x_test, point=p.key).argmax(1) == y_test))
        rss.append(_rss_kib() - rss0)
        rows.append({"signature": p.key, "budget_kb": p.budget_kb, "packed": p.packed,
                     "tflm_arena": p.tflm_arena, "held_out_top1": acc,
                     "latency_ms": round(points.latency_ms(p.key), 4)})
    keys = [p.key for p in result.points]
    switch, same = _switch_ms(points, keys, x_test[:1])
    one = len(result.points[0].tflite)
    return {"model": name, "int8_peak": peak, "fractions": list(FRACTIONS),
            "file_bytes": len(result.tflite), "one_point_bytes": one,
            "separate_bytes": sum(len(p.tflite) for p in result.points),
            "ratio_to_one_point": round(len(result.tflite) / one, 3),
            "points": rows, "switch_run_ms": round(switch, 4), "same_point_run_ms": round(same, 4),
            "rss_kib_after_open_and_each_first_run": rss, "convert_seconds": round(seconds, 1),
            "weights_identical_to_int8": _shared_weights(result),
            "kernel_corrections": kernel}


RESOLUTION_RESULTS = os.path.join(ROOT, "benchmarks", "results", "points_resolution.json")


def _mobilenet_v2(size: int = 128):
    from converters.imagenet import calibrate_batchnorm, mobilenet_v2

    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, size=(192, size, size, 3)).astype(np.float32)
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
    model = calibrate_batchnorm(mobilenet_v2(alpha=0.35, input_shape=(size, size, 3)), x[:64])
    return model, x


LAYOUT_RESULTS = os.path.join(ROOT, "benchmarks", "results", "points_layouts.json")


def measure_layouts() -> dict:
    """MobileNetV2-0.35 at 96x96 (random weights, BatchNorm calibrated) with ``memory="tflm"``
    budgets at the arenas of its firmware layouts (plain, channel split, patches): one file whose
    points differ in layout. Per point: the layout, TFLM arena, latency, packed peak, and the
    bytes it adds to the file (the file with it, less the file without it)."""
    import aa_tflite
    from aa_tflite.tflite import multipoint
    from aa_tflite.tflite.firmware import firmware_model
    from aa_tflite.tflite.static_batch import static_batch

    model, x = _mobilenet_v2(96)
    int8 = static_batch(aa_tflite.to_tflite(model, x[:64]))
    arenas = sorted({firmware_model(int8, **kw).arena for kw in (
        {}, {"split": True}, {"patch": True})}, reverse=True)
    t = time.perf_counter()
    result = aa_tflite.convert(model, budget_kb=[a / 1024 for a in arenas], memory="tflm",
                               representative_data=x[:64], eval_data=x[64:128], progress=False,
                               curve_points=0)
    seconds = time.perf_counter() - t
    pairs = [(p.key, p.tflite) for p in result.points]
    sizes = [len(multipoint.combine(pairs[:k])) for k in range(1, len(pairs) + 1)]
    rows = [{"signature": p.key, "layout": p.report.layout, "tflm_arena": p.tflm_arena,
             "packed": p.packed, "latency_ms": p.latency_ms,
             "latency_range_ms": list(p.latency_range_ms), "score": p.score,
             "own_file_bytes": len(p.tflite),
             "adds_bytes": sizes[k] - (sizes[k - 1] if k else 0)}
            for k, p in enumerate(result.points)]
    return {"model": "MobileNetV2-0.35 96x96", "metric": result.report.metric,
            "file_bytes": len(result.tflite), "points": rows,
            "convert_seconds": round(seconds, 1)}


def layouts_table(r: dict) -> list[str]:
    out = ["| point | layout | TFLM arena (B) | packed peak (B) | latency (ms, p10-p90) | "
           f"{r['metric']} | own file (B) | adds to the file (B) |", "|" + "---|" * 8]
    for p in r["points"]:
        lo, hi = p["latency_range_ms"]
        out.append(f"| {p['signature']} | {p['layout']} | {p['tflm_arena']:,} | "
                   f"{p['packed']:,} | {p['latency_ms']:.3f} ({lo:.3f}-{hi:.3f}) | "
                   f"{p['score']:.4f} | {p['own_file_bytes']:,} | {p['adds_bytes']:,} |")
    return out


def measure_resolution(name: str) -> dict:
    """Input-size points at plain int8 (budget above every peak): the knob stock runtimes pay
    for. mini_mobilenet (8x8 digits) at 6, 8 and 12 px with held-out top-1 on resized digits;
    MobileNetV2-0.35 (random weights) at 64, 96 and 128 px for memory, latency and RSS."""
    import aa_tflite
    from aa_tflite.conversion import _resize
    from aa_tflite.runtime.onthefly import OperatingPoints

    if name == "mini_mobilenet":
        from benchmarks.planning_time import _train

        model, data = _train(name)
        sizes, half = [6, 8, 12], len(data["x_val"]) // 2
        cal, ev = data["x_cal"], (data["x_val"][:half], data["y_val"][:half])
        test = (data["x_val"][half:], data["y_val"][half:])
    else:
        model, x = _mobilenet_v2()
        sizes, cal, ev, test = [64, 96, 128], x[:64], x[64:128], None
    t = time.perf_counter()
    result = aa_tflite.convert(model, budget_kb=[1e5], input_sizes=sizes,
                               representative_data=cal, eval_data=ev, progress=False,
                               curve_points=0)
    seconds = time.perf_counter() - t
    rss0 = _rss_kib()
    points = OperatingPoints(result.tflite, num_threads=1)
    rss, rows = [_rss_kib() - rss0], []
    for p in result.points:
        acc = None
        if test is not None:
            out = points.run(_resize(test[0], p.input_size), point=p.key)
            acc = float(np.mean(out.argmax(1) == test[1]))
        else:
            points.run(_resize(x[128:130], p.input_size), point=p.key)
        rss.append(_rss_kib() - rss0)
        rows.append({"signature": p.key, "input_size": p.input_size, "packed": p.packed,
                     "tflm_arena": p.tflm_arena, "held_out_top1": acc,
                     "latency_ms": round(points.latency_ms(p.key), 4)})
    keys = [p.key for p in result.points]
    switch, same = _switch_ms(points, keys[-1:], _resize(
        (test[0] if test is not None else x)[:1], result.points[-1].input_size), rounds=50)
    return {"model": name, "sizes": sizes, "file_bytes": len(result.tflite),
            "one_point_bytes": [len(p.tflite) for p in result.points], "points": rows,
            "rss_kib_after_open_and_each_first_run": rss, "convert_seconds": round(seconds, 1)}


def resolution_table(rows: list[dict]) -> list[str]:
    out = ["| model | point | input | held-out top-1 | packed peak (B) | TFLM arena (B) | "
           "latency (ms) | RSS at first run (KiB) | file (B) |", "|" + "---|" * 9]
    for r in rows:
        rss = r["rss_kib_after_open_and_each_first_run"]
        for k, p in enumerate(r["points"]):
            acc = "-" if p["held_out_top1"] is None else f"{p['held_out_top1']:.3f}"
            out.append(f"| {r['model']} | {p['signature']} | {p['input_size']}x"
                       f"{p['input_size']} | {acc} | {p['packed']:,} | {p['tflm_arena']:,} | "
                       f"{p['latency_ms']:.3f} | +{rss[k + 1] - rss[k]} | "
                       + (f"{r['file_bytes']:,} (one: {r['one_point_bytes'][k]:,})" if k == 0
                          else f"one: {r['one_point_bytes'][k]:,}") + " |")
    return out


def table(rows: list[dict]) -> list[str]:
    """Markdown lines for the README (generated from the JSON, never typed)."""
    out = ["| model | 3-point file (B) | one point (B) | ratio | weights = int8's | points: "
           "held-out top-1 / packed peak (B) | kernel corrections: ratio, top-1 | switch + run / "
           "run (ms) | RSS per first run (KiB) |", "|" + "---|" * 9]
    for r in rows:
        pts = "; ".join(f"{p['signature']} {p['held_out_top1']:.3f} / {p['packed']:,}"
                        for p in r["points"])
        rss = r["rss_kib_after_open_and_each_first_run"]
        steps = ", ".join(f"+{b - a}" for a, b in zip(rss, rss[1:]))
        kc = r.get("kernel_corrections")
        kernel = ("-" if kc is None else f"{kc['ratio_to_one_point']:.2f}x; " + ", ".join(
            f"{a:.3f}" for a in kc["held_out_top1"]))
        same = {True: "yes", False: "no", None: "-"}[r.get("weights_identical_to_int8")]
        out.append(f"| {r['model']} | {r['file_bytes']:,} | {r['one_point_bytes']:,} | "
                   f"{r['ratio_to_one_point']:.2f}x | {same} | {pts} | {kernel} | "
                   f"{r['switch_run_ms']:.3f} / {r['same_point_run_ms']:.3f} | {steps} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--resolution", action="store_true",
                        help="only the input-size points (points_resolution.json)")
    parser.add_argument("--layouts", action="store_true",
                        help="only the TFLM layout points (points_layouts.json)")
    args = parser.parse_args()
    sys.path.append(ROOT)
    from absl import logging

    from aa_tflite.files import atomic_write

    logging.set_verbosity(logging.WARNING)
    if args.layouts:
        row = measure_layouts()
        atomic_write(LAYOUT_RESULTS, json.dumps(row, indent=2))
        print("\n".join(layouts_table(row)))
        return
    if args.resolution:
        rows = [measure_resolution(m) for m in ("mini_mobilenet", "mobilenet_v2_0.35")]
        atomic_write(RESOLUTION_RESULTS, json.dumps(rows, indent=2))
        print("\n".join(resolution_table(rows)))
        return
    old = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            old = {r["model"]: r for r in json.load(f)}
    for name in args.models:
        row = measure(name)
        old[name] = row
        print(json.dumps(row), flush=True)
        atomic_write(RESULTS, json.dumps([old[m] for m in MODELS if m in old], indent=2))
    print("\n".join(table([old[m] for m in MODELS if m in old])))


if __name__ == "__main__":
    main()
