"""Planning time per reference model at 60% of its int8 packed peak, with the default options.

Run ``python -m benchmarks.planning_time --label after`` (about 3 minutes here). To time an older
checkout of the package with the same script (the issue's "within 2x of today's"), put that
checkout first on the path and run this file directly::

    git worktree add /tmp/old <commit>
    mkdir /tmp/oldpkg && ln -s /tmp/old/aa_tflite /tmp/oldpkg/aa_tflite  # that package only
    PYTHONPATH=/tmp/oldpkg .venv/bin/python benchmarks/planning_time.py --label before

Each model is converted once to warm up TensorFlow's converter. Then one plain int8 conversion
of the same model (``aa_tflite.to_tflite``) and one planned conversion are timed in turn,
``--repeats`` times, so that a slower spell of the machine falls on both; then as many int8
conversions back to back. Planning time is reported as a multiple of the quicker of the two
int8 medians (an int8 conversion right after another is quicker than one after a planned
conversion), so the multiple is the larger one. ``--outside
FILE.h5`` adds a Keras model kept outside the project (e.g. the fer package's
``emotion_model.hdf5``), fed smooth random images and scored by agreement with float. Writes
``benchmarks/results/planning_time.json`` (one entry per label).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "planning_time.json")
MODELS = ("digits_cnn", "mnist1d_cnn", "mini_resnet", "mini_vgg", "mini_mobilenet",
          "mini_xception", "mini_squeezenet", "mini_mobilenetv2")
FRACTION = 0.6


def _train(name: str):
    if name == "digits_cnn":
        from converters import digits_cnn
        return digits_cnn.train()
    if name == "mnist1d_cnn":
        from converters import mnist1d_cnn
        return mnist1d_cnn.train()
    from converters import mini
    if name not in mini.BUILDERS:
        return None
    return mini.train(name)


def _outside(path: str):
    """A Keras file kept outside the project, with 64 smooth random calibration images and 128
    unlabelled ones for the loss (agreement with float)."""
    import keras
    import numpy as np

    model = keras.saving.load_model(path, compile=False)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.RandomState(0).uniform(0, 1, size=(192, *shape)).astype(np.float32)
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
    return model, {"x_cal": x[:64], "x_val": x[64:], "y_val": None}


def measure(name: str, repeats: int) -> dict | None:
    import aa_tflite

    trained = _outside(name) if name.endswith((".h5", ".hdf5", ".keras")) else _train(name)
    if trained is None:
        return None
    model, data = trained
    half = len(data["x_val"]) // 2
    labelled = data["y_val"] is not None
    kw = dict(representative_data=data["x_cal"], progress=False, measure_tflm=False,
              eval_data=(data["x_val"][:half], data["y_val"][:half]) if labelled
              else data["x_val"])
    peak = aa_tflite.convert(model, budget_kb=1e6, curve_points=0, **kw)  # also warms up
    budget_kb = FRACTION * peak.report.int8_memory.packed_peak / 1024
    times, int8_times, out = [], [], None
    for _ in range(repeats):  # alternated, so that a slower spell of the machine hits both
        t0 = time.perf_counter()
        aa_tflite.to_tflite(model, data["x_cal"])
        int8_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            out = aa_tflite.convert(model, budget_kb=budget_kb, **kw)
        except aa_tflite.BudgetError as e:
            out = e
        times.append(time.perf_counter() - t0)
    in_a_row = []  # and back to back, as before: a conversion after a conversion is quicker
    for _ in range(repeats):
        t0 = time.perf_counter()
        aa_tflite.to_tflite(model, data["x_cal"])
        in_a_row.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    alternated, back_to_back = statistics.median(int8_times), statistics.median(in_a_row)
    int8_seconds = min(alternated, back_to_back)  # the quicker: the larger multiple
    row = {"seconds": round(seconds, 2), "budget_kb": round(budget_kb, 3), "repeats": repeats,
           "int8_conversion_seconds": round(int8_seconds, 2),
           "int8_alternated_seconds": round(alternated, 2),
           "int8_back_to_back_seconds": round(back_to_back, 2),
           "x_int8_conversion": round(seconds / int8_seconds, 2)}
    if isinstance(out, aa_tflite.BudgetError):
        row.update(infeasible=True, smallest=out.smallest_bytes)
    else:
        rep = out.report
        row.update(options=rep.options_measured, packed=rep.planned_memory.packed_peak,
                   int8=rep.int8_memory.packed_peak,
                   stages={k: v for k, v in rep.seconds.items() if k != "total"})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--outside", nargs="*", default=[],
                        help="Keras files kept outside the project to time as well")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.append(ROOT)  # the converters; aa_tflite comes from PYTHONPATH first, if given
    from absl import logging

    import aa_tflite

    logging.set_verbosity(logging.WARNING)
    print(f"aa_tflite from {os.path.dirname(aa_tflite.__file__)}", flush=True)
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    rows = results.setdefault(args.label, {})
    for name in [*args.models, *args.outside]:
        row = measure(name, args.repeats)
        if row is None:
            print(f"{name}: not in this checkout's recipes", flush=True)
            continue
        rows[os.path.basename(name)] = row
        print(f"{name}: {row}", flush=True)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
