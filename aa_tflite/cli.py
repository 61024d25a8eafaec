"""``aa-tflite``: inspect a ``.tflite``, convert a Keras model, or run the demo.

Thin: parse, call the library, print.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main", "parse_args", "run"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aa-tflite", description=(
        "Fit pretrained Keras ReLU models into memory as int8 TFLite with per-layer thresholds."))
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="ops, tensors and memory figures of a .tflite")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--no-tflm", action="store_true", help="skip measuring the TFLM arena")

    p = sub.add_parser("convert", help="Keras model -> int8 .tflite with thresholds")
    p.add_argument("model", help="path to a .keras model")
    p.add_argument("--data", required=True,
                   help=".npz with calibration inputs under 'x' (or its only array)")
    p.add_argument("--eval", help=".npz with held-out 'x' and labels 'y' to report accuracy")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--plan", help="plan JSON (per-site thresholds) to apply")
    p.add_argument("--sparsity-points", type=float, default=0.0,
                   help="without --plan: at every site, the threshold that adds this many points "
                        "of sparsity on the calibration data (0 = plain int8)")
    p.add_argument("--lowering", choices=["shift", "exact"], default=None,
                   help="threshold lowering (default: the plan's, else shift: no run-time cost)")
    p.add_argument("--io", choices=["int8", "float32"], default="int8",
                   help="model input/output type (default int8)")

    p = sub.add_parser("demo", help="the main job on the embedded digits model")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--sparsity-points", type=float, default=10.0,
                   help="threshold level: points of sparsity added at every site (default 10)")
    return parser.parse_args(argv)


def _load_npz(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    from aa_tflite.types import AAError

    if not os.path.exists(path):
        raise AAError(f"{what} file {path!r} does not exist.")
    with np.load(path) as d:
        keys = list(d.keys())
        if "x" in keys:
            x = d["x"]
        elif len(keys) == 1:
            x = d[keys[0]]
        else:
            raise AAError(f"{path} holds {keys}; name the inputs 'x' (and labels 'y').")
        y = d["y"] if "y" in keys else None
    return np.asarray(x, np.float32), y


def _inspect(args: argparse.Namespace) -> int:
    from aa_tflite import flatbuffer, memory, report

    with open(args.model, "rb") as f:
        tflite = f.read()
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    print(f"{args.model}: {len(ops)} ops")
    for op in ops:
        act = f" +{op.fused_activation}" if op.fused_activation not in (None, "NONE") else ""
        print(f"  {op.index:3d} {op.name}{act}  {list(op.inputs)} -> {list(op.outputs)}")
    _, layout = memory.plan_tensors(tflite)
    print("\n".join(report.tensor_table(layout)))
    print("\n".join(report.memory_lines(
        memory.memory_report(tflite, measure_tflm=not args.no_tflm))))
    print(report.MEMORY_NOTE)
    return 0


def _convert_job(model, x_cal: np.ndarray, *, out: str, name: str, plan=None,
                 sparsity_points: float = 0.0, lowering: str | None = None,
                 io_dtype: str = "int8", x_val: np.ndarray | None = None,
                 y_val: np.ndarray | None = None) -> dict:
    """Exports baseline and thresholded models, measures them, writes the files, returns the
    report dict."""
    from aa_tflite import calibrate, memory, report, runtime
    from aa_tflite.exporter import export
    from aa_tflite.files import atomic_write
    from aa_tflite.types import Plan, SiteConfig

    t0 = time.time()
    base = export(model, representative_data=x_cal, io_dtype=io_dtype)
    stats = calibrate.site_statistics(base.tflite, base.site_tensors, x_cal)
    if plan is None:
        sites = {}
        if sparsity_points > 0:
            sites = {s: SiteConfig(threshold=calibrate.thresholds_for_sparsity(
                st, [sparsity_points])[0]) for s, st in stats.items()}
        plan = Plan(sites, lowering=lowering or "shift")
    if any(cfg.threshold > 0 for cfg in plan.sites.values()):
        out_model = export(model, plan, representative_data=x_cal, io_dtype=io_dtype,
                           lowering=lowering)
    else:  # the identity plan: the baseline is already that model
        out_model = base
    x_measure = x_val if x_val is not None else x_cal
    tensors = {s: t for s, t in out_model.site_tensors.items() if t is not None}
    values = calibrate.tensor_values(out_model.tflite, sorted(set(tensors.values())), x_measure)
    _, layout = memory.plan_tensors(out_model.tflite)
    nbytes = {t.index: t.nbytes for t in layout}
    rows = [{"site": s.name, "threshold": plan.get(s.name).threshold,
             "clip": plan.get(s.name).clip or s.native_clip, "bits": int(plan.get(s.name).bits),
             "sparsity": float(np.mean(values[tensors[s.name]] == 0))
             if s.name in tensors else None,
             "bytes": nbytes.get(tensors.get(s.name, -1))} for s in out_model.sites]
    mem_base = memory.memory_report(base.tflite)
    mem_out = memory.memory_report(out_model.tflite)
    result = {"model": name, "lowering": plan.lowering.value, "seconds": None,
              "memory_int8_baseline": mem_base.to_dict(), "memory": mem_out.to_dict(),
              "sites": rows, "accuracy": {}}
    if x_val is not None and y_val is not None:
        float_pred = np.argmax(np.asarray(model.predict(x_val, verbose=0)), axis=1)
        result["accuracy"] = {"float": float(np.mean(float_pred == y_val)),
                              "int8": runtime.evaluate(base.tflite, x_val, y_val),
                              "thresholded": runtime.evaluate(out_model.tflite, x_val, y_val)}
    result["seconds"] = round(time.time() - t0, 2)
    md = [f"# aa_tflite report: {name}", "",
          f"Lowering: {plan.lowering.value}. Time: {result['seconds']} s.", ""]
    if result["accuracy"]:
        a = result["accuracy"]
        md += [f"Top-1 on held-out data: float {a['float']:.4f}, int8 {a['int8']:.4f}, "
               f"thresholded {a['thresholded']:.4f}", ""]
    md += ["## Memory (this model)", "", "```", *report.memory_lines(mem_out), "```", "",
           "## Memory (plain int8 baseline)", "", "```", *report.memory_lines(mem_base), "```",
           "", report.MEMORY_NOTE, "", "## Sites", "", *report.site_table(rows), ""]
    prefix = os.path.join(out, name)
    atomic_write(prefix + ".tflite", out_model.tflite)
    atomic_write(prefix + ".plan.json", plan.to_json())
    atomic_write(prefix + ".report.json", json.dumps(result, indent=2, sort_keys=True))
    atomic_write(prefix + ".report.md", "\n".join(md))
    result["markdown"] = "\n".join(md)
    result["files"] = [prefix + ext for ext in (".tflite", ".plan.json", ".report.json",
                                                 ".report.md")]
    return result


def _convert(args: argparse.Namespace) -> int:
    import keras

    from aa_tflite import layers  # noqa: F401  (registers AAReLU)
    from aa_tflite.types import AAError, Plan

    if not os.path.exists(args.model):
        raise AAError(f"Model file {args.model!r} does not exist.")
    try:
        model = keras.saving.load_model(args.model)
    except Exception as e:  # Keras raises many types for a bad file
        raise AAError(f"Could not load {args.model} as a Keras model: {e}. Save it with "
                      "model.save('model.keras').") from e
    x_cal, _ = _load_npz(args.data, "--data")
    x_val = y_val = None
    if args.eval:
        x_val, y_val = _load_npz(args.eval, "--eval")
    plan = None
    if args.plan:
        with open(args.plan) as f:
            plan = Plan.from_json(f.read())
    name = os.path.splitext(os.path.basename(args.model))[0]
    result = _convert_job(model, x_cal, out=args.out, name=name, plan=plan,
                          sparsity_points=args.sparsity_points, lowering=args.lowering,
                          io_dtype=args.io, x_val=x_val, y_val=y_val)
    print(result["markdown"])
    print("Wrote: " + ", ".join(result["files"]))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aa_tflite.embedded import load_default

    model, x_cal, x_val, y_val = load_default()
    print(f"Embedded model: {model.name}, {model.count_params():,} parameters, input "
          f"{tuple(model.inputs[0].shape[1:])}; {len(x_cal)} calibration and {len(x_val)} "
          f"held-out samples (scikit-learn digits).\n")
    result = _convert_job(model, x_cal, out=args.out, name="digits",
                          sparsity_points=args.sparsity_points, x_val=x_val, y_val=y_val)
    print(result["markdown"])
    print("Wrote: " + ", ".join(result["files"]))
    return 0


def main(args: argparse.Namespace) -> int:
    """Runs a parsed command; returns the process exit code."""
    from absl import logging

    from aa_tflite.types import AAError

    logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
    try:
        return {"inspect": _inspect, "convert": _convert, "demo": _demo}[args.command](args)
    except (AAError, OSError) as e:
        print(f"aa-tflite: error: {e}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    sys.exit(main(parse_args()))


if __name__ == "__main__":
    run()
