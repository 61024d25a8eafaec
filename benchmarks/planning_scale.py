"""Planning time and peak memory at the size users have: MobileNetV2-1.0 at 224x224 and a
WRN-16-8 with two softmax heads at 64x64 (the age/gender network's shape), random weights with
BatchNorm calibrated.

Run ``python -m benchmarks.planning_scale`` (about 15 minutes here; ``--models mobilenet_v2``
for one). Each model is built and calibrated in one process and saved to a ``.keras`` file; a
second process loads it, as a user loads a trained model, so its peak resident memory
(``ru_maxrss``) is its own and holds nothing of the calibration. It runs one plain int8
conversion (``aa_tflite.to_tflite``) first (its resident memory then is also reported: what the
process holds before ``convert``), then ``aa_tflite.convert`` at 60%
of the int8 packed peak with the default options (the report's curve included), 64 calibration
inputs and 64 for the loss (agreement with float). The inputs are crops of scikit-learn's two
bundled sample photographs (``load_sample_images``), resized. Writes
``benchmarks/results/planning_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "planning_scale.json")
MODELS = ("mobilenet_v2", "wrn_16_8")
FRACTION = 0.6


def photos(n: int, size: int) -> "np.ndarray":  # noqa: F821 (numpy is imported in the child)
    """``n`` crops of scikit-learn's sample photographs (china.jpg, flower.jpg), resized to
    ``size`` x ``size``, scaled to [-1, 1], in a fixed order."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    from aa_tflite.frontend.resize import resize

    images = load_sample_images().images  # two 427x640 RGB photographs
    rng = np.random.RandomState(0)
    crops = []
    for k in range(n):
        img = images[k % 2]
        side = rng.randint(160, 400)
        top, left = rng.randint(0, img.shape[0] - side), rng.randint(0, img.shape[1] - side)
        crops.append(resize(img[None, top:top + side, left:left + side].astype(np.float32),
                            size)[0])
    return np.stack(crops) / 127.5 - 1.0


def wrn_16_8(input_shape=(64, 64, 3)):
    """WRN-16-8 (pre-activation, widths 128/256/512, two blocks per group) with two heads:
    101 age classes and 2 gender classes, on a flattened 16x16x512 map (24.5M parameters)."""
    import keras

    def block(x, width: int, stride: int, name: str):
        y = keras.layers.ReLU(name=f"{name}_r1")(keras.layers.BatchNormalization(name=f"{name}_b1")(x))
        short = x if stride == 1 and x.shape[-1] == width else keras.layers.Conv2D(
            width, 1, strides=stride, use_bias=False, name=f"{name}_short")(y)
        y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                name=f"{name}_c1")(y)
        y = keras.layers.ReLU(name=f"{name}_r2")(keras.layers.BatchNormalization(name=f"{name}_b2")(y))
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
        return keras.layers.Add(name=f"{name}_add")([short, y])

    i = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(i)
    for g, (width, stride) in enumerate(((128, 1), (256, 2), (512, 2))):
        for b in range(2):
            x = block(x, width, stride if b == 0 else 1, f"g{g}b{b}")
    x = keras.layers.ReLU(name="final_relu")(keras.layers.BatchNormalization(name="final_bn")(x))
    # The age/gender network's head: an 8x8 average pool at stride 1 ('same') and a flatten, so
    # each head is a dense layer on 16x16x512 values (13.5M of the 24.5M parameters).
    x = keras.layers.AveragePooling2D(8, strides=1, padding="same", name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    age = keras.layers.Dense(101, activation="softmax", name="age")(x)
    gender = keras.layers.Dense(2, activation="softmax", name="gender")(x)
    return keras.Model(i, [age, gender], name="wrn_16_8")


def _size(name: str) -> int:
    return 224 if name == "mobilenet_v2" else 64


def build(name: str, path: str) -> None:
    """Builds one model, calibrates its BatchNorms on 64 photographs and saves it to ``path``
    (run as its own process by ``main``: the measured process loads the file, as a user loads a
    trained model, and does not hold what calibrating 52 BatchNorms leaves in TensorFlow)."""
    import keras

    from converters.imagenet import calibrate_batchnorm, mobilenet_v2

    keras.utils.set_random_seed(0)  # the same random weights in every run
    make = (lambda: mobilenet_v2(alpha=1.0, input_shape=(224, 224, 3))) \
        if name == "mobilenet_v2" else wrn_16_8
    calibrate_batchnorm(make(), photos(64, _size(name))).save(path)


def _rss_mib() -> int:
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)


def child(name: str, path: str) -> dict:
    """One model, loaded from ``path`` and measured in this process (run as a child by
    ``main``)."""
    import resource
    import time

    import keras

    import aa_tflite

    size = _size(name)
    x = photos(128, size)
    model = keras.models.load_model(path)
    t0 = time.perf_counter()
    int8 = aa_tflite.to_tflite(model, x[:64])
    int8_seconds = time.perf_counter() - t0
    from aa_tflite.tflite import memory

    peak = memory.plan_tensors(int8)[0]
    budget_kb, refused = FRACTION * peak / 1024, None
    before = _rss_mib()  # the model, TensorFlow and one int8 conversion, before convert
    t0 = time.perf_counter()
    try:
        result = aa_tflite.convert(model, budget_kb=budget_kb, representative_data=x[:64],
                                   eval_data=x[64:], progress=False)
    except aa_tflite.BudgetError as e:  # out of reach: time the error, then plan at the floor
        refused = {"fraction": FRACTION, "seconds_to_error": round(time.perf_counter() - t0, 1),
                   "smallest_bytes": e.smallest_bytes}
        budget_kb = e.smallest_bytes / 1024
        t0 = time.perf_counter()
        result = aa_tflite.convert(model, budget_kb=budget_kb, representative_data=x[:64],
                                   eval_data=x[64:], progress=False)
    seconds = time.perf_counter() - t0
    rep = result.report
    return {"model": name, "params": int(model.count_params()), "input": size,
            "budget_fraction": round(budget_kb * 1024 / peak, 3), "refused": refused,
            "int8_conversion_seconds": round(int8_seconds, 1), "convert_seconds": round(seconds, 1),
            "x_int8_conversion": round(seconds / int8_seconds, 1),
            "rss_before_convert_mib": before,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "stages": rep.seconds, "options_measured": rep.options_measured,
            "options_skipped": rep.options_skipped, "int8_peak": peak,
            "planned_packed": rep.planned_memory.packed_peak, "metric": rep.metric,
            "int8_score": rep.int8_score, "planned_score": rep.planned_score}


def table(rows: list[dict]) -> list[str]:
    out = ["| model | params | input | one int8 conversion (s) | budget | convert (s) | x int8 "
           "conversion | RSS before convert (MiB) | peak RSS (MiB) | options measured / "
           "skipped | stages (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items() if k != "total")
        budget = f"{r.get('budget_fraction', FRACTION):.0%} of int8"
        if r.get("refused"):
            budget += (f" (60% refused in {r['refused']['seconds_to_error']:.0f} s: the floor "
                       f"is {r['refused']['smallest_bytes']:,} B)")
        out.append(f"| {r['model']} | {r['params']:,} | {r['input']}x{r['input']} | "
                   f"{r['int8_conversion_seconds']:.1f} | {budget} | {r['convert_seconds']:.1f} | "
                   f"{r['x_int8_conversion']:.1f}x | {r.get('rss_before_convert_mib', 0):,} | "
                   f"{r['peak_rss_mib']:,} | "
                   f"{r['options_measured']} / {r['options_skipped']} | {stages} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--build", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--model-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.append(ROOT)
    if args.build:
        build(args.build, args.model_file)
        return
    if args.child:
        from absl import logging

        logging.set_verbosity(logging.WARNING)
        print(json.dumps(child(args.child, args.model_file)))
        return
    from aa_tflite.files import atomic_write

    old = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            old = {r["model"]: r for r in json.load(f)}
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.keras")
            for stage in ("--build", "--child"):
                done = subprocess.run([sys.executable, "-m", "benchmarks.planning_scale", stage,
                                       name, "--model-file", path],
                                      capture_output=True, text=True, cwd=ROOT,
                                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
                if done.returncode != 0:
                    raise SystemExit(f"{name} ({stage[2:]}) failed:\n{done.stderr[-3000:]}")
        old[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(old[name]), flush=True)
        atomic_write(RESULTS, json.dumps([old[m] for m in MODELS if m in old], indent=2))
    print("\n".join(table([old[m] for m in MODELS if m in old])))


if __name__ == "__main__":
    main()
