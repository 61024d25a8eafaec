"""Bad input everywhere a user can reach (issue 9): each case gets an ``AAError`` naming the
problem and the fix from the API, exit status 2 and one line from the CLI, never a traceback, a
dead process or a silent result."""

import os

import numpy as np
import pytest

import aa_tflite
from aa_tflite import cli
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.tflite import memory
from aa_tflite.types import AAError
from tests.conftest import FIXTURES, fixture_bytes

BUDGET = 1.8  # KiB: 60% of the embedded digits model's int8 peak


def _convert(digits, **kw):
    kw.setdefault("budget_kb", BUDGET)
    kw.setdefault("representative_data", digits.x_cal)
    kw.setdefault("curve_points", 0)
    model = kw.pop("model", digits.model)
    return aa_tflite.convert(model, progress=False, measure_tflm=False, **kw)


class _Subclassed:
    """Built lazily: a subclassed keras.Model."""

    @staticmethod
    def make():
        import keras

        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = keras.layers.Dense(10, activation="relu")

            def call(self, x):
                return self.d(keras.ops.reshape(x, (-1, 64)))

        net = Net()
        net(np.zeros((1, 8, 8, 1), np.float32))
        return net


def _unbuilt():
    import keras

    return keras.Sequential([keras.layers.Dense(3)])


def _no_relu():
    import keras

    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="tanh")])


MODEL_CASES = [
    ("a path string", lambda: "model.keras", "Expected a keras.Model"),
    ("a dict", lambda: {"layers": []}, "Expected a keras.Model"),
    ("a subclassed model", _Subclassed.make, "subclassed keras.Model"),
    ("an unbuilt Sequential", _unbuilt, "no defined input"),
    ("a model with no ReLU", _no_relu, "has no ReLU to rewrite"),
]


@pytest.mark.parametrize("what, make, fragment", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_models(digits, what, make, fragment):
    with pytest.raises(AAError, match=fragment):
        _convert(digits, model=make())


def _x(digits):
    return digits.x_cal


DATA_CASES = [
    ("None", lambda x: None, "representative_data is required"),
    ("empty", lambda x: x[:0], "is empty"),
    ("NaN", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
     "NaN or infinite"),
    ("Inf", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.inf, x),
     "NaN or infinite"),
    ("wrong shape", lambda x: x.reshape(len(x), 64), "Reshape it"),
    ("no sample axis", lambda x: x[0], "Reshape it"),
    ("strings", lambda x: np.array([["a"] * 4]), "numeric array"),
    ("a ragged list", lambda x: [x[0], x[1][:2]], "numeric array"),
    ("a generator function", lambda x: (lambda: iter(x)), "numeric array"),
]


@pytest.mark.parametrize("what, make, fragment", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_representative_data(digits, what, make, fragment):
    with pytest.raises(AAError, match=fragment):
        _convert(digits, representative_data=make(digits.x_cal))


def test_a_list_of_samples_is_accepted(digits):
    out = _convert(digits, representative_data=[s for s in digits.x_cal[:64]])
    assert out.report.planned_memory.packed_peak <= out.report.budget_bytes


LABEL_CASES = [
    ("out of range", lambda y: y + 10, "in 0..9"),
    ("negative", lambda y: y - 5, "in 0..9"),
    ("wrong length", lambda y: y[:10], "250 inputs and 10 labels"),
    ("float, not whole", lambda y: y + 0.5, "integer class indices"),
    ("strings", lambda y: y.astype(str), "integer class indices"),
    ("one-hot", lambda y: np.eye(10)[y], "one-hot"),
    ("NaN", lambda y: np.where(np.arange(len(y)) == 3, np.nan, y.astype(float)),
     "integer class indices"),
]


@pytest.mark.parametrize("what, make, fragment", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_bad_labels(digits, what, make, fragment):
    x, y = digits.x_val[:250], digits.y_val[:250]
    with pytest.raises(AAError, match=fragment):
        _convert(digits, eval_data=(x, make(y)))


BUDGET_CASES = [0, -1, float("nan"), float("inf"), "48", True, [2, 0], [True], ({"a": 1},)]


@pytest.mark.parametrize("budget", BUDGET_CASES, ids=[repr(b) for b in BUDGET_CASES])
def test_bad_budgets(digits, budget):
    with pytest.raises(AAError, match="budget_kb must be a positive number.*Received"):
        _convert(digits, budget_kb=budget)


@pytest.mark.parametrize("budget", [np.float32(BUDGET), np.float64(BUDGET), np.int64(2),
                                    [np.float32(BUDGET)]],
                         ids=["float32", "float64", "int64", "list of one"])
def test_numpy_scalars_are_numbers(digits, budget):
    out = _convert(digits, budget_kb=budget, max_accuracy_drop=np.float32(50))
    kib = float(budget[0] if isinstance(budget, list) else budget)
    assert out.report.planned_memory.packed_peak <= int(kib * 1024)
    assert out.points[0].budget_kb == kib and type(out.points[0].budget_kb) is float


@pytest.mark.parametrize("kwargs, fragment", [
    ({"memory": "sparse"}, "memory must be one of"),
    ({"max_accuracy_drop": float("nan")}, "max_accuracy_drop must be"),
    ({"max_eval_samples": 0}, "max_eval_samples must be an integer"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"curve_points": -1}, "curve_points must be"),
])
def test_bad_options(digits, kwargs, fragment):
    with pytest.raises(AAError, match=fragment):
        _convert(digits, **kwargs)


def test_a_keras2_model_is_converted(digits):
    import tf_keras

    k2 = tf_keras.Sequential([tf_keras.Input((8, 8, 1)),
                              tf_keras.layers.Conv2D(8, 3, activation="relu"),
                              tf_keras.layers.Flatten(), tf_keras.layers.Dense(10)])
    before = [w.copy() for w in k2.get_weights()]
    out = _convert(digits, model=k2, budget_kb=100)
    assert any("Keras 2 (tf_keras)" in n for n in out.report.notes)
    assert all(np.array_equal(a, b) for a, b in zip(before, k2.get_weights()))


# --- damaged .tflite files ------------------------------------------------------------------

def _damaged():
    good = fixture_bytes("digits_int8.tflite")
    rng = np.random.RandomState(0)
    flipped = bytearray(good)
    for j in (40, 100, 180, 260):  # the root table and vector offsets
        flipped[j] ^= 0x5A
    return {
        "empty": b"",
        "truncated": good[: len(good) // 3],
        "header only": good[:8],
        "random bytes": rng.bytes(4096),
        "header-valid garbage": good[:8] + rng.bytes(4096),
        "bit-flipped": bytes(flipped),
        "a text file": b"this is not a model\n" * 20,
    }


@pytest.mark.parametrize("what", list(_damaged()))
def test_damaged_tflite_is_a_clear_error_everywhere(what, tmp_path, capsys):
    data = _damaged()[what]
    for call in (lambda: memory.memory_report(data), lambda: memory.tflm_arena(data),
                 lambda: memory.plan_tensors(data),
                 lambda: runtime.evaluate(data, np.zeros((1, 8, 8, 1)))):
        try:
            call()  # a damage the checks cannot see may still load; it must not crash
        except AAError as e:
            assert len(str(e)) > 30
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    rc = cli.main(cli.parse_args(["inspect", str(path)]))
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err
    if what in ("empty", "truncated", "header only", "random bytes", "a text file"):
        assert rc == 2 and "aa-tflite: error:" in err


def test_evaluate_of_empty_bytes_names_the_problem():
    with pytest.raises(AAError, match="0 bytes \\(empty\\)"):
        runtime.evaluate(b"", np.zeros((1, 8, 8, 1)))


# --- output files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_result(digits):
    return _convert(digits)


def test_save_under_a_regular_file_is_a_clear_error(small_result, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AAError, match="is a file, not a folder"):
        small_result.save(tmp_path / "afile" / "out" / "digits")


def test_save_in_an_unwritable_place_is_a_clear_error(small_result):
    with pytest.raises(AAError, match="Cannot create the folder|Cannot write"):
        small_result.save("/proc/aa_tflite_out/digits")


def test_existing_outputs_are_replaced_as_a_set_or_not_at_all(small_result, tmp_path):
    prefix = tmp_path / "digits"
    (tmp_path / "digits.tflite").write_bytes(b"old model")
    small_result.save(prefix, plots=False)
    assert (tmp_path / "digits.tflite").read_bytes() == small_result.tflite
    # A failed save leaves the old set as it was: one target is a folder, nothing is replaced.
    (tmp_path / "digits.tflite").write_bytes(b"old model")
    (tmp_path / "digits.report.md").unlink()
    (tmp_path / "digits.report.md").mkdir()
    with pytest.raises(AAError, match="it is a folder"):
        small_result.save(prefix, plots=False)
    assert (tmp_path / "digits.tflite").read_bytes() == b"old model"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- the command line -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    digits.model.save(d / "m.keras")
    np.savez(d / "cal.npz", x=digits.x_cal)
    np.savez(d / "two.npz", a=digits.x_cal, b=digits.x_cal)
    np.savez(d / "none.npz")
    np.savez(d / "labels_bad.npz", x=digits.x_val[:50], y=digits.y_val[:50] + 20)
    (d / "text.npz").write_text("not an npz\n")
    (d / "garbage.keras").write_bytes(b"PK\x03\x04 garbage")
    (d / "model.txt").write_text("hello")
    (d / "afile").write_text("x")
    return d


def _cli(argv, capsys):
    rc = cli.main(cli.parse_args(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


CLI_CASES = [
    (["convert", "{d}/missing.keras", "--budget-kb", "2", "--data", "{d}/cal.npz", "--out", "{d}/o"],
     "does not exist"),
    (["convert", "{d}/garbage.keras", "--budget-kb", "2", "--data", "{d}/cal.npz", "--out",
      "{d}/o"], "Could not load"),
    (["convert", "{d}/model.txt", "--budget-kb", "2", "--data", "{d}/cal.npz", "--out", "{d}/o"],
     ".keras (Keras 3) or .h5"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/text.npz", "--out", "{d}/o"],
     "not a readable .npz"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/two.npz", "--out", "{d}/o"],
     "name the inputs 'x'"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/none.npz", "--out", "{d}/o"],
     "no arrays"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/missing.npz", "--out", "{d}/o"],
     "does not exist"),
    (["convert", "{d}/m.keras", "--budget-kb", "nan", "--data", "{d}/cal.npz", "--out", "{d}/o"],
     "budget_kb must be a positive number"),
    (["convert", "{d}/m.keras", "--budget-kb", "-3", "--data", "{d}/cal.npz", "--out", "{d}/o"],
     "budget_kb must be a positive number"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/cal.npz", "--eval",
      "{d}/labels_bad.npz", "--out", "{d}/o"], "in 0..9"),
    (["convert", "{d}/m.keras", "--budget-kb", "2", "--data", "{d}/cal.npz", "--out",
      "{d}/afile/o", "--no-tflm"], "is a file, not a folder"),
    (["convert", "{d}/m.keras", "--data", "{d}/cal.npz", "--out", "{d}/o", "--plan",
      "{d}/missing.json"], "does not exist"),
    (["convert", "{d}/m.keras", "--data", "{d}/cal.npz", "--out", "{d}/o", "--plan",
      "{d}/model.txt"], "not valid JSON"),
    (["inspect", "{d}/missing.tflite"], "does not exist"),
    (["inspect", "{d}/model.txt"], "file identifier 'TFL3'"),
]


@pytest.mark.parametrize("argv, fragment", CLI_CASES, ids=[f"{c[0][0]}-{c[1][:24]}" for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_clear_line(files, argv, fragment, capsys):
    rc, err = _cli([a.format(d=files) for a in argv], capsys)
    assert rc == 2, err
    assert err.startswith("aa-tflite: error:") and fragment in err


def test_cli_bad_option_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["convert", "m.keras", "--budget-kb", "lots", "--data", "x", "--out", "o"])
    assert e.value.code == 2 and "--budget-kb takes a number" in capsys.readouterr().err


def test_cli_takes_a_legacy_h5_model(files, capsys, digits):
    import tf_keras

    k2 = tf_keras.Sequential([tf_keras.Input((8, 8, 1)),
                              tf_keras.layers.Conv2D(8, 3, activation="relu"),
                              tf_keras.layers.Flatten(), tf_keras.layers.Dense(10)])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "HDF5 is legacy": that is the point of the test
        k2.save(files / "k2.h5")
    rc, err = _cli(["convert", str(files / "k2.h5"), "--budget-kb", "100", "--data",
                    str(files / "cal.npz"), "--out", str(files / "h5out" / "m"), "--no-tflm",
                    "--no-progress"], capsys)
    assert rc == 0, err
    assert os.path.getsize(files / "h5out" / "m.tflite") > 1000


def test_cli_convert_is_quiet_on_stderr(files, capfd):
    rc = cli.main(cli.parse_args(["convert", str(files / "m.keras"), "--budget-kb", "2", "--data",
                                  str(files / "cal.npz"), "--out", str(files / "q" / "m"),
                                  "--no-tflm", "--no-progress"]))
    out, err = capfd.readouterr()
    assert rc == 0
    assert "fully_quantize" not in out + err and "UserWarning" not in err
    assert err.strip() == "", err[:500]


def test_fixture_path_is_real():
    assert os.path.exists(os.path.join(FIXTURES, "digits_int8.tflite"))
