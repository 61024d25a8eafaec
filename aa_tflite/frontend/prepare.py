"""The first stages of ``convert`` on the Keras side: check the model and the data, convert the
model to int8 once, and run the float model for the reference outputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from aa_tflite.config import ConvertConfig
from aa_tflite.metrics import default_metric, make_scorer
from aa_tflite.search.baseline import Data
from aa_tflite.types import AAError

__all__ = ["Prepared", "int8_baseline", "prepare", "reference_batch"]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The checked model and data.

    Attributes:
        model: The Keras 3 model (a Keras 2 model brought to Keras 3; the user's is untouched).
        keras2: It came as a Keras 2 (``tf_keras``) model.
        x_cal: Representative inputs.
        x_eval: Inputs the loss is measured on (at most ``max_eval_samples``).
        y_eval: Their labels, or None.
        x_fit: The inputs corrections are fitted on (at most ``max_fit_samples``).
        reference_model: The model the float reference outputs come from: the user's (in Keras
            3), before any BatchNorm fold, so an inexact fold shows up as loss.
        notes: What preparing changed (BatchNorm folds), for the report.
    """

    model: Any
    keras2: bool
    x_cal: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    x_fit: np.ndarray
    reference_model: Any = None
    notes: tuple[str, ...] = ()


def _labels(y: Any, n: int, classes: int) -> np.ndarray:
    """Checked integer class labels for ``n`` inputs."""
    try:
        y = np.asarray(y)
    except (TypeError, ValueError) as e:
        raise AAError(f"eval_data labels must be an array of integer class indices. "
                      f"Received: {type(y).__name__}") from e
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] == classes and classes > 1:
        raise AAError("eval_data labels look one-hot (shape (N, classes)); pass class "
                      "indices instead, e.g. y_val.argmax(axis=1).")
    y = y.reshape(-1)
    if len(y) != n:
        raise AAError(f"eval_data has {n} inputs and {len(y)} labels; pass one integer "
                      "label per sample, e.g. eval_data=(x_val, y_val).")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer)
                               or np.issubdtype(y.dtype, np.floating)):
        raise AAError(f"eval_data labels must be integer class indices. Received labels of "
                      f"dtype {y.dtype}; map them to 0..{classes - 1} first.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise AAError("eval_data labels must be integer class indices, e.g. "
                          "y_val.argmax(axis=1) for one-hot labels.")
        y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise AAError(f"eval_data labels must be class indices in 0..{classes - 1} (the model "
                      f"has {classes} outputs). Received labels from {y.min()} to {y.max()}.")
    return y


def output_shapes(model: Any) -> list[tuple[int, ...]]:
    """Each Keras output's per-sample shape (unknown sizes as 1)."""
    return [tuple(int(d) if d is not None else 1 for d in o.shape[1:]) for o in model.outputs]


def _all_labels(model: Any, y: Any, n: int) -> Any:
    """One output: its checked labels. Several: a list with, per output, None, checked class
    labels (a class-vector output) or a float target array of the output's shape."""
    shapes = output_shapes(model)
    if len(shapes) == 1:
        return _output_labels(y, n, shapes[0], 0)
    if not isinstance(y, (list, tuple)) or len(y) != len(shapes):
        raise AAError(f"The model has {len(shapes)} outputs: pass eval_data=(x, [y_0, ..., "
                      f"y_{len(shapes) - 1}]) with one label array (or None) per output, in "
                      f"model.outputs order. Received: {type(y).__name__}")
    return [None if labels is None else _output_labels(labels, n, shape, k)
            for k, (labels, shape) in enumerate(zip(y, shapes))]


def _output_labels(labels: Any, n: int, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Class indices for a class-vector output; a float target of the output's shape (a mask, a
    map, values) for any other."""
    if default_metric(shape, True) == "top1":
        return _labels(labels, n, int(np.prod(shape)))
    target = np.asarray(labels, np.float32)
    if target.shape != (n, *shape):
        raise AAError(f"eval_data labels for output {k} must have shape {(n, *shape)} (one "
                      f"target per sample, like the output). Received: {target.shape}")
    return target


def prepare(model: Any, representative_data: Any, eval_data: Any,
            cfg: ConvertConfig) -> Prepared:
    """Checks the model (Keras 2 models are brought to Keras 3) and the data.

    Raises:
        AAError: The model or the data cannot be used; the message says what to change.
    """
    from aa_tflite.frontend.export import check_data
    from aa_tflite.frontend.rewrite import check_model, from_keras2, is_keras2

    keras2 = is_keras2(model)
    if keras2:
        model = from_keras2(model)
    check_model(model)
    x_cal = check_data(model, representative_data)
    if eval_data is None:
        x_eval, y_eval = x_cal, None
    elif isinstance(eval_data, (tuple, list)) and len(eval_data) == 2:
        x_eval = check_data(model, eval_data[0], "eval_data[0]")
        y_eval = _all_labels(model, eval_data[1], len(x_eval))
    else:
        x_eval, y_eval = check_data(model, eval_data, "eval_data"), None
    n = cfg.max_eval_samples
    folded, notes = model, []
    if cfg.fold_batchnorm != "none":
        from aa_tflite.frontend.fold import fold_batchnorm

        folded, notes = fold_batchnorm(model, exact=cfg.fold_batchnorm != "all")
    return Prepared(folded, keras2, x_cal, x_eval[:n], None if y_eval is None else y_eval[:n],
                    x_cal[:cfg.max_fit_samples], model, tuple(notes))


# Float activations the reference run may hold per batch, about: TensorFlow keeps what a large
# batch allocated, and MobileNetV2 at 224x224 and batch 64 left 1 GB resident.
_PREDICT_BYTES = 64 * 2**20


def reference_batch(tflite: bytes, cfg: ConvertConfig) -> int:
    """The batch the float model's reference outputs are computed in: ``cfg.batch_size``, or fewer
    where its float32 activations (four times the int8 model's peak per sample) would exceed
    ``_PREDICT_BYTES`` per batch.

    Example:
        >>> reference_batch(tflite, ConvertConfig())  # doctest: +SKIP
        64
    """
    from aa_tflite.tflite import memory

    per_sample = 4 * memory.plan_tensors(tflite)[0]
    return max(1, min(cfg.batch_size, _PREDICT_BYTES // max(per_sample, 1)))


def int8_baseline(prep: Prepared, cfg: ConvertConfig, *,
                  probe: Callable[[bytes], None] | None = None
                  ) -> tuple[Any, Data, tuple[str, ...]]:
    """The int8 conversion (``frontend.export.Exported``), the data with the float model's
    reference outputs, and the notes the report gives about them. ``probe`` (e.g.
    ``search.runtimes.probe_baseline``, which runs a child process) is called on the int8 bytes
    on a thread while the float model predicts; what it raises is raised here."""
    from concurrent.futures import ThreadPoolExecutor

    from aa_tflite.frontend.export import export

    base = export(prep.model, None, representative_data=prep.x_cal, io_dtype=cfg.io_dtype)
    source = prep.reference_model if prep.reference_model is not None else prep.model
    with ThreadPoolExecutor(1) as pool:
        probed = pool.submit(probe, base.tflite) if probe is not None else None
        predicted = source.predict(prep.x_eval, batch_size=reference_batch(base.tflite, cfg),
                                   verbose=0)
        if probed is not None:
            probed.result()
    shapes = output_shapes(prep.model)
    reference = ([np.asarray(p) for p in predicted] if len(shapes) > 1
                 else np.asarray(predicted))
    labels = (prep.y_eval if isinstance(prep.y_eval, list) else
              [prep.y_eval] * len(shapes))  # None for every output, or one output's labels
    scorer = make_scorer(cfg.metric, cfg.output_weights, shapes=shapes,
                         labelled=[y is not None for y in labels])
    data = Data(x_cal=prep.x_cal, x_fit=prep.x_fit, x_eval=prep.x_eval, y_eval=prep.y_eval,
                reference=reference, scorer=scorer)
    notes = [*prep.notes, *(f"Repaired the int8 conversion: {r}" for r in base.repairs)]
    if prep.keras2:
        notes.append("The model was a Keras 2 (tf_keras) model; it was converted to Keras 3 "
                     "through a legacy .h5 file (the given object is untouched).")
    notes += [f"Output {k} (shape {list(shapes[k])}) is not a class vector: it is scored by "
              f"{name} against the float model, not top-1. Pass metric= to choose."
              for k, (name, d) in enumerate(zip(scorer.names, scorer.defaulted))
              if d and name == "relative_mse"]
    if len(shapes) > 1:
        notes.append(f"{len(shapes)} outputs, scored {scorer.describe()}.")
    if prep.y_eval is None and scorer.names == ("agreement",):
        notes.append("No labels: the loss is the drop in top-1 agreement with the float model "
                     f"on {len(prep.x_eval)} samples.")
    else:
        notes.append(f"Scores are on the {len(prep.x_eval)} eval_data samples the planner also "
                     "used; evaluate a separate split for held-out figures.")
    return base, data, tuple(notes)
