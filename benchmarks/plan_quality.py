"""Plan quality: does ``aa_tflite.convert`` meet a budget of 60% of the int8 packed peak, and at what
accuracy and planning time?

Run ``python -m benchmarks.plan_quality`` (about 2 min for the small models here, plus MobileNetV2
unless ``--skip-mobilenet``). Prints one markdown row per model and writes
``benchmarks/results/plan_quality.json``.

Held-out figures: the labelled data the planner sees (``eval_data``) and the data the accuracy is
reported on are disjoint halves of each model's held-out split. MobileNetV2 has random weights, so
its score is top-1 agreement with the float model (no labels), on inputs the planner did not see.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = os.path.join(os.path.dirname(__file__), "results", "plan_quality.json")
FRACTION = 0.6


def _agreement(tflite: bytes, x: np.ndarray, reference: np.ndarray) -> float:
    from aa_tflite.runtime.interpreter import evaluate

    out = np.asarray(evaluate(tflite, x))
    return float(np.mean(out.reshape(len(out), -1).argmax(1) == reference.reshape(len(x), -1)
                         .argmax(1)))


def _kl(tflite: bytes, x: np.ndarray, reference: np.ndarray) -> float:
    """Mean KL divergence (nats) of the model's softmax from the float model's."""
    from aa_tflite.runtime.interpreter import evaluate
    from aa_tflite.search.bench import kl_divergence

    return kl_divergence(reference, evaluate(tflite, x))


def _row(name: str, model, x_cal, plan_eval, x_test, y_test, *, progress: bool) -> dict:
    import aa_tflite
    from aa_tflite.frontend.export import export
    from aa_tflite.runtime import interpreter as runtime
    from aa_tflite.tflite import memory

    base = export(model, None, representative_data=x_cal).tflite
    int8_peak = memory.plan_tensors(base)[0]
    budget_kb = FRACTION * int8_peak / 1024
    t0 = time.perf_counter()
    result = aa_tflite.convert(model, budget_kb=budget_kb, representative_data=x_cal,
                               eval_data=plan_eval, progress=progress)
    seconds = time.perf_counter() - t0
    reference = np.asarray(model.predict(x_test, verbose=0))
    if y_test is not None:
        metric = "top-1 accuracy (held out)"
        f = float(np.mean(reference.argmax(1) == y_test))
        i8 = runtime.evaluate(base, x_test, y_test)
        planned = runtime.evaluate(result.tflite, x_test, y_test)
    else:
        metric = "top-1 agreement with float (held out)"
        f = 1.0
        i8 = _agreement(base, x_test, reference)
        planned = _agreement(result.tflite, x_test, reference)
    kl = {k: _kl(t, x_test, reference) for k, t in (("int8", base), ("planned", result.tflite))}
    arena = memory.tflm_arena(result.tflite)
    arena_int8 = memory.tflm_arena(base)
    rep = result.report
    return {"model": name, "metric": metric, "test_samples": len(x_test),
            "int8_packed_peak": int8_peak, "budget_bytes": rep.budget_bytes,
            "planned_packed_peak": rep.planned_memory.packed_peak,
            "budget_met": rep.planned_memory.packed_peak <= rep.budget_bytes,
            "tflm_arena_int8": arena_int8.total, "tflm_arena_planned": arena.total,
            "float": f, "int8": i8, "planned": planned, "drop_points": 100 * (i8 - planned),
            "kl_from_float_int8": kl["int8"], "kl_from_float_planned": kl["planned"],
            "planning_seconds": round(seconds, 1), "options_measured": rep.options_measured,
            "four_bit_sites": sum(1 for r in rep.sites if r.bits == 4), "sites": len(rep.sites),
            "low_bit_sites": {str(b): sum(1 for r in rep.sites if r.bits == b)
                              for b in sorted({r.bits for r in rep.sites if r.bits < 8})},
            "repairs": list(rep.repairs)}


def digits(progress: bool) -> dict:
    from aa_tflite.frontend.embedded import load_default

    d = load_default()
    half = len(d.x_val) // 2
    return _row("digits CNN", d.model, d.x_cal, (d.x_val[:half], d.y_val[:half]),
                d.x_val[half:], d.y_val[half:], progress=progress)


def mnist1d(progress: bool) -> dict:
    from converters import mnist1d_cnn

    model, data = mnist1d_cnn.train()
    half = len(data["x_val"]) // 2
    return _row("MNIST-1D CNN", model, data["x_cal"],
                (data["x_val"][:half], data["y_val"][:half]),
                data["x_val"][half:], data["y_val"][half:], progress=progress)


def mobilenet(progress: bool) -> dict:
    from converters.imagenet import calibrate_batchnorm, mobilenet_v2

    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, size=(456, 96, 96, 3)).astype(np.float32)
    # Smooth the noise so the inputs have image-like spatial structure.
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4
    model = calibrate_batchnorm(mobilenet_v2(alpha=0.35, input_shape=(96, 96, 3)), x[:64])
    return _row("MobileNetV2 0.35 96x96 (random weights)", model, x[:128], x[128:256],
                x[256:], None, progress=progress)


def table(rows: list[dict]) -> list[str]:
    """The results as markdown table lines (the README's section is generated from this)."""
    out = ["| model | metric | int8 packed peak (B) | budget (B) | planned peak (B) | TFLM arena "
           "int8 / planned (B) | float | int8 | planned | drop (pts) | planning (s) |",
           "|" + "---|" * 11]
    for r in rows:
        out.append(f"| {r['model']} | {r['metric']} | {r['int8_packed_peak']:,} | "
                   f"{r['budget_bytes']:,} | {r['planned_packed_peak']:,} | "
                   f"{r['tflm_arena_int8']:,} / {r['tflm_arena_planned']:,} | {r['float']:.4f} | "
                   f"{r['int8']:.4f} | {r['planned']:.4f} | {r['drop_points']:.2f} | "
                   f"{r['planning_seconds']} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--only", choices=["digits", "mnist1d", "mobilenet"])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    jobs = {"digits": digits, "mnist1d": mnist1d, "mobilenet": mobilenet}
    if args.only:
        jobs = {args.only: jobs[args.only]}
    elif args.skip_mobilenet:
        jobs.pop("mobilenet")
    rows = [job(not args.no_progress) for job in jobs.values()]
    print("\n".join(table(rows)))
    old = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            old = {r["model"]: r for r in json.load(f)}
    old.update({r["model"]: r for r in rows})
    from aa_tflite.files import atomic_write

    atomic_write(RESULTS, json.dumps(list(old.values()), indent=2))


if __name__ == "__main__":
    main()
