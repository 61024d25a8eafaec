"""Plans measured on one runtime's kernels, deployed on each runtime's: does it matter?

Run ``python -m benchmarks.kernels`` (about 2 min). For the digits CNN, the MNIST-1D CNN and the
mini MobileNet, it plans to 50% of the int8 packed peak (every site must go to 4 bits or close)
three times, measuring losses on LiteRT's builtin kernels, on LiteRT with XNNPACK, and on TFLite
Micro (``convert(kernels=...)``). Each plan is then scored on held-out data on all three runtimes,
with the plain int8 model beside it, and the largest output difference between runtimes is shown
in output steps. Writes ``benchmarks/results/kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from aa_tflite.types import Kernels  # noqa: E402  (after the log level is set)

RESULTS = os.path.join(os.path.dirname(__file__), "results", "kernels.json")
KERNELS = tuple(k.value for k in Kernels)
FRACTION = 0.5


def _models():
    from aa_tflite.frontend.embedded import load_default
    from converters import mini, mnist1d_cnn

    d = load_default()
    half = len(d.x_val) // 2
    yield "digits CNN", d.model, d.x_cal, d.x_val[:half], d.y_val[:half], d.x_val[half:], \
        d.y_val[half:]
    model, data = mnist1d_cnn.train()
    half = len(data["x_val"]) // 2
    yield "MNIST-1D CNN", model, data["x_cal"], data["x_val"][:half], data["y_val"][:half], \
        data["x_val"][half:], data["y_val"][half:]
    model, data = mini.train("mini_mobilenet")
    half = len(data["x_val"]) // 2
    yield "mini MobileNet", model, data["x_cal"], data["x_val"][:half], data["y_val"][:half], \
        data["x_val"][half:], data["y_val"][half:]


def _steps(a: np.ndarray, b: np.ndarray, scale: float) -> int:
    return int(np.round(np.abs(a - b).max() / scale))


def run() -> list[dict]:
    import aa_tflite
    from aa_tflite.runtime.interpreter import evaluate, load_interpreter, run_model
    from aa_tflite.tflite import memory

    rows = []
    for name, model, x_cal, x_plan, y_plan, x_test, y_test in _models():
        base = aa_tflite.to_tflite(model, x_cal)
        budget_kb = FRACTION * memory.plan_tensors(base)[0] / 1024
        files = {"plain int8": base}
        for k in KERNELS:
            files[f"planned on {k}"] = aa_tflite.convert(
                model, budget_kb=budget_kb, representative_data=x_cal,
                eval_data=(x_plan, y_plan), progress=False, measure_tflm=False, curve_points=0,
                kernels=k).tflite
        for label, tflite in files.items():
            scale = load_interpreter(tflite).get_output_details()[0]["quantization"][0] or 1.0
            outs = {k: run_model(tflite, x_test, kernels=k) for k in KERNELS}
            rows.append({
                "model": name, "file": label,
                **{f"top1_{k}": evaluate(tflite, x_test, y_test, kernels=k) for k in KERNELS},
                "steps_xnnpack": _steps(outs["xnnpack"], outs["builtin"], scale),
                "steps_tflm": _steps(outs["tflm"], outs["builtin"], scale),
                "test_samples": len(x_test)})
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    return (f"| {r['model']} | {r['file']} | {r['top1_builtin']:.4f} | {r['top1_xnnpack']:.4f} | "
            f"{r['top1_tflm']:.4f} | {r['steps_xnnpack']} | {r['steps_tflm']} |")


def table(rows: list[dict]) -> list[str]:
    return ["| model | file | top-1 builtin | top-1 XNNPACK | top-1 TFLM | max output diff "
            "XNNPACK vs builtin (steps) | TFLM vs builtin (steps) |", "|" + "---|" * 7,
            *[_line(r) for r in rows]]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    rows = run()
    print("\n".join(table(rows)))
    from aa_tflite.files import atomic_write

    atomic_write(RESULTS, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
