"""The produced .tflite runs unchanged on tflite-runtime (what Raspberry Pi / Coral users have).

tflite-runtime needs numpy<2, so it lives in its own virtual environment, ``.venv-pi``, which
``make test`` creates. Under CI a missing environment is a failure, not a skip.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from aa_tflite import runtime
from tests.conftest import FIXTURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PI_PYTHON = os.path.join(ROOT, ".venv-pi", "bin", "python")

_SCRIPT = """
import json, sys
import numpy as np
from aa_tflite import runtime
with open(sys.argv[1], "rb") as f:
    tflite = f.read()
x = np.load(sys.argv[2])["x"]
print(json.dumps({"backend": runtime.interpreter_backend(), "numpy": np.__version__,
                  "out": runtime.evaluate(tflite, x).tolist()}))
"""


@pytest.mark.pi
@pytest.mark.parametrize("variant", ["int8", "four_bit"])
def test_tflite_runtime_gives_the_same_outputs_as_litert(variant, tmp_path):
    if not os.path.exists(PI_PYTHON):
        if os.environ.get("CI"):
            pytest.fail(".venv-pi is missing: run `make test`, which creates it.")
        pytest.skip(".venv-pi not created; `make test` creates it")
    model = os.path.join(FIXTURES, "mnist1d_int8.tflite")
    data = os.path.join(FIXTURES, "mnist1d_cal.npz")
    if variant == "four_bit":  # every site at 4 bits through quantization-parameter edits
        from tests.test_quantedit import MNIST1D_SITES, _all_four_bit

        with open(model, "rb") as f:
            _, edited = _all_four_bit(f.read(), MNIST1D_SITES, np.load(data)["x"])
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


@pytest.mark.pi
def test_robustness_lowerings_run_the_same_on_tflite_runtime(tmp_path):
    if not os.path.exists(PI_PYTHON):
        if os.environ.get("CI"):
            pytest.fail(".venv-pi is missing: run `make test`, which creates it.")
        pytest.skip(".venv-pi not created; `make test` creates it")
    x, models = _lowering_models()
    data = str(tmp_path / "x.npz")
    np.savez(data, x=x)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for name, tflite in models.items():
        path = str(tmp_path / f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(tflite)
        done = subprocess.run([PI_PYTHON, "-c", _SCRIPT, path, data], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        theirs = np.asarray(json.loads(done.stdout.strip().splitlines()[-1])["out"], np.float32)
        ours = runtime.evaluate(tflite, x)
        step = float(np.min(np.diff(np.unique(ours)))) if len(np.unique(ours)) > 1 else 1.0
        assert np.max(np.abs(theirs - ours)) <= step + 1e-6, name
