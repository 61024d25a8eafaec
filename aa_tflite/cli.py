"""``aa-tflite``: inspect a ``.tflite``, convert a Keras model, run the demo, list and run a
file's operating points, and export a file for a target (``aa_tflite.targets.TARGETS``).

Thin: parse, call the library, print. Without ``--verbose`` no TensorFlow or LiteRT log line
reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging as std_logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["main", "parse_args", "run"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses ``aa-tflite``'s command line (``sys.argv[1:]`` when ``argv`` is None).

    Example:
        >>> parse_args(["points", "out/digits.tflite"]).command
        'points'
    """
    parser = argparse.ArgumentParser(prog="aa-tflite", description=(
        "Fit pretrained Keras ReLU models into memory as int8 TFLite with per-layer thresholds."))
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details, and let TensorFlow's and LiteRT's logs through")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_inspect, _add_convert, _add_demo, _add_points, _add_export, _add_run):
        add(sub)
    return parser.parse_args(argv)


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="ops, tensors and memory figures of a .tflite")
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--no-tflm", action="store_true", help="skip measuring the TFLM arena")


def _add_convert(sub) -> None:
    _add_convert_options(sub.add_parser(
        "convert", help="Keras model + memory budget -> mixed-precision .tflite"))


def _add_convert_options(p: argparse.ArgumentParser) -> None:
    """The ``convert`` subcommand's options."""
    from aa_tflite.precision import LOW_BITS
    from aa_tflite.targets import TARGETS
    from aa_tflite.types import Kernels, MemoryMode

    p.add_argument("model", help="path to a .keras (or legacy .h5/.hdf5) Keras model")
    p.add_argument("--budget-kb", type=_budgets,
                   help="activation memory budget in KiB (1024 B), see --memory; several, "
                        "comma-separated (6,4,3), make one operating point each in one file")
    p.add_argument("--data", required=True,
                   help=".npz with calibration inputs under 'x' (or its only array)")
    p.add_argument("--eval", help=".npz with 'x' and labels 'y': the loss becomes the top-1 drop "
                                  "(without it: disagreement with the float model)")
    p.add_argument("--out", required=True,
                   help="output prefix: writes PREFIX.tflite, .plan.json, .report.json/.md, plots")
    p.add_argument("--memory", choices=[m.value for m in MemoryMode], default=None,
                   help="what the budget counts (default: tflm with --target tflm, else packed)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="fail unless the verified loss is at most this many points")
    p.add_argument("--metric", choices=["top1", "agreement", "relative_mse", "iou"],
                   help="what the loss is measured in (default: top-1 for class vectors, "
                        "relative_mse for other outputs)")
    p.add_argument("--plan", help="plan JSON to write instead of searching (from a .plan.json)")
    p.add_argument("--io", choices=["int8", "float32"], default="int8",
                   help="model input/output type (default int8)")
    p.add_argument("--no-tflm", action="store_true", help="skip measuring the TFLM arena")
    p.add_argument("--kernels", choices=[k.value for k in Kernels], default=None,
                   help="kernels every loss is measured on, as deployed: LiteRT builtin, "
                        "LiteRT with XNNPACK (Android's default), or TFLite Micro (default: "
                        "the --target's, else builtin)")
    p.add_argument("--target", choices=sorted(TARGETS),
                   default=None, help="where the file will run: measure on its kernels")
    p.add_argument("--bits", type=_bit_menu, default=None,
                   help="precisions to offer below 8 bits, comma-separated, from "
                        f"{','.join(map(str, LOW_BITS))} "
                        "(default all; 'none' plans 8 bits only)")
    p.add_argument("--input-sizes", type=_sizes, default=None,
                   help="square input sizes, comma-separated (96,128), for a model that is fully "
                        "convolutional up to a global pooling: one point per size and budget")
    p.add_argument("--kernel-library", default="all", help="with --memory tflm: the TFLM kernel "
                   "library the firmware links (all, reference, cmsis-nn, esp-nn)")
    p.add_argument("--kernel-corrections", action="store_true",
                   help="fold corrections into the int8 kernels (each point stores its own "
                        "copy) instead of keeping the weights of every point shared")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded digits models: points that "
                       "differ in bits, then points that differ in TFLM arena and latency")
    p.add_argument("--out", default="demo_out/digits", help="output prefix (default demo_out/digits)")
    p.add_argument("--budget-fraction", type=_fractions, default=(0.8, 0.6, 0.4),
                   help="budgets as fractions of the int8 packed peak, comma-separated, one "
                        "operating point each (default 0.8,0.6,0.4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_points(sub) -> None:
    p = sub.add_parser("points", help="the operating points of a multi-point .tflite")
    p.add_argument("model", help="path to a .tflite written by convert")


def _add_export(sub) -> None:
    from aa_tflite.targets import TARGETS

    p = sub.add_parser("export", help="write what a target's build needs from a .tflite")
    p.add_argument("model", help="path to a .tflite written by convert")
    p.add_argument("--target", choices=sorted(TARGETS), required=True, help="; ".join(
        f"{name}: {TARGETS[name].description}" for name in sorted(TARGETS)))
    p.add_argument("--samples", help="android, web: .npz with sample inputs 'x' (and labels "
                                     "'y'); default: 16 held-out digits of the embedded "
                                     "model's data")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--name", default=None, help="stem of the files and C names (default: the "
                                                "model file's stem)")
    p.add_argument("--library", default=None,
                   help="tflm: the kernel library the firmware links, for the offline memory "
                        "plan's in-place overlaps: all (default: only overlaps safe for every "
                        "library), reference, cmsis-nn or esp-nn")
    p.add_argument("--split-channels", action="store_true",
                   help="tflm: split expand->depthwise pairs by channels where that lowers the "
                        "arena (exact; more ops, so slower)")
    p.add_argument("--patches", action="store_true", help="tflm: run the first stage in "
                   "patches where that lowers the arena (exact; re-computes halos, so slower)")


def _add_run(sub) -> None:
    from aa_tflite.types import Kernels

    p = sub.add_parser("run", help="run inputs on one operating point of a .tflite")
    p.add_argument("model", help="path to a .tflite written by convert")
    p.add_argument("--point", help="the point's signature key (default: the first point)")
    p.add_argument("--data", required=True, help=".npz with inputs 'x' (and labels 'y')")
    p.add_argument("--kernels", choices=[Kernels.XNNPACK.value, Kernels.BUILTIN.value],
                   default=Kernels.XNNPACK.value,
                   help="LiteRT's default XNNPACK kernels, or its builtin kernels")


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(b) for b in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{what} takes a number or comma-separated numbers such as 6,4,3. Received: "
            f"{text!r}") from e
    return values


def _budgets(text: str) -> float | tuple[float, ...]:
    values = _numbers(text, "--budget-kb")
    return values[0] if len(values) == 1 else values


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--input-sizes takes comma-separated integers such as 96,128. Received: {text!r}"
        ) from e


def _fractions(text: str) -> tuple[float, ...]:
    return _numbers(text, "--budget-fraction")


def _bit_menu(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--bits takes comma-separated bit-widths such as 6,4,2. Received: {text!r}") from e


def _load_npz(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    from aa_tflite.types import AAError

    if not os.path.isfile(path):
        raise AAError(f"{what} file {path!r} does not exist. Pass an .npz written by "
                      "np.savez(path, x=inputs[, y=labels]).")
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = list(d.keys())
            if "x" in keys:
                x = d["x"]
            elif len(keys) == 1:
                x = d[keys[0]]
            else:
                raise AAError(f"{path} holds {keys or 'no arrays'}; name the inputs 'x' (and "
                              "labels 'y'): np.savez(path, x=inputs, y=labels).")
            y = d["y"] if "y" in keys else None
    except AAError:
        raise
    except Exception as e:  # numpy raises several types for a file that is not an .npz
        raise AAError(f"{what} file {path!r} is not a readable .npz ({type(e).__name__}: {e}). "
                      "Write it with np.savez(path, x=inputs[, y=labels]).") from e
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.number):
        raise AAError(f"{path}: the inputs 'x' must be a numeric array. Received dtype "
                      f"{getattr(x, 'dtype', type(x).__name__)}.")
    return np.asarray(x, np.float32), y


def _read_tflite(path: str) -> bytes:
    from aa_tflite.types import AAError

    if not os.path.isfile(path):
        raise AAError(f"Model file {path!r} does not exist.")
    with open(path, "rb") as f:
        return f.read()


def _load_keras(path: str):
    import keras

    from aa_tflite.frontend import layers  # noqa: F401  (registers AAReLU)
    from aa_tflite.types import AAError

    if not os.path.isfile(path):
        raise AAError(f"Model file {path!r} does not exist.")
    if not path.endswith((".keras", ".h5", ".hdf5")):
        raise AAError(f"{path!r}: give a Keras model file, .keras (Keras 3) or .h5/.hdf5 "
                      "(legacy Keras 2). Save one with model.save('model.keras').")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file
        raise AAError(f"Could not load {path} as a Keras model ({type(e).__name__}: "
                      f"{str(e)[:300]}). Save it with model.save('model.keras').") from e


def _inspect(args: argparse.Namespace) -> int:
    from aa_tflite import report

    tflite = _read_tflite(args.model)
    print("\n".join(report.inspect_lines(tflite, name=args.model,
                                         measure_tflm=not args.no_tflm)))
    return 0


def _print_result(result, files) -> None:
    print(result.points_markdown() if len(result.points) > 1 else result.report.to_markdown())
    print("Wrote: " + ", ".join(files))


def _convert(args: argparse.Namespace) -> int:
    from aa_tflite.config import ConvertConfig
    from aa_tflite.conversion import convert
    from aa_tflite.files import check_output_path
    from aa_tflite.types import AAError, Plan

    if args.budget_kb is None and args.plan is None:
        raise AAError("Give --budget-kb N (KiB of activation memory), or --plan FILE.")
    plan = None
    if args.plan:
        if not os.path.isfile(args.plan):
            raise AAError(f"Plan file {args.plan!r} does not exist.")
        with open(args.plan, "rb") as f:
            plan = Plan.from_json(f.read().decode("utf-8", errors="replace"))
    config = ConvertConfig(  # checked before any work
        memory=args.memory, max_accuracy_drop=args.max_accuracy_drop, plan=plan,
        io_dtype=args.io, measure_tflm=not args.no_tflm, progress=not args.no_progress,
        kernels=args.kernels, bits=args.bits, input_sizes=args.input_sizes, target=args.target,
        kernel_library=args.kernel_library, metric=args.metric,
        share_weights=not args.kernel_corrections)
    check_output_path(args.out + ".tflite")  # before the work, not after it
    model = _load_keras(args.model)
    x_cal, _ = _load_npz(args.data, "--data")
    eval_data = None
    if args.eval:
        x_val, y_val = _load_npz(args.eval, "--eval")
        eval_data = x_val if y_val is None else (x_val, y_val)
    result = convert(model, budget_kb=args.budget_kb, representative_data=x_cal,
                     eval_data=eval_data, config=config)
    _print_result(result, result.save(args.out))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aa_tflite.demo import run_demo

    run_demo(args.out, fractions=args.budget_fraction, progress=not args.no_progress)
    return 0


def _points(args: argparse.Namespace) -> int:
    from aa_tflite.runtime.onthefly import OperatingPoints

    points = OperatingPoints(args.model)
    print(_points_table(points))
    return 0


def _points_table(points) -> str:
    rows = ["| point | budget (KiB) | packed peak (B) | packed+sparse (B) | TFLM arena (B) | "
            "low-bit tensors | score | latency here (ms) |", "|---|---|---|---|---|---|---|---|"]
    for p in points.points:
        rows.append(f"| {p.key} | {_figure(p.budget_kb, ',g')} | {_figure(p.packed)} | "
                    f"{_figure(p.packed_sparse)} | {_figure(p.tflm_arena)} | "
                    f"{p.low_bit_tensors:,} | {_figure(p.score, ',.4f')} | "
                    f"{points.latency_ms(p.key):,.3f} |")
    layouts = [f"{p.key}: {p.layout}" for p in points.points if p.layout != "as converted"]
    if layouts:
        rows.append("\nLayouts (the graph TFLite Micro firmware runs): " + "; ".join(layouts))
    metric = next((p.metric for p in points.points if p.metric), None)
    if metric:
        rows.append(f"\nscore: {metric} measured when the file was made; latency: median of "
                    "single-sample runs on this machine. Packed figures are real only on a "
                    "runtime that packs low-bit tensors; stock runtimes allocate the TFLM arena.")
    return "\n".join(rows)


def _figure(value, spec: str = ",") -> str:
    """A figure with thousands separators (``spec``), or ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def _export(args: argparse.Namespace) -> int:
    from aa_tflite.targets import TARGETS
    from aa_tflite.types import AAError

    tflite = _read_tflite(args.model)
    samples = _load_npz(args.samples, "--samples") if args.samples else None
    options = {} if args.library is None else {"library": args.library}
    options.update({k: True for k, flag in (("split", args.split_channels),
                                            ("patch", args.patches)) if flag})
    if options and args.target != "tflm":
        raise AAError("--library, --split-channels and --patches apply to --target tflm only.")
    done = TARGETS[args.target].export(
        tflite, args.out, name=args.name or os.path.splitext(os.path.basename(args.model))[0],
        source=os.path.basename(args.model), samples=samples, **options)
    print("\n".join(done.lines))
    print("Wrote: " + ", ".join(done.files))
    return 0


def _run(args: argparse.Namespace) -> int:
    from aa_tflite.runtime.onthefly import OperatingPoints

    points = OperatingPoints(args.model, kernels=args.kernels)
    key = args.point or points.points[0].key
    x, y = _load_npz(args.data, "--data")
    out = points.run(x, point=key)
    top = out.reshape(len(out), -1).argmax(1)
    print(f"point {key}: {len(x):,} samples; predicted classes: "
          f"{' '.join(map(str, top[:20]))}{' ...' if len(top) > 20 else ''}")
    if y is not None:
        print(f"top-1 accuracy: {np.mean(top == np.asarray(y).reshape(-1)):.4f}")
    print(f"latency: {points.latency_ms(key):,.3f} ms per sample (median, this machine)")
    return 0


def main(args: argparse.Namespace) -> int:
    """Runs a parsed command; returns the process exit code.

    Without ``--verbose``, what TensorFlow and LiteRT log from C++ is hidden for the whole
    command (``quiet.hidden_native_logs``); the command's own output and errors still show.
    """
    from absl import logging

    from aa_tflite.quiet import hidden_native_logs, quiet_native_output
    from aa_tflite.types import AAError

    logging.set_verbosity(logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:  # e.g. Keras' "triggered tf.function retracing" at each input size
        std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    try:
        with contextlib.nullcontext() if args.verbose else hidden_native_logs():
            if args.command in ("convert", "demo", "export"):
                with quiet_native_output():  # TensorFlow's import logs through absl to stderr
                    import keras  # noqa: F401
            return {"inspect": _inspect, "convert": _convert, "demo": _demo, "points": _points,
                    "run": _run, "export": _export}[args.command](args)
    except AAError as e:
        print(f"aa-tflite: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"aa-tflite: error: {e.strerror or e}{where}. Check the path and its permissions.",
              file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so in one line; --verbose shows the traceback
        if args.verbose:
            traceback.print_exc()
        print(f"aa-tflite: internal error: {type(e).__name__}: {str(e)[:500]}\nThis is a bug in "
              "aa_tflite; please report it with the command you ran (rerun with --verbose for "
              "the traceback).", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    verbose = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    # TensorFlow's C++ start-up chatter and Python warnings stay out of the terminal unless asked.
    # TensorFlow reads this once, when it is imported: here, before any import of it.
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        warnings.filterwarnings("ignore")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main(parse_args()))


if __name__ == "__main__":
    run()
