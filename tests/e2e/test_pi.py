"""The produced .tflite runs unchanged on tflite-runtime (what Raspberry Pi / Coral users have).

tflite-runtime needs numpy<2, so it lives in its own virtual environment, ``.venv-pi``, which
``make test`` creates. Under CI a missing environment is a failure, not a skip.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from aa_tflite.runtime import interpreter as runtime
from aa_tflite.runtime.interpreter import load_interpreter
from tests.conftest import FIXTURES
from tests.helpers import PI_PYTHON, ROOT, need_pi_env

_SCRIPT = """
import json, sys
import numpy as np
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.runtime.interpreter import load_interpreter
with open(sys.argv[1], "rb") as f:
    tflite = f.read()
x = np.load(sys.argv[2])["x"]
print(json.dumps({"backend": runtime.interpreter_backend(), "numpy": np.__version__,
                  "out": runtime.evaluate(tflite, x).tolist()}))
"""


@pytest.mark.pi
@pytest.mark.parametrize("variant", ["int8", "four_bit"])
def test_tflite_runtime_gives_the_same_outputs_as_litert(variant, tmp_path):
    need_pi_env()
    model = os.path.join(FIXTURES, "mnist1d_int8.tflite")
    data = os.path.join(FIXTURES, "mnist1d_cal.npz")
    if variant == "four_bit":  # every site at 4 bits through quantization-parameter edits
        from tests.helpers import MNIST1D_SITES, all_low_bit

        with open(model, "rb") as f:
            _, edited = all_low_bit(f.read(), MNIST1D_SITES, np.load(data)["x"])
        model = str(tmp_path / "four_bit.tflite")
        with open(model, "wb") as f:
            f.write(edited)
    env = dict(os.environ, PYTHONPATH=ROOT)  # the runtime module needs only numpy + types
    done = subprocess.run([PI_PYTHON, "-c", _SCRIPT, model, data], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "tflite_runtime"
    assert result["numpy"].startswith("1.")
    with open(model, "rb") as f:
        ours = runtime.evaluate(f.read(), np.load(data)["x"])
    theirs = np.asarray(result["out"], dtype=np.float32)
    assert theirs.shape == ours.shape == (64, 10)
    # Same int8 kernels: outputs agree to one quantisation step, top-1 everywhere.
    step = float(np.min(np.diff(np.unique(ours))))
    assert np.max(np.abs(theirs - ours)) <= step + 1e-6
    assert np.array_equal(np.argmax(theirs, 1), np.argmax(ours, 1))


def _lowering_models():
    """The lowerings added for robustness: a site feeding REDUCE_MAX at 4 bits, a standalone
    ReLU6 at 4 bits (written as RELU), and a dead ReLU whose scales were repaired."""
    import keras

    import aa_tflite
    from aa_tflite.types import Plan, SiteConfig

    L = keras.layers
    x = np.random.RandomState(0).rand(32, 10, 10, 3).astype(np.float32)
    keras.utils.set_random_seed(0)
    gmp = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(8, 3, activation="relu",
                                                               name="c"),
                            L.GlobalMaxPooling2D(), L.Dense(4)])
    relu6 = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(8, 3), L.GlobalAveragePooling2D(),
                              L.ReLU(max_value=6, name="r6"), L.Dense(4)])
    dead = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(6, 3, activation="relu"),
                             L.Flatten(), L.Dense(8, activation="relu",
                                                  bias_initializer=keras.initializers.Constant(-99)),
                             L.Dense(4), L.Softmax()])
    reader = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(8, 3, activation="relu",
                                                                  name="c"),
                               L.ReLU(max_value=6.0), L.GlobalAveragePooling2D(), L.Dense(4)])
    kw = dict(representative_data=x, progress=False, measure_tflm=False, curve_points=0)
    return x, {
        "reduce_max": aa_tflite.convert(gmp, budget_kb=None, plan=Plan({"c_relu": SiteConfig(
            bits=4)}), **kw).tflite,
        "relu6_as_relu": aa_tflite.convert(relu6, budget_kb=None, plan=Plan({"r6": SiteConfig(
            bits=4)}), **kw).tflite,
        "repaired_scales": aa_tflite.convert(dead, budget_kb=100, **kw).tflite,
        "relu6_reader_as_relu": aa_tflite.convert(reader, budget_kb=None, plan=Plan(
            {"c_relu": SiteConfig(bits=4)}), **kw).tflite,
    }


def _pi_outputs(name: str, tflite: bytes, x: np.ndarray, tmp_path) -> np.ndarray:
    """``tflite``'s dequantized outputs on ``x`` in tflite-runtime (.venv-pi), builtin kernels."""
    data = str(tmp_path / f"{name}.npz")
    np.savez(data, x=x)
    path = str(tmp_path / f"{name}.tflite")
    with open(path, "wb") as f:
        f.write(tflite)
    done = subprocess.run([PI_PYTHON, "-c", _SCRIPT, path, data], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert done.returncode == 0, (name, done.stderr[-2000:])
    return np.asarray(json.loads(done.stdout.strip().splitlines()[-1])["out"], np.float32)


def _assert_same_on_tflite_runtime(models, tmp_path):
    """Runs each ``name -> (tflite, x)`` in tflite-runtime and in LiteRT: outputs within one
    output step."""
    need_pi_env()
    for name, (tflite, x) in models.items():
        theirs = _pi_outputs(name, tflite, x, tmp_path)
        ours = runtime.evaluate(tflite, x)
        step = float(np.min(np.diff(np.unique(ours)))) if len(np.unique(ours)) > 1 else 1.0
        assert np.max(np.abs(theirs - ours)) <= step + 1e-6, name


@pytest.mark.pi
def test_robustness_lowerings_run_the_same_on_tflite_runtime(tmp_path):
    x, models = _lowering_models()
    _assert_same_on_tflite_runtime({k: (v, x) for k, v in models.items()}, tmp_path)


def _reach_models():
    """The lowerings of the bit menu, tie groups and signed tensors: every ReLU site of MNIST-1D at
    2 bits, a concatenation's tie group at 2 bits, mini_xception's signed tensors in the signed
    and offset forms and mini_resnet's identity-shortcut branch in the stream form, at 4 bits."""
    from aa_tflite.frontend.export import export
    from aa_tflite.lowering import offset, relu, signed, stream
    from aa_tflite.precision import precision
    from aa_tflite.search.bench import fit_clip
    from aa_tflite.search.calibrate import tensor_values
    from aa_tflite.tflite.analyse import analyse
    from converters.data import load_digits_split
    from tests.helpers import MNIST1D_SITES, all_low_bit, calibrated_mini, concat_model

    x1 = np.load(os.path.join(FIXTURES, "mnist1d_cal.npz"))["x"]
    with open(os.path.join(FIXTURES, "mnist1d_int8.tflite"), "rb") as f:
        mnist1d = f.read()
    _, relu2 = all_low_bit(mnist1d, MNIST1D_SITES, x1, 2)
    exported, xc = concat_model()
    graphs = analyse(exported.tflite, exported.site_tensors)
    v = tensor_values(exported.tflite, [graphs["a_relu"].tensor, graphs["b_relu"].tensor], xc)
    clip = fit_clip(np.concatenate([a.reshape(-1) for a in v.values()]), bits=2)
    edit = relu.SiteEdit(scale=precision(2).step(clip), zero_point=precision(2).zero_point)
    tie2 = relu.apply_edits(exported.tflite, graphs, {"a_relu": edit, "b_relu": edit})
    d = load_digits_split()
    xcep = export(calibrated_mini("mini_xception", d["x_cal"]), None,
                  representative_data=d["x_cal"], io_dtype="int8").tflite
    ok = [t for t, g in signed.reachable(xcep).items() if g.ok]
    sv = tensor_values(xcep, ok, d["x_cal"])
    signed4 = signed.apply(xcep, {t: signed.SignedChoice(4, *signed.fit(sv[t], 4)) for t in ok})
    off = offset.offset_reachable(xcep)
    ov = tensor_values(xcep, list(off), d["x_cal"])
    offset4 = offset.apply_offset(xcep, {t: offset.OffsetChoice(
        4, *offset.fit_offset(ov[t], 4, min_step=g.scale)) for t, g in off.items()})
    res = export(calibrated_mini("mini_resnet", d["x_cal"]), None,
                 representative_data=d["x_cal"], io_dtype="int8").tflite
    st = stream.stream_reachable(res)
    stv = tensor_values(res, list(st), d["x_cal"])
    stream4 = stream.apply_stream(res, {t: stream.StreamChoice(
        4, stream.fit_stream(stv[t], 4, min_step=g.scale)) for t, g in st.items()})
    assert ok and off and st
    xv = d["x_val"][:64]
    return {"relu_2bit": (relu2, mnist1d, x1[:64], 2), "tie_2bit": (tie2, exported.tflite, xc, 2),
            "signed_4bit": (signed4, xcep, xv, 4), "offset_4bit": (offset4, xcep, xv, 4),
            "stream_4bit": (stream4, res, xv, 4)}


@pytest.mark.pi
def test_bit_menu_tie_and_signed_lowerings_run_on_tflite_runtime_like_litert(tmp_path):
    """tflite-runtime 2.14's builtin kernels and LiteRT's round some requantizations differently
    (the plain int8 mini_xception already differs by 3 output steps). A tensor held to 2^b levels
    turns one such rounding into a 2^(8-b) times larger step, so the bound is the plain model's
    difference scaled by that factor (the random-graph check's rule), and top-1 must agree."""
    from benchmarks.fuzz import _allowed_drift

    need_pi_env()
    for name, (lowered, plain, x, bits) in _reach_models().items():
        step = load_interpreter(lowered).get_output_details()[0]["quantization"][0]
        drift = {}
        for which, tflite in (("plain", plain), ("lowered", lowered)):
            theirs = _pi_outputs(f"{name}_{which}", tflite, x, tmp_path)
            ours = runtime.evaluate(tflite, x)
            drift[which] = int(round(float(np.abs(theirs - ours).max()) / step))
            if which == "lowered":
                assert np.mean(theirs.argmax(1) == ours.argmax(1)) >= 0.95, name
        assert drift["lowered"] <= _allowed_drift(drift["plain"], bits), (name, drift)
