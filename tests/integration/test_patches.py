"""Patch-based execution of the first stage on a model where it pays: a 64x64 stem whose
full-resolution activations hold TFLM's peak, with the op kinds a stem has (a SAME stride-2
conv, a SAME max pool after ReLU, an explicit asymmetric ZeroPadding2D before a VALID depthwise). The
rewrite is exact on every kernel set, TFLM runs it in exactly its stated arena, and
``memory="tflm"`` reaches for it only when the budget needs it."""

import numpy as np
import pytest

import aa_tflite
from aa_tflite.runtime import guard
from aa_tflite.runtime.interpreter import make_interpreter, micro_run, quantize
from aa_tflite.tflite import flatbuffer, memory
from aa_tflite.tflite.firmware import firmware_model
from aa_tflite.tflite.patches import patch_candidates, patch_stage
from aa_tflite.tflite.static_batch import static_batch
from aa_tflite.types import Kernels
from tests.helpers import adversarial, raw_outputs


def _smooth(n: int, seed: int) -> np.ndarray:
    x = np.random.RandomState(seed).uniform(-1, 1, size=(n, 64, 64, 3)).astype(np.float32)
    return (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4


@pytest.fixture(scope="module")
def stem():
    """(static-batch int8 file, float calibration data, int8 real + adversarial inputs, the
    Keras model)."""
    import keras

    from converters.imagenet import calibrate_batchnorm

    keras.utils.set_random_seed(0)
    i = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(i)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = keras.layers.ZeroPadding2D(((2, 1), (2, 1)))(x)  # not a SAME: stays a PAD op
    x = keras.layers.ReLU(6.0)(keras.layers.DepthwiseConv2D(3, use_bias=True)(x))
    x = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    x_cal = _smooth(32, 0)
    model = calibrate_batchnorm(keras.Model(i, x), x_cal)
    tflite = static_batch(aa_tflite.to_tflite(model, x_cal))
    detail = make_interpreter(tflite, Kernels.BUILTIN).get_input_details()[0]
    x = np.concatenate([quantize(_smooth(8, 1), detail),
                        *adversarial((64, 64, 3), np.random.RandomState(0))])
    return tflite, x_cal, x, model


def test_every_split_point_and_grid_is_exact_on_every_kernel_set(stem):
    tflite, _, x, _ = stem
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    assert [o.name for o in ops[:5]] == ["CONV_2D", "MAX_POOL_2D", "PAD", "DEPTHWISE_CONV_2D",
                                         "CONV_2D"]
    assert [p.op for p in patch_candidates(tflite)] == [0, 1, 2, 3, 4]
    want = {k: raw_outputs(tflite, x, k) for k in ("builtin", "xnnpack", "tflm")}
    for at, grid in ((1, (2, 2)), (3, (3, 3)), (4, (2, 5)), (2, (4, 1))):
        tiled = patch_stage(tflite, at=at, grid=grid)
        names = {o.name for o in flatbuffer.describe(flatbuffer.read(tiled))[0]}
        assert {"STRIDED_SLICE", "CONCATENATION"} <= names
        for kernels, expected in want.items():
            assert np.array_equal(raw_outputs(tiled, x, kernels), expected), (at, grid, kernels)


def test_firmware_patches_the_stem_and_runs_in_exactly_its_arena(stem):
    tflite, _, x, _ = stem
    plain, tiled = firmware_model(tflite), firmware_model(tflite, patch=True)
    assert tiled.patch is not None and "patches" in tiled.describe()
    assert tiled.arena < 0.9 * plain.arena and tiled.work > plain.work
    assert np.array_equal(micro_run(tiled.tflite, x, arena_size=tiled.arena), micro_run(tflite, x))
    assert not guard.probe(tiled.tflite, kernels=Kernels.TFLM,
                           tflm_arena_size=tiled.arena - 64).ok
    assert np.array_equal(raw_outputs(tiled.tflite, x, "builtin"),
                          raw_outputs(tflite, x, "builtin"))
    assert firmware_model(tflite, patch=True).tflite == tiled.tflite  # same inputs, same bytes


def test_the_real_arena_mode_patches_only_when_the_budget_needs_it(stem):
    tflite, x_cal, _, model = stem
    plain, tiled = firmware_model(tflite), firmware_model(tflite, patch=True)

    def convert(nbytes: int) -> aa_tflite.Result:
        return aa_tflite.convert(model, budget_kb=nbytes / 1024, representative_data=x_cal,
                                 memory="tflm", curve_points=0, progress=False)

    loose, tight = convert(plain.arena), convert(tiled.arena)
    assert memory.smallest_arena(loose.tflite) == plain.arena
    assert memory.smallest_arena(tight.tflite) == tiled.arena
    assert not any("patches" in n for n in loose.report.notes)
    assert any("patches" in n for n in tight.report.notes)
    with pytest.raises(aa_tflite.BudgetError, match="smallest arena aa_tflite reaches") as err:
        convert(tiled.arena - 512)
    assert err.value.smallest_bytes <= tiled.arena



def test_tflm_budgets_make_points_of_different_layouts_in_one_file(stem):
    """Two TFLM budgets: the plain firmware layout and the patched one, as two signatures of one
    file. Each runs in LiteRT as its own file does; the patched point reuses the weights; a
    point is chosen by its real arena."""
    from aa_tflite.runtime.interpreter import run_model
    from aa_tflite.runtime.onthefly import OperatingPoints

    tflite, x_cal, _, model = stem
    plain, tiled = firmware_model(tflite), firmware_model(tflite, patch=True)
    result = aa_tflite.convert(model, budget_kb=[plain.arena / 1024, tiled.arena / 1024],
                               representative_data=x_cal, memory="tflm", curve_points=0,
                               progress=False)
    loose, tight = result.points
    assert "patches" in tight.report.layout and "patches" not in loose.report.layout
    assert memory.smallest_arena(loose.tflite) == plain.arena
    assert memory.smallest_arena(tight.tflite) == tiled.arena
    assert tight.tflm_arena < loose.tflm_arena
    points = OperatingPoints(result.tflite, kernels="builtin")
    assert [p.layout for p in points.points] == [loose.report.layout, tight.report.layout]
    xs = _smooth(3, 2)
    for p in result.points:
        assert np.array_equal(points.run(xs, point=p.key), run_model(p.tflite, xs))
    # The patched point reuses the plain point's weight tensors: it adds ops, not weights.
    weights = loose.report.planned_memory.weights
    assert len(result.tflite) < len(loose.tflite) + len(tight.tflite) - 0.9 * weights
    assert points.select(tflm_kb=tiled.arena / 1024).key == tight.key
    assert points.select(tflm_kb=plain.arena / 1024).key in (loose.key, tight.key)
    assert "Layouts" in result.points_markdown() and "patches" in result.points_markdown()
    # The MCU switch: one arena for both layouts, one resolver covering the patched point's ops.
    import tempfile

    from aa_tflite.targets.tflm import export_tflm

    with tempfile.TemporaryDirectory() as out:
        exported = export_tflm(result.tflite, out, name="stem")
        arena = exported.info["arena_size"]
        assert "AddStridedSlice" in exported.info["ops"] and "AddConcatenation" in exported.info[
            "ops"]
        x8 = quantize(xs, make_interpreter(tflite, Kernels.BUILTIN).get_input_details()[0])
        for key, point in exported.points.items():
            with open(point["file"], "rb") as f:
                firmware = f.read()
            assert point["tflm_arena"] <= arena
            assert np.array_equal(micro_run(firmware, x8, arena_size=arena),
                                  micro_run(tflite, x8)), key
