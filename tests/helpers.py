"""What several test modules share: the repository's root, the gates for tools that live
outside the Python environment (skipped here when missing, a failure under CI), the demo's
multi-point settings, and the model edits and checks more than one module uses."""

from __future__ import annotations

import os

import numpy as np
import pytest

__all__ = ["DEMO_BUDGETS", "DIGITS_SITES", "MNIST1D_SITES", "PI_PYTHON", "ROOT", "adversarial",
           "all_low_bit", "assert_runs_in_tflite_micro_like_litert", "calibrated_mini",
           "concat_model", "need", "need_pi_env", "points_kwargs", "raw_outputs"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tflite-runtime needs numpy<2, so it lives in its own virtual environment (`make pi-env`).
PI_PYTHON = os.path.join(ROOT, ".venv-pi", "bin", "python")


def raw_outputs(tflite: bytes, x: np.ndarray, kernels: str) -> np.ndarray:
    """Raw outputs of ``tflite`` for raw inputs ``x``, one sample per invoke: TFLite Micro for
    ``"tflm"``, else LiteRT with ``kernels`` (``"builtin"``, ``"xnnpack"``) on one thread."""
    from aa_tflite.runtime.interpreter import make_interpreter, micro_run

    if kernels == "tflm":
        return micro_run(tflite, x)
    interp = make_interpreter(tflite, kernels, num_threads=1)
    interp.allocate_tensors()
    inp, res = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    out = []
    for i in range(len(x)):
        interp.set_tensor(inp, x[i:i + 1])
        interp.invoke()
        out.append(interp.get_tensor(res).copy())
    return np.concatenate(out)


def need(missing: str) -> None:
    """Skips the test, or fails it under CI (where every tool must be installed), when
    ``missing`` says something is missing; does nothing when it is empty."""
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)


def need_pi_env() -> str:
    """The ``.venv-pi`` interpreter (tflite-runtime 2.14, numpy<2), or a skip (CI: a failure)."""
    need("" if os.path.exists(PI_PYTHON) else
         ".venv-pi is missing; `make pi-env` (or `make test`) creates it")
    return PI_PYTHON


# The demo's three operating points (80/60/40% of the digits model's int8 peak, in KiB).
DEMO_BUDGETS = (2.4, 1.8, 1.2)


def points_kwargs(digits) -> dict:
    """``convert``'s arguments for the digits model's multi-point conversions in the tests."""
    return dict(representative_data=digits.x_cal, progress=False, curve_points=0,
                eval_data=(digits.x_val[:250], digits.y_val[:250]))


DIGITS_SITES = {"conv1_relu": 14, "conv2_relu": 15, "conv3_relu": 17, "fc1_relu": 22}
MNIST1D_SITES = {"conv1_relu": 20, "conv2_relu": 23, "conv3_relu": 30, "fc1_relu": 31}


def all_low_bit(tflite, sites, x, bits: int = 4):
    """Every ReLU site of ``tflite`` written at ``bits`` bits, clip fitted on ``x``: the
    analysis and the edited model."""
    from aa_tflite.lowering import relu
    from aa_tflite.search.calibrate import tensor_values
    from aa_tflite.tflite.analyse import analyse
    from aa_tflite.types import SiteConfig

    graphs = analyse(tflite, sites)
    values = tensor_values(tflite, list(sites.values()), x)
    edits = {s: relu.site_edit(SiteConfig(clip=relu.fit_clip(values[t], bits=bits), bits=bits),
                               graphs[s]) for s, t in sites.items()}
    return graphs, relu.apply_edits(tflite, graphs, edits)


def adversarial(shape, rng):
    """Inputs far outside the calibration range, in int8 terms: extremes, noise, checkerboards."""
    n = (8, *shape)
    out = [np.full(n, 127, np.int8), np.full(n, -128, np.int8),
           rng.randint(-128, 128, size=n).astype(np.int8)]
    board = np.indices(shape).sum(axis=0) % 2
    out.append(np.broadcast_to(np.where(board, 127, -128), n).astype(np.int8))
    return out


def assert_runs_in_tflite_micro_like_litert(tflite, x, n=20):
    """Invokes ``tflite`` in TFLM and LiteRT on ``n`` samples: outputs within one step, same top-1."""
    from tflite_micro import runtime as tflm

    from aa_tflite.runtime.interpreter import load_interpreter, quantize

    litert = load_interpreter(tflite)
    litert.allocate_tensors()
    inp, out = litert.get_input_details()[0], litert.get_output_details()[0]
    micro = tflm.Interpreter.from_bytes(tflite, arena_size=256 * 1024)
    for i in range(n):
        q = quantize(x[i:i + 1], inp)
        litert.set_tensor(inp["index"], q)
        litert.invoke()
        micro.set_input(q, 0)
        micro.invoke()
        a, b = micro.get_output(0).astype(int), litert.get_tensor(out["index"]).astype(int)
        assert np.abs(a - b).max() <= 1  # TFLM's reference kernels round like LiteRT's, +-1
        assert a.argmax() == b.argmax()


def concat_model(third_input_is_a_site: bool = True):
    import keras

    from aa_tflite.frontend.export import export

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(i)
    joined = [a, b]
    if not third_input_is_a_site:  # a signed conv output joins too: no clamp, so no tie
        joined.append(keras.layers.Conv2D(4, 3, padding="same", name="lin")(i))
    x = keras.layers.Concatenate(name="cat")(joined)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(x)
    model = keras.Model(i, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(x)))
    data = np.random.RandomState(0).rand(32, 8, 8, 3).astype(np.float32)
    return export(model, None, representative_data=data), data


def calibrated_mini(name: str, x: np.ndarray):
    """The untrained miniature with its BatchNorm statistics set from ``x`` (one forward pass
    with momentum 0), so every layer sees realistic, non-degenerate activations."""
    import keras

    from converters import mini

    keras.utils.set_random_seed(0)
    model = mini.BUILDERS[name](keras)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(x, training=True)
    return model
