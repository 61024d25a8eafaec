"""Random-graph robustness run: ``convert`` on hundreds of small random Keras 3 graphs.

Run ``python -m benchmarks.fuzz --graphs 500`` (about 0.5-1 s of planning per graph, plus the
checks). Each graph is built from a seed, so a failure is reproduced with ``--seeds N``. The graphs
are Sequential, Functional and nested models with every ReLU form (ReLU layers, ``ReLU(max_value)``,
``Activation("relu"/"relu6")``, fused ``activation="relu"/"relu6"`` in Conv/Dense/Depthwise/
Separable/Conv1D), BatchNorm, pooling and global pooling, residual adds, concatenations,
multiplies and squeeze-and-excitation gates, layers without bias, dead ReLUs and non-ReLU
activations. Each goes through ``convert`` with a random budget, memory mode and label mode.

Outcomes:

* ``ok``: a result that passed every check below;
* ``budget``: a ``BudgetError`` whose advice ("raise budget_kb to at least X"), when followed,
  gives a result that passes every check;
* ``refused``: another documented ``AAError`` (for example a model with no ReLU);
* ``internal``: any other exception (a bug);
* ``check``: a result that failed a check (a bug);
* ``crash`` / ``hang``: the worker process died or did not answer (a bug).

Checks on every result: the user's model is unchanged; a rerun gives the same bytes; the file runs
in LiteRT (builtin kernels, and XNNPACK where the plain int8 model runs there) and in TFLite Micro,
and each runtime's outputs differ from the builtin kernels' by no more than the plain int8
model's do, plus the rounding that one coarser step upstream can move (see ``_allowed_drift``);
every tensor the plan counts at b bits holds at most 2^b levels on real, random and extreme inputs;
an independent layout of the packed figure meets the budget.

Every case runs in a worker process, so a crash or hang is counted, not fatal.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = os.path.join(os.path.dirname(__file__), "results", "fuzz.json")
OUTCOMES = ("ok", "budget", "refused", "internal", "check", "crash", "hang")
BUGS = ("internal", "check", "crash", "hang")


# --- graphs --------------------------------------------------------------------------------------

def random_model(seed: int):
    """A small random Keras 3 model and the arguments ``convert`` gets, from ``seed``."""
    import keras

    rng = np.random.RandomState(seed)
    keras.utils.set_random_seed(seed)
    one_d = rng.rand() < 0.2
    shape = (int(rng.choice([12, 16])), int(rng.choice([1, 2]))) if one_d else \
        (int(rng.choice([6, 8, 10])),) * 2 + (int(rng.choice([1, 3])),)
    L = keras.layers
    conv = L.Conv1D if one_d else L.Conv2D

    def bias_init():
        kind = rng.choice(["zeros", "normal", "dead"], p=[0.3, 0.6, 0.1])
        if kind == "zeros":
            return "zeros"
        if kind == "dead":  # a ReLU that never fires on the data
            return keras.initializers.Constant(-50.0)
        return keras.initializers.RandomNormal(stddev=0.2, seed=int(rng.randint(1 << 30)))

    def act():
        return [None, "relu", "relu", "relu6", "tanh", "sigmoid"][rng.randint(6)]

    def relu_layer():
        k = rng.randint(5)
        if k == 0:
            return L.ReLU()
        if k == 1:
            return L.ReLU(max_value=float(rng.choice([6.0, 3.0, 1.5])))
        if k == 2:
            return L.Activation("relu")
        if k == 3:
            return L.Activation("relu6")
        return L.LeakyReLU(negative_slope=0.1) if rng.rand() < 0.5 else L.Activation("hard_sigmoid")

    def width():
        return int(rng.choice([4, 6, 8]))

    def block(x):
        """One random block on tensor x (Functional)."""
        channels = x.shape[-1]
        spatial = x.shape[1]
        k = rng.randint(12)
        if k <= 2:
            return conv(width(), 3, padding="same", activation=act(),
                        use_bias=bool(rng.rand() < 0.85), bias_initializer=bias_init())(x)
        if k == 3 and not one_d:
            return L.DepthwiseConv2D(3, padding="same", activation=act(),
                                     bias_initializer=bias_init())(x)
        if k == 4 and not one_d:
            return L.SeparableConv2D(width(), 3, padding="same", activation=act())(x)
        if k == 5:
            bn = L.BatchNormalization()
            y = bn(x)
            bn.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels),
                            rng.normal(0, 0.2, channels), rng.uniform(0.5, 2.0, channels)])
            return y
        if k == 6:
            return relu_layer()(x)
        if k == 7 and spatial >= 4:
            pool = (L.MaxPooling1D if one_d else L.MaxPooling2D) if rng.rand() < 0.5 else \
                (L.AveragePooling1D if one_d else L.AveragePooling2D)
            return pool(2)(x)
        if k == 8:  # residual add
            y = conv(channels, 3, padding="same", activation=act(),
                     bias_initializer=bias_init())(x)
            z = L.Add()([x, y])
            return relu_layer()(z) if rng.rand() < 0.6 else z
        if k == 9:  # concatenation
            y = conv(width(), 1, activation=str(rng.choice(["relu", "relu6"])))(x)
            return L.Concatenate()([x, y])
        if k == 10:  # multiply / squeeze-and-excitation gate
            if rng.rand() < 0.5:
                g = (L.GlobalAveragePooling1D if one_d else L.GlobalAveragePooling2D)()(x)
                g = L.Dense(channels, activation="sigmoid")(g)
                g = L.Reshape((1,) * (len(shape) - 1) + (channels,))(g)
                return L.Multiply()([x, g])
            y = conv(channels, 1, activation="sigmoid")(x)
            return L.Multiply()([x, y])
        if k == 11:
            return L.Dropout(0.1)(x) if rng.rand() < 0.5 else \
                (L.ZeroPadding1D(1) if one_d else L.ZeroPadding2D(1))(x)
        return conv(width(), 3, padding="same", activation="relu")(x)

    def head(x, classes):
        k = rng.randint(3)
        if k == 0:
            x = (L.GlobalAveragePooling1D if one_d else L.GlobalAveragePooling2D)()(x)
        elif k == 1:
            x = (L.GlobalMaxPooling1D if one_d else L.GlobalMaxPooling2D)()(x)
        else:
            x = L.Flatten()(x)
        if rng.rand() < 0.5:
            x = L.Dense(int(rng.choice([8, 16])), activation=str(rng.choice(["relu", "relu6"])),
                        use_bias=bool(rng.rand() < 0.8), bias_initializer=bias_init())(x)
            if rng.rand() < 0.3:
                x = relu_layer()(x)
        return L.Dense(classes, use_bias=bool(rng.rand() < 0.8),
                       activation="softmax" if rng.rand() < 0.3 else None)(x)

    classes = int(rng.choice([3, 5, 10]))
    style = rng.choice(["sequential", "functional", "nested"], p=[0.25, 0.5, 0.25])
    if style == "sequential":
        layers = [keras.Input(shape),
                  conv(width(), 3, padding="same", activation="relu", bias_initializer=bias_init())]
        for _ in range(rng.randint(1, 4)):
            k = rng.randint(4)
            if k == 0:
                layers.append(conv(width(), 3, padding="same", activation=act(),
                                   use_bias=bool(rng.rand() < 0.8), bias_initializer=bias_init()))
            elif k == 1:
                layers.append(relu_layer())
            elif k == 2:
                layers.append(L.BatchNormalization())
            else:
                layers.append((L.MaxPooling1D if one_d else L.MaxPooling2D)(2, padding="same"))
        layers += [(L.GlobalMaxPooling1D if one_d else L.GlobalMaxPooling2D)()
                   if rng.rand() < 0.3 else L.Flatten(),
                   L.Dense(classes, use_bias=bool(rng.rand() < 0.8))]
        model = keras.Sequential(layers, name=f"fuzz{seed}")
    else:
        inp = keras.Input(shape)
        x = conv(width(), 3, padding="same", activation=["relu", "relu6", None][rng.randint(3)],
                 bias_initializer=bias_init())(inp)
        for _ in range(rng.randint(1, 4)):
            x = block(x)
        if style == "nested":
            sub_in = keras.Input(tuple(x.shape[1:]))
            y = block(sub_in)
            y = block(y)
            sub = keras.Model(sub_in, y, name="inner") if rng.rand() < 0.5 else \
                keras.Sequential([sub_in, conv(width(), 3, padding="same", activation="relu"),
                                  L.ReLU(max_value=6.0)], name="inner")
            x = sub(x)
        model = keras.Model(inp, head(x, classes), name=f"fuzz{seed}")

    x_all = rng.rand(96, *shape).astype(np.float32) * float(rng.choice([1.0, 4.0]))
    x_cal, x_eval = x_all[:48], x_all[48:]
    labels = rng.choice(["labels", "random_labels", "none", "x_only"])
    if labels == "labels":
        eval_data = (x_eval, np.argmax(np.asarray(model.predict(x_eval, verbose=0)), axis=1))
    elif labels == "random_labels":
        eval_data = (x_eval, rng.randint(classes, size=len(x_eval)))
    elif labels == "x_only":
        eval_data = x_eval
    else:
        eval_data = None
    memory = str(rng.choice(["packed", "packed", "packed+sparse", "tflm"]))
    kwargs = dict(memory=memory, curve_points=int(rng.choice([0, 2])),
                  measure_tflm=bool(rng.rand() < 0.3), progress=False,
                  io_dtype="float32" if rng.rand() < 0.15 else "int8",
                  kernels=str(rng.choice(["builtin", "xnnpack", "tflm"], p=[0.7, 0.15, 0.15])))
    return model, x_cal, eval_data, float(rng.uniform(0.3, 1.1)), kwargs


# --- checks --------------------------------------------------------------------------------------

def _snapshot(model):
    return model.to_json(), [w.copy() for w in model.get_weights()]


def _same_model(a, b) -> bool:
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(
        np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def _raw_inputs(tflite: bytes, x: np.ndarray, rng) -> dict[str, np.ndarray]:
    """Real, random and extreme inputs, in the model's input dtype."""
    from aa_tflite.runtime.interpreter import load_interpreter, quantize

    detail = load_interpreter(tflite).get_input_details()[0]
    shape = tuple(int(d) for d in detail["shape"][1:])
    real = quantize(x[:16], detail)
    if detail["dtype"] == np.float32:
        extreme = np.stack([np.full(shape, v, np.float32) for v in (-50.0, 0.0, 50.0)])
        rand = (rng.randn(8, *shape) * 10).astype(np.float32)
    else:
        extreme = np.stack([np.full(shape, v, np.int8) for v in (-128, 0, 127)])
        rand = rng.randint(-128, 128, size=(8, *shape)).astype(np.int8)
    return {"real": real, "random": rand, "extreme": extreme}


def _independent_peak(tflite: bytes, tensor_bits) -> int:
    """The packed peak checked independently of ``memory.plan_tensors``' arithmetic: every
    tensor's bytes from its shape and bits, lifetimes from the op order, and the greedy layout
    verified to have no two live tensors overlapping."""
    from aa_tflite.tflite import flatbuffer, memory

    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    peak, layout = memory.plan_tensors(tflite, bits=tensor_bits)
    for tm in layout:
        info = tensors[tm.index]
        want = -(-info.elements * tensor_bits.get(tm.index, info.storage_bits) // 8)
        if tm.nbytes != want:
            raise AssertionError(f"tensor {tm.index} counted {tm.nbytes} B, expected {want} B")
    for i, a in enumerate(layout):
        for b in layout[i + 1:]:
            live = not (a.last < b.first or b.last < a.first)
            apart = a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset
            if live and not apart:
                raise AssertionError(f"tensors {a.index} and {b.index} overlap while both live")
    live_sum = max((sum(t.nbytes for t in layout if t.first <= s <= t.last)
                    for s in range(len(ops) + 1)), default=0)
    if not live_sum <= peak:
        raise AssertionError(f"layout peak {peak} below the live bytes {live_sum}")
    return peak


def _allowed_drift(plain: int, narrowest: int) -> int:
    """How far a runtime's outputs may differ from the builtin kernels' on a planned model.

    Runtimes round the int32 accumulator differently (LiteRT builtin and TFLM: double rounding;
    XNNPACK: float, ties to even), so the plain int8 model already differs by ``plain`` steps. A
    tensor held to 2^b levels has a step 2^(8-b) times the int8 one, so the same tie rounded the
    other way moves its consumers that many times further. The bound is the plain model's drift
    scaled by that factor for the plan's narrowest tensor (16 for 4 bits, 64 for 2), and at least
    that factor."""
    return max(plain, 1) * 2 ** (8 - narrowest)


def check_result(result, model_before, model, x_eval, budget, mode, convert_again, rng,
                 measured: dict | None = None) -> list[str]:
    """The checks above, on one result; returns the failures, in words. ``measured`` collects
    the figures behind them (output drift per runtime, levels, bits)."""
    measured = {} if measured is None else measured
    from aa_tflite.runtime import guard
    from aa_tflite.search.calibrate import stored_levels

    fails = []
    if not _same_model(model_before, _snapshot(model)):
        fails.append("the user's model was modified")
    again = convert_again()
    if again.tflite != result.tflite:
        fails.append("a rerun gave different bytes")
    tensor_bits = {int(t): int(b) for t, b in result.report.tensor_bits.items()}
    inputs = _raw_inputs(result.tflite, x_eval, rng)
    if tensor_bits:
        for name, batch in inputs.items():
            for t, seen in stored_levels(result.tflite, sorted(tensor_bits), [batch]).items():
                n = len(seen)
                if n > 2 ** tensor_bits[t]:
                    fails.append(f"tensor {t} counted at {tensor_bits[t]} bits holds {n} levels on "
                                 f"{name} inputs")
    peak = _independent_peak(result.tflite, tensor_bits)
    if peak != result.report.planned_memory.packed_peak:
        fails.append(f"independent packed peak {peak} != reported "
                     f"{result.report.planned_memory.packed_peak}")
    if mode == "packed" and budget is not None and peak > budget:
        fails.append(f"packed peak {peak} over the budget {budget}")
    if mode == "packed+sparse" and result.report.planned_sparse_peak > budget:
        fails.append("packed+sparse peak over the budget")
    x = np.concatenate(list(inputs.values()))
    outs = {}
    for name, tfl in (("plain", result.baseline_tflite), ("planned", result.tflite)):
        for kernels in ("builtin", "xnnpack", "tflm"):
            outs[name, kernels] = guard.probe(tfl, kernels=kernels, inputs=x)
    narrowest = min(tensor_bits.values(), default=8)
    measured["low_bit_tensors"] = len(tensor_bits)
    measured["runs"] = {f"{n}/{k}": v.ok for (n, k), v in outs.items()}
    for kernels in ("builtin", "xnnpack", "tflm"):
        p, q = outs["plain", kernels], outs["planned", kernels]
        if p.ok and not q.ok:
            fails.append(f"planned model fails on {kernels} where the plain one runs: {q.reason}")
    for kernels in ("xnnpack", "tflm"):
        p, q = outs["plain", kernels], outs["planned", kernels]
        pb, qb = outs["plain", "builtin"], outs["planned", "builtin"]
        if not (p.ok and q.ok and pb.ok and qb.ok):
            continue
        plain = int(np.abs(p.outputs.astype(int) - pb.outputs.astype(int)).max()) \
            if p.outputs.dtype != np.float32 else 0
        if q.outputs.dtype == np.float32:
            continue  # float32 io: the int8 comparison is the int8-io models'
        got = int(np.abs(q.outputs.astype(int) - qb.outputs.astype(int)).max())
        measured[f"drift_{kernels}"] = [plain, got]
        if got > _allowed_drift(plain, narrowest):
            fails.append(f"{kernels} differs from builtin by {got} steps on the planned model "
                         f"(plain int8: {plain})")
    return fails


def run_case(seed: int) -> dict:
    """Builds graph ``seed``, converts it and checks the result. Never raises."""
    import aa_tflite
    from aa_tflite.frontend.export import to_tflite
    from aa_tflite.tflite import memory
    from aa_tflite.types import AAError, BudgetError

    t0 = time.perf_counter()
    out = {"seed": seed}
    try:
        model, x_cal, eval_data, fraction, kwargs = random_model(seed)
    except Exception as e:  # a graph Keras itself refuses is not a case
        return {**out, "outcome": "skipped", "message": f"{type(e).__name__}: {e}"}
    x_eval = eval_data[0] if isinstance(eval_data, tuple) else \
        (eval_data if eval_data is not None else x_cal)
    out.update(mode=kwargs["memory"], labels=type(eval_data).__name__, fraction=round(fraction, 3),
               kernels=kwargs["kernels"])
    before = _snapshot(model)
    rng = np.random.RandomState(seed)
    try:
        try:
            peak = memory.plan_tensors(to_tflite(model, x_cal))[0]
        except AAError:
            peak = 1024
        budget_kb = max(fraction * peak / 1024, 0.01)

        def convert(b):
            return aa_tflite.convert(model, budget_kb=b, representative_data=x_cal,
                                     eval_data=eval_data, **kwargs)

        try:
            result = convert(budget_kb)
            out["outcome"] = "ok"
        except BudgetError as e:
            out["message"] = str(e)
            advice = e.smallest_bytes
            if advice is None:
                out["outcome"] = "internal"
                out["message"] = "BudgetError without smallest_bytes: " + str(e)
                return out
            budget_kb = float(np.ceil(advice / 1024 * 100) / 100)
            result = convert(budget_kb)
            out["outcome"] = "budget"
        budget = int(budget_kb * 1024)
        measured: dict = {}
        fails = check_result(result, before, model, x_eval, budget, kwargs["memory"],
                             lambda: convert(budget_kb), rng, measured)
        out.update(measured)
        if fails:
            out["outcome"] = "check"
            out["message"] = "; ".join(fails)
    except AAError as e:
        msg = str(e)
        out["outcome"] = "refused" if len(msg) > 20 else "internal"
        out["message"] = msg
    except Exception as e:
        out["outcome"] = "internal"
        out["message"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()[-3000:]
    finally:
        out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


# --- workers -------------------------------------------------------------------------------------

def _worker() -> None:
    """Reads seeds on stdin, writes one JSON line per case on stdout."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    real_stdout = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the libraries print goes to stderr, not into the protocol
    for line in sys.stdin:
        seed = int(line)
        print(json.dumps(run_case(seed), default=str), file=real_stdout, flush=True)


class _Worker:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fuzz", "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.seed = None
        self.started = 0.0

    def send(self, seed: int) -> None:
        self.seed, self.started = seed, time.monotonic()
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_many(seeds, *, workers: int = 2, timeout: float = 300.0, progress: bool = True,
             journal: str | None = None):
    """Runs every seed in worker processes; a dead worker is a crash, a silent one a hang.
    With ``journal``, each result is appended to that file as one JSON line as it comes."""
    import selectors

    todo = collections.deque(seeds)
    results = []
    pool = [_Worker() for _ in range(min(workers, len(todo)))]
    sel = selectors.DefaultSelector()
    for w in pool:
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        w.send(todo.popleft())
    while any(w.seed is not None for w in pool):
        for key, _ in sel.select(timeout=5.0):
            w = key.data
            line = w.proc.stdout.readline()
            if line:
                res = json.loads(line)
            else:
                res = {"seed": w.seed, "outcome": "crash",
                       "message": f"worker died (exit status {w.proc.wait()})"}
            results.append(res)
            if journal:
                with open(journal, "a") as f:
                    f.write(json.dumps(res, default=str) + "\n")
            if progress:
                print(f"  seed {res['seed']}: {res['outcome']} {res.get('message', '')[:150]}",
                      file=sys.stderr, flush=True)
            if not line:
                sel.unregister(w.proc.stdout)
                w.close()
                pool[pool.index(w)] = w = _Worker()
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            w.seed = None
            if todo:
                w.send(todo.popleft())
        for i, w in enumerate(pool):
            if w.seed is not None and time.monotonic() - w.started > timeout:
                results.append({"seed": w.seed, "outcome": "hang",
                                "message": f"no answer in {timeout:g} s"})
                sel.unregister(w.proc.stdout)
                w.close()
                pool[i] = nw = _Worker()
                sel.register(nw.proc.stdout, selectors.EVENT_READ, nw)
                if todo:
                    nw.send(todo.popleft())
    for w in pool:
        w.close()
    return sorted(results, key=lambda r: r["seed"])


def drift_summary(results) -> str:
    """How far XNNPACK and TFLM outputs were from LiteRT's builtin kernels, in output steps,
    over the results that had int8 outputs: the plain int8 models and the planned ones."""
    parts = []
    for k in ("xnnpack", "tflm"):
        pairs = [r[f"drift_{k}"] for r in results if f"drift_{k}" in r]
        if not pairs:
            continue
        plain = np.array([p for p, _ in pairs])
        planned = np.array([q for _, q in pairs])
        parts.append(f"{k} vs builtin over {len(pairs)} results: plain int8 max {plain.max()} "
                     f"(median {np.median(plain):g}), planned max {planned.max()} (median "
                     f"{np.median(planned):g}); planned within the plain model's own drift in "
                     f"{np.mean(planned <= np.maximum(plain, 1)):.0%} of them")
    return "Output drift: " + ("; ".join(parts) if parts else "no int8-output results") + "."


def summary(results) -> str:
    counts = collections.Counter(r["outcome"] for r in results)
    lines = ["| outcome | graphs |", "|---|---|"]
    lines += [f"| {o} | {counts.get(o, 0)} |" for o in (*OUTCOMES, "skipped") if o in counts or
              o in OUTCOMES]
    lines.append(f"| **total** | {len(results)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=500)
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, nargs="*", help="run exactly these seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    seeds = args.seeds if args.seeds else list(range(args.first, args.first + args.graphs))
    t = time.perf_counter()
    journal = args.out + ".partial.jsonl"
    if os.path.exists(journal):
        os.unlink(journal)
    results = run_many(seeds, workers=args.workers, timeout=args.timeout, journal=journal)
    elapsed = time.perf_counter() - t
    print(summary(results))
    print(f"{len(results)} graphs in {elapsed:.0f} s with {args.workers} workers "
          f"(`python -m benchmarks.fuzz --graphs {len(seeds)}`)")
    print(drift_summary(results))
    bugs = [r for r in results if r["outcome"] in BUGS]
    for r in bugs:
        print(f"- seed {r['seed']}: {r['outcome']}: {r.get('message', '')[:300]}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"seconds": round(elapsed, 1), "workers": args.workers,
                   "counts": collections.Counter(r["outcome"] for r in results),
                   "results": results}, f, indent=1, sort_keys=True, default=str)
    os.unlink(journal)
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
