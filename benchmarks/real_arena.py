"""How far exact graph rewrites cut TensorFlow Lite Micro's real arena (``kTensorArenaSize``),
with stock kernels.

Run ``python -m benchmarks.real_arena`` (about 12 minutes on 2 cores; ``--skip-large`` leaves out
the two 224x224 models, about 5 minutes; ``--skip-mobilenet`` every ImageNet-scale model, about 4
minutes). For the digits CNN, the six miniatures (untrained, BatchNorm statistics set on the
digits), MobileNetV2-0.35 at 96x96, MobileNetV2-1.0 and ResNet-18 at 224x224 (random weights,
BatchNorm calibrated on smooth random images), it converts the model to a stock int8
``.tflite`` (the ``stock`` file, as the converter writes it) and builds four files with
``firmware_model``:

- ``plan``: batch 1 (``static_batch``), a memory-aware op order and an offline memory plan,
  each where it lowers TFLM's arena;
- ``split+plan``: and a channel split of the expand -> depthwise pairs at the peak;
- ``patch+plan``: and patch-based execution of the first stage;
- ``patch+split+plan``: the smaller of patches, a split, or both.

For each: the smallest arena TFLM allocates it in (found by trying) against the stock file's,
TFLM's head, tail and total, the time ``firmware_model`` took, the LiteRT latency against the
stock file (XNNPACK, 1 thread, median of single-sample invokes, rounds alternating between the
files), whether TFLM's outputs in that arena equal the stock file's bit for bit on real and
adversarial inputs, and whether TFLM refuses it 64 B under that arena. A rewrite that fails is
recorded with its error. Writes ``benchmarks/results/real_arena.json``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback

import numpy as np

from aa_tflite.runtime.interpreter import micro_run
from benchmarks.channel_split import _latencies
from benchmarks.offline_plan import _models as _reference_models
from benchmarks.offline_plan import int8_inputs, run_and_save

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "real_arena.json")
# variant -> firmware_model keywords; "stock" is the batch-1 file as converted
VARIANTS = {"plan": {}, "split+plan": {"split": True}, "patch+plan": {"patch": True},
            "patch+split+plan": {"patch": True, "split": True}}
HEAVY_WORK = 10 ** 8  # above this work, latency is measured in fewer, shorter rounds


def _smooth_images(n: int, size: int) -> np.ndarray:
    """``n`` smooth random images (``mobilenet_96``'s recipe), seeded."""
    x = np.random.RandomState(0).uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)
    return (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4


def _imagenet_224(name: str, build) -> tuple[str, bytes, np.ndarray]:
    """``build``'s model at 224x224, BatchNorm calibrated on 32 smooth random images, as int8
    ``.tflite``; and 2 more such images to run it on."""
    import aa_tflite
    from converters.imagenet import calibrate_batchnorm

    x = _smooth_images(34, 224)
    model = calibrate_batchnorm(build(input_shape=(224, 224, 3)), x[:32])
    return name, aa_tflite.to_tflite(model, x[:32]), x[32:]


def _models(skip_mobilenet: bool, skip_large: bool):
    """(name, stock int8 .tflite, float inputs to run) per model."""
    yield from _reference_models(skip_mobilenet)
    if skip_mobilenet or skip_large:
        return
    from converters.imagenet import mobilenet_v2, resnet18

    yield _imagenet_224("MobileNetV2-1.0 224x224", functools.partial(mobilenet_v2, alpha=1.0))
    yield _imagenet_224("ResNet-18 224x224", resnet18)


def _measure(tflite: bytes, arena: int, x: np.ndarray, stock_out: np.ndarray) -> dict:
    """TFLM's figures for ``tflite`` and its outputs in ``arena`` against the stock file's."""
    from aa_tflite.runtime import guard
    from aa_tflite.tflite import flatbuffer, memory
    from aa_tflite.tflite.firmware import work
    from aa_tflite.types import Kernels

    tflm = memory.tflm_arena(tflite)
    out = micro_run(tflite, x, arena_size=arena)
    short = guard.probe(tflite, kernels=Kernels.TFLM, tflm_arena_size=arena - 64)
    return {"smallest_arena": arena, "head": tflm.head, "tail": tflm.tail, "total": tflm.total,
            "ops": len(flatbuffer.describe(flatbuffer.read(tflite))[0]), "work": work(tflite),
            "file_bytes": len(tflite), "tflm_bit_exact": bool(np.array_equal(out, stock_out)),
            "tflm_max_diff_steps": int(np.abs(out.astype(int) - stock_out.astype(int)).max()),
            "fails_64_under": not short.ok}


def _firmware(tflite: bytes, name: str, model: str) -> tuple[object | None, dict]:
    """``firmware_model`` for one variant, timed; or the error it raised."""
    from aa_tflite.tflite.firmware import firmware_model

    t = time.perf_counter()
    try:
        fw = firmware_model(tflite, **VARIANTS[name])
    except Exception:  # noqa: BLE001 - recorded, and the benchmark goes on
        text = traceback.format_exc()
        print(f"  {model} / {name}: firmware_model failed\n{text}", file=sys.stderr, flush=True)
        return None, {"error": text, "plan_seconds": round(time.perf_counter() - t, 2)}
    seconds = time.perf_counter() - t
    print(f"  {model} / {name}: {fw.describe()}; arena {fw.arena:,} B ({seconds:.1f} s)",
          file=sys.stderr, flush=True)
    return fw, {"describe": fw.describe(), "plan_saves": fw.plan_saves,
                "splits": {str(k): v for k, v in fw.splits.items()},
                "patch": None if fw.patch is None else [fw.patch[0], list(fw.patch[1])],
                "plan_seconds": round(seconds, 2)}


def _row(name: str, tflite: bytes, x_float: np.ndarray) -> dict:
    from aa_tflite.tflite import memory

    stock, seconds = tflite, 0.0
    x = int8_inputs(stock, x_float)
    smallest = memory.smallest_arena(stock)
    stock_out = micro_run(stock, x, arena_size=smallest)
    files, variants = {"stock": stock}, {"stock": {"describe": "the converter's int8 file",
                                                   "plan_seconds": round(seconds, 2)}}
    for v in VARIANTS:
        fw, variants[v] = _firmware(tflite, v, name)
        if fw is not None:
            files[v] = fw.tflite
            variants[v]["smallest_arena"] = fw.arena
    for v, tflite_v in files.items():
        arena = variants[v].get("smallest_arena", smallest)
        variants[v].update(_measure(tflite_v, arena, x, stock_out))
    heavy = variants["stock"]["work"] > HEAVY_WORK
    latency = _latencies(files, rounds=3, repeats=10) if heavy else _latencies(files)
    for v, ms in latency.items():
        variants[v].update(latency_ms=round(ms, 4), latency_ratio=round(ms / latency["stock"], 3),
                           x_stock=round(variants[v]["smallest_arena"] / smallest, 4),
                           work_ratio=round(variants[v]["work"] / variants["stock"]["work"], 3))
    for v, tflite_v in files.items():  # a rewrite that changed nothing is the earlier file
        variants[v]["same_file_as"] = next((w for w in files if files[w] == tflite_v), v)
    done = [v for v in files if variants[v]["same_file_as"] == v]
    best = min(done, key=lambda v: (variants[v]["smallest_arena"], variants[v]["latency_ratio"]))
    ran = [v for v in variants if "error" not in variants[v]]
    return {"model": name, "inputs": len(x), "best": best,
            "worse_than_stock": [v for v in ran if variants[v]["smallest_arena"] > smallest],
            "not_bit_exact": [v for v in ran if not variants[v]["tflm_bit_exact"]],
            "errors": [v for v in variants if "error" in variants[v]],
            "variants": variants}


def run(skip_mobilenet: bool = False, skip_large: bool = False) -> list[dict]:
    rows = []
    for name, tflite, x_float in _models(skip_mobilenet, skip_large):
        t = time.perf_counter()
        row = _row(name, tflite, x_float)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print("\n".join(_lines(row)), flush=True)
    return rows


def _lines(r: dict) -> list[str]:
    out = []
    for name, v in r["variants"].items():
        if "error" in v:
            last = v["error"].strip().splitlines()[-1].replace("|", "/")
            out.append(f"| {r['model']} | {name} | error: {last} |" + " - |" * 8)
            continue
        exact = "yes" if v["tflm_bit_exact"] else f"NO ({v['tflm_max_diff_steps']} steps)"
        same = v.get("same_file_as", name)
        rewrites = v["describe"] + (f" (the {same} file)" if same != name else "")
        out.append(f"| {r['model']} | {name} | {v['smallest_arena']:,} | {v['x_stock']:.2f}x | "
                   f"{v['head']:,} | {v['tail']:,} | {v['latency_ratio']:.2f}x | "
                   f"{exact} ({r['inputs']}) | {'yes' if v['fails_64_under'] else 'NO'} | "
                   f"{v['plan_seconds']:.1f} | {rewrites} |")
    return out


def table(rows: list[dict]) -> list[str]:
    """The results as markdown table lines."""
    return ["| model | variant | arena (B) | x stock | TFLM head (B) | tail (B) | LiteRT latency "
            "| TFLM bit-exact (inputs) | fails 64 B under | plan (s) | rewrites |",
            "|" + "---|" * 11, *[line for r in rows for line in _lines(r)]]


def best_line(rows: list[dict]) -> str:
    """One line naming each model's smallest-arena variant (ties: the faster; a rewrite that
    left the file unchanged counts as the earlier variant)."""
    parts = []
    for r in rows:
        v = r["variants"][r["best"]]
        notes = [f"{what}: {', '.join(r[key])}" for key, what in (
            ("worse_than_stock", "larger than stock"), ("not_bit_exact", "NOT bit-exact"),
            ("errors", "failed")) if r.get(key)]
        parts.append(f"{r['model']}: `{r['best']}`, {v['smallest_arena']:,} B "
                     f"({v['x_stock']:.2f}x stock, latency {v['latency_ratio']:.2f}x)"
                     + "".join(f"; {n}" for n in notes))
    return ("Smallest arena per model (ties: lower latency; identical files: the simpler "
            "variant): " + "; ".join(parts) + ".")

def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--skip-large", action="store_true",
                        help="leave out MobileNetV2-1.0 and ResNet-18 at 224x224")
    args, rest = parser.parse_known_args()
    sys.argv[1:] = rest  # run_and_save parses the rest (--skip-mobilenet)
    run_and_save(__doc__, functools.partial(run, skip_large=args.skip_large),
                 lambda rows: [*table(rows), "", best_line(rows)], RESULTS)


if __name__ == "__main__":
    main()
