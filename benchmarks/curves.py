"""Accuracy against activation memory for eight reference models and the four models users have
(``converters/users.py``: two heads, a stroke mask, ReLU then BatchNorm, a large Dense layer, each
scored with its own metric): aa_tflite, its ablations, uniform int8, all-4-bit, and Sony MCT's
mixed-precision PTQ (reference models only), side by side.

Run ``python -m benchmarks.curves`` (``make bench``; about 10 minutes here). Writes
``benchmarks/results/curves.json`` and one ``curves_<model>.png`` per model; ``python -m
benchmarks.readme`` turns them into the README's results section.

Series, each at budgets of 90% ... 30% of the model's own int8 figure:

* **uniform int8**: plain TFLite post-training quantization (the converter's int8 model).
* **all 4-bit**: every site at 4 bits (one point).
* **precision only**: ``convert(memory="packed")``, 8/6/5/4/3/2 bits per site (ReLU outputs, tie
  groups and signed tensors), no thresholds. Under the packed definition thresholds save nothing,
  so this *is* aa_tflite's packed result.
* **thresholds only**: ``convert(memory="packed+sparse", bits=())``.
* **aa_tflite (full)**: ``convert(memory="packed+sparse")``: thresholds and the bit menu.
* **MCT**: ``mct.ptq.keras_post_training_quantization`` with an activation-memory target, the same
  8/6/5/4/3/2-bit activation menu (``benchmarks/mct_runner.py``, in ``.venv-mct``). Its accuracy
  is simulated (its fake-quant Keras model; MCT cannot export 4-bit activations to TFLite) and its
  memory is its own max-cut figure. Memory is therefore compared as a fraction of each tool's own
  int8 figure.

The planner sees the first half of each held-out split; every accuracy here is on the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
RESULTS = os.path.join(RESULTS_DIR, "curves.json")
MCT_PYTHON = os.path.join(ROOT, ".venv-mct", "bin", "python")
FRACTIONS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
REFERENCE_MODELS = ("digits_cnn", "mnist1d_cnn", "mini_resnet", "mini_vgg", "mini_mobilenet",
                    "mini_xception", "mini_squeezenet", "mini_mobilenetv2")
# The models users have (``converters/users.py``): two heads, a stroke mask, ReLU then BatchNorm,
# a large Dense layer. Each is scored with its own metric; MCT does not run on them.
USER_MODELS = ("two_heads", "stroke_segmenter", "relu_bn_cnn", "dense_vgg")
MODELS = (*REFERENCE_MODELS, *USER_MODELS)
BOUND = 1.5  # points of score loss


def _train(name: str):
    if name in USER_MODELS:
        from converters import users
        return users.train(name)
    if name == "digits_cnn":
        from converters import digits_cnn
        return digits_cnn.train()
    if name == "mnist1d_cnn":
        from converters import mnist1d_cnn
        return mnist1d_cnn.train()
    from converters import mini
    return mini.train(name)


class _Scorer:
    """A model's held-out score: top-1 for a reference model, else its own metric over every
    output (``benchmarks.users``: ``converters.users.METRICS``)."""

    def __init__(self, name: str, model, x_test, y_test) -> None:
        self.x, self.y = x_test, y_test
        self.metric, self._scorer = None, None
        if name in USER_MODELS:
            from benchmarks.users import scorer_for
            from converters.users import METRICS

            self.metric, self._scorer = METRICS[name], scorer_for(name, model)

    def tflite(self, tflite: bytes) -> float:
        from aa_tflite.runtime.interpreter import evaluate, run_model
        from benchmarks.users import held_out

        if self._scorer is None:
            return evaluate(tflite, self.x, self.y)
        return held_out(self._scorer, run_model(tflite, self.x, all_outputs=True), self.y)

    def keras(self, model) -> float:
        from benchmarks.users import held_out

        outputs = model.predict(self.x, verbose=0)
        if self._scorer is None:
            return float(np.mean(np.argmax(outputs, 1) == self.y))
        return held_out(self._scorer, outputs, self.y)


def _point(result, score: _Scorer, seconds: float) -> dict:
    rep = result.report
    return {"packed": rep.planned_memory.packed_peak, "sparse": rep.planned_sparse_peak,
            "accuracy": score.tflite(result.tflite), "seconds": round(seconds, 2),
            "four_bit_sites": sum(1 for r in rep.sites if r.bits == 4),
            "bits": {r.site: r.bits for r in rep.sites if r.bits < 8},
            "threshold_sites": sum(1 for r in rep.sites if r.threshold > 0)}


def _ours(name: str, model, data: dict, log) -> dict:
    import aa_tflite
    from aa_tflite.types import Plan, SiteConfig

    half = len(data["x_val"]) // 2
    from benchmarks.users import halves

    y_plan, y_test = halves(data["y_val"], half)
    score = _Scorer(name, model, data["x_val"][half:], y_test)
    kw = dict(representative_data=data["x_cal"], eval_data=(data["x_val"][:half], y_plan),
              progress=False, measure_tflm=False, curve_points=0)
    if score.metric is not None:
        kw["metric"] = score.metric
    # The empty plan: no search, just the int8 model's packed and packed+sparse figures.
    first = aa_tflite.convert(model, budget_kb=None, plan=Plan({}), memory="packed+sparse", **kw)
    packed8, sparse8 = first.report.int8_memory.packed_peak, first.report.int8_sparse_peak
    out = {"metric": first.report.metric,
           "int8": {"packed": packed8, "sparse": sparse8,
                    "accuracy": score.tflite(first.baseline_tflite)},
           "float": score.keras(model)}
    sites = [r.site for r in first.report.sites]
    t0 = time.perf_counter()
    all4 = aa_tflite.convert(model, budget_kb=None, memory="packed",
                             plan=Plan({s: SiteConfig(bits=4) for s in sites}), **kw)
    out["all_4bit"] = _point(all4, score, time.perf_counter() - t0)
    series = {"precision_only": dict(memory="packed", sparsity_points=()),
              "thresholds_only": dict(memory="packed+sparse", bits=()),
              "aa_tflite": dict(memory="packed+sparse")}
    for key, opts in series.items():
        ref = packed8 if opts["memory"] == "packed" else sparse8
        points = []
        for f in FRACTIONS:
            t0 = time.perf_counter()
            try:
                r = aa_tflite.convert(model, budget_kb=f * ref / 1024, **opts, **kw)
            except aa_tflite.BudgetError as e:
                points.append({"fraction": f, "infeasible": True,
                               "smallest": e.smallest_bytes,
                               "seconds": round(time.perf_counter() - t0, 2)})
                continue
            points.append({"fraction": f, **_point(r, score, time.perf_counter() - t0)})
        out[key] = points
        log(f"  {name} {key}: " + ", ".join(
            f"{p['fraction']:.0%}->" + ("x" if p.get("infeasible") else f"{p['accuracy']:.3f}")
            for p in points))
    out["aa_tflite"] += _matched(model, out, kw, score)
    return out


def _matched(model, out: dict, kw: dict, score: _Scorer) -> list[dict]:
    """The full search again at the packed+sparse figure of each narrower series' point within
    BOUND points of int8, so that the full search and the narrower one meet at the same budget
    (the fractions alone rarely land on the same bytes). Marked ``matched``."""
    import aa_tflite

    i8, have = out["int8"], {p.get("sparse") for p in out["aa_tflite"]}
    budgets = sorted({p["sparse"] for k in ("precision_only", "thresholds_only") for p in out[k]
                      if "accuracy" in p and 100 * (i8["accuracy"] - p["accuracy"]) <= BOUND
                      and p["sparse"] < i8["sparse"]} - have)
    points = []
    for nbytes in budgets:
        t0 = time.perf_counter()
        try:
            r = aa_tflite.convert(model, budget_kb=nbytes / 1024, memory="packed+sparse", **kw)
        except aa_tflite.BudgetError as e:
            points.append({"fraction": nbytes / i8["sparse"], "matched": True, "infeasible": True,
                           "smallest": e.smallest_bytes})
            continue
        points.append({"fraction": round(nbytes / i8["sparse"], 4), "matched": True,
                       **_point(r, score, time.perf_counter() - t0)})
    return points


def _mct(name: str, model, data: dict, log) -> dict | None:
    if name in USER_MODELS:
        log(f"  MCT: not run on {name} (the runner scores one top-1 output)")
        return None
    if not os.path.exists(MCT_PYTHON):
        log("  MCT: .venv-mct is missing (make mct-env); MCT series skipped")
        return None
    half = len(data["x_val"]) // 2
    with tempfile.TemporaryDirectory() as tmp:
        weights, arrays = os.path.join(tmp, "w.npz"), os.path.join(tmp, "d.npz")
        np.savez(weights, *model.get_weights())
        np.savez(arrays, x_rep=data["x_cal"], x_test=data["x_val"][half:],
                 y_test=data["y_val"][half:])
        job, out = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
        with open(job, "w") as f:
            json.dump({"model": name, "weights": weights, "data": arrays,
                       "fractions": list(FRACTIONS), "out": out}, f)
        done = subprocess.run([MCT_PYTHON, os.path.join(ROOT, "benchmarks", "mct_runner.py"),
                               job], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"MCT failed on {name}: {done.stderr[-2000:]}")
        with open(out) as f:
            result = json.load(f)
    log(f"  {name} MCT (simulated): " + ", ".join(
        f"{p['fraction']:.0%}->" + (f"{p['accuracy_sim']:.3f}" if "accuracy_sim" in p else "x")
        for p in result["points"]))
    return result


def best_fraction(points, reference: float, accuracy: float, key: str, acc_key: str = "accuracy"
                  ) -> float | None:
    """The smallest memory (as a fraction of ``reference``) among points within BOUND points of
    ``accuracy``, or None."""
    ok = [p[key] / reference for p in points
          if acc_key in p and p.get(key) is not None and 100 * (accuracy - p[acc_key]) <= BOUND]
    return min(ok) if ok else None


def headline(row: dict) -> list[dict]:
    """Memory reduction of aa_tflite at <= BOUND points of loss, against each baseline."""
    i8 = row["int8"]
    acc = i8["accuracy"]
    aa_packed = best_fraction(row["precision_only"], i8["packed"], acc, "packed")
    aa_sparse = best_fraction(row["aa_tflite"], i8["sparse"], acc, "sparse")
    out = []

    def add(baseline: str, axis: str, ours, theirs, note: str = ""):
        red = None if ours is None or theirs is None else 1 - ours / theirs
        out.append({"model": row["model"], "baseline": baseline, "memory": axis,
                    "baseline_fraction": theirs, "aa_fraction": ours, "reduction": red,
                    "note": note})

    add("uniform int8", "packed", aa_packed, 1.0)
    a4 = row["all_4bit"]
    drop4 = 100 * (acc - a4["accuracy"])
    add("all sites 4-bit", "packed", aa_packed,
        a4["packed"] / i8["packed"] if drop4 <= BOUND else None,
        "" if drop4 <= BOUND else f"all-4-bit loses {drop4:.1f} points")
    th = best_fraction(row["thresholds_only"], i8["sparse"], acc, "sparse")
    add("thresholds only", "packed+sparse", aa_sparse, th)
    pr = best_fraction(row["precision_only"], i8["sparse"], acc, "sparse")
    add("precision only", "packed+sparse", aa_sparse, pr)
    mct = row.get("mct")
    if mct:
        pts = [p for p in mct["points"] if "accuracy_sim" in p]
        m = best_fraction(pts, mct["int8_activation_memory"], mct["int8_sim"],
                          "activation_memory", "accuracy_sim")
        add("Sony MCT (simulated)", "own int8 figure", aa_packed, m)
    return out


def timing(row: dict) -> dict:
    """aa_tflite's planning time against MCT's search, at the 60% budget, in the same run."""
    ours = next(p for p in row["precision_only"] if p["fraction"] == 0.6)["seconds"]
    mct = row.get("mct")
    theirs = None
    if mct:
        theirs = next((p["seconds"] for p in mct["points"] if p["fraction"] == 0.6), None)
    return {"aa_seconds": ours, "mct_seconds": theirs,
            "ratio": None if not theirs else ours / theirs}


def plot(row: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    i8 = row["int8"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, axis, ref in ((axes[0], "packed", i8["packed"]), (axes[1], "sparse", i8["sparse"])):
        ax.plot([1.0], [i8["accuracy"]], "s", color="gray", ms=8, label="uniform int8")
        a4 = row["all_4bit"]
        ax.plot([a4[axis] / ref], [a4["accuracy"]], "v", color="black", ms=8, label="all 4-bit")
        keys = (("precision_only", "o"),) if axis == "packed" else (
            ("precision_only", "o"), ("thresholds_only", "^"), ("aa_tflite", "*"))
        for key, marker in keys:
            pts = sorted((p[axis] / ref, p["accuracy"]) for p in row[key]
                         if not p.get("infeasible"))
            if pts:
                ax.plot(*zip(*pts), marker + "-", ms=7, alpha=0.85, label=key.replace("_", " "))
        mct = row.get("mct")
        if mct and axis == "packed":
            pts = sorted((p["activation_memory"] / mct["int8_activation_memory"],
                          p["accuracy_sim"]) for p in mct["points"] if "accuracy_sim" in p)
            if pts:
                ax.plot(*zip(*pts), "x--", color="tab:red",
                        label="Sony MCT (simulated; its own memory figure)")
        ax.axhline(i8["accuracy"] - BOUND / 100, color="gray", ls=":", lw=1,
                   label=f"int8 − {BOUND} points")
        ax.set_xlabel(f"{'packed' if axis == 'packed' else 'packed+sparse'} activation memory, "
                      "fraction of int8")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{row.get('metric', 'top-1 accuracy')} (held out)")
    axes[0].set_title(f"{row['model']}: packed")
    axes[1].set_title(f"{row['model']}: packed+sparse (worst sample)")
    for ax in axes:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    import io

    from aa_tflite.files import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--skip-mct", action="store_true")
    args = parser.parse_args()
    from absl import logging

    logging.set_verbosity(logging.WARNING)

    def log(msg: str) -> None:
        print(msg, flush=True)

    rows = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            rows = {r["model"]: r for r in json.load(f)["models"]}
    t_all = time.perf_counter()
    for name in args.models:
        log(f"{name}: training")
        model, data = _train(name)
        row = {"model": name, **_ours(name, model, data, log)}
        if not args.skip_mct:
            row["mct"] = _mct(name, model, data, log)
        elif rows.get(name, {}).get("mct"):  # MCT's figures do not depend on aa_tflite: keep
            row["mct"] = {**rows[name]["mct"], "from_earlier_run": True}
        plot(row, os.path.join(RESULTS_DIR, f"curves_{name}.png"))
        rows[name] = row
    ordered = [rows[m] for m in MODELS if m in rows]
    summary = {"bound_points": BOUND, "fractions": list(FRACTIONS), "models": ordered,
               "headline": [h for r in ordered for h in headline(r)],
               "timing": {r["model"]: timing(r) for r in ordered},
               "seconds": round(time.perf_counter() - t_all, 1), "last_run": args.models}
    from aa_tflite.files import atomic_write

    atomic_write(RESULTS, json.dumps(summary, indent=2))
    for h in summary["headline"]:
        red = "n/a" if h["reduction"] is None else f"{h['reduction']:.1%}"
        log(f"{h['model']:15s} vs {h['baseline']:22s} ({h['memory']}): {red} {h['note']}")
    log(f"total {summary['seconds']} s")


if __name__ == "__main__":
    main()
