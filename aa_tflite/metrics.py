"""Scores that fit a model's outputs: what ``convert(..., metric=...)`` measures the loss in.

A score is higher-is-better on a 0-1 scale; the loss is the score's drop in points (x100) against
the int8 baseline. Built-ins (``METRICS``):

- ``"top1"``: top-1 accuracy against the labels (needs labels);
- ``"agreement"``: top-1 agreement with the float model (a classifier without labels);
- ``"relative_mse"``: ``1 - min(1, sum((out - float)^2) / sum(float^2))``, for dense outputs
  (regression, feature maps, depth, logits you read as values);
- ``"iou"``: intersection over union of ``out >= 0.5`` and ``float >= 0.5`` (or the labels'
  mask), per sample then averaged, for masks and edge or probability maps (an empty union counts
  as 1).

A callable ``metric(y, outputs) -> float`` can replace any of them: ``y`` is the labels when
``eval_data`` has them, else the float model's outputs on the same inputs.

The default per output: a class vector (one axis of at least 2 values per sample) is scored by
``"top1"`` with labels and ``"agreement"`` without; any other output by ``"relative_mse"``, and
the report says so. With several outputs, the scores are combined by their mean, or by the
weights given.

Example:
    >>> import numpy as np
    >>> s = make_scorer(None, None, shapes=[(10,)], labelled=[False])
    >>> ref = [np.eye(10)[:4]]
    >>> s.names, s.score(ref, ref, None)
    (('agreement',), 1.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from aa_tflite.types import AAError

__all__ = ["METRICS", "Scorer", "check_metric_option", "default_metric", "make_scorer"]

Metric = Callable[[np.ndarray, np.ndarray], float]


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(len(a), -1)


def top1(y: np.ndarray, outputs: np.ndarray) -> float:
    """Top-1 accuracy of ``outputs`` against integer labels ``y``."""
    return float(np.mean(np.argmax(_flat(outputs), axis=1) == np.asarray(y).reshape(-1)))


def agreement(y: np.ndarray, outputs: np.ndarray) -> float:
    """Top-1 agreement of ``outputs`` with reference outputs ``y``."""
    return float(np.mean(np.argmax(_flat(outputs), axis=1) == np.argmax(_flat(y), axis=1)))


def relative_mse(y: np.ndarray, outputs: np.ndarray) -> float:
    """``1 - min(1, squared error / squared reference)`` over all samples and values."""
    y, out = _flat(y).astype(np.float64), _flat(outputs).astype(np.float64)
    power = float(np.sum(y * y))
    return 1.0 - min(1.0, float(np.sum((out - y) ** 2)) / max(power, 1e-12))


def iou(y: np.ndarray, outputs: np.ndarray) -> float:
    """Mean per-sample IoU of ``outputs >= 0.5`` against ``y >= 0.5`` (a mask or map)."""
    a, b = _flat(outputs) >= 0.5, _flat(y) >= 0.5
    union = np.sum(a | b, axis=1)
    inter = np.sum(a & b, axis=1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


METRICS: dict[str, Metric] = {"top1": top1, "agreement": agreement,
                              "relative_mse": relative_mse, "iou": iou}


def default_metric(shape: Sequence[int], labelled: bool) -> str:
    """The built-in for an output of per-sample ``shape``: a class vector gets ``"top1"``
    (with labels) or ``"agreement"``; anything else ``"relative_mse"``."""
    dims = [int(d) for d in shape if d is not None and int(d) != 1]
    if len(dims) == 1 and dims[0] >= 2:
        return "top1" if labelled else "agreement"
    return "relative_mse"


@dataclasses.dataclass(frozen=True)
class Scorer:
    """One metric per output and their weights.

    Attributes:
        metrics: Per output, a built-in's name or a callable.
        weights: Per output, its weight in the combined score (they sum to 1).
        defaulted: Per output, whether its metric was chosen by ``default_metric``.
    """

    metrics: tuple[str | Metric, ...]
    weights: tuple[float, ...]
    defaulted: tuple[bool, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Each output's metric, by name."""
        return tuple(m if isinstance(m, str) else getattr(m, "__name__", "custom")
                     for m in self.metrics)

    @property
    def classifier(self) -> bool:
        """One output scored by top-1 (the output KL then breaks ties between equal losses)."""
        return len(self.metrics) == 1 and self.metrics[0] in ("top1", "agreement")

    def per_output(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None,
                   labels: Sequence[np.ndarray | None] | None) -> list[float]:
        """Each output's score."""
        scores = []
        for k, metric in enumerate(self.metrics):
            label = None if labels is None else labels[k]
            y = label if label is not None else (None if reference is None else reference[k])
            if y is None:
                raise AAError(f"Output {k}'s metric {self.names[k]!r} needs labels or the float "
                              "model's outputs.")
            fn = METRICS[metric] if isinstance(metric, str) else metric
            value = float(fn(np.asarray(y), np.asarray(outputs[k])))
            if not np.isfinite(value):
                raise AAError(f"Output {k}'s metric {self.names[k]!r} returned {value}; a metric "
                              "must return a finite score, higher is better, on a 0-1 scale.")
            scores.append(value)
        return scores

    def score(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None,
              labels: Sequence[np.ndarray | None] | None) -> float:
        """The combined score: the weighted mean of ``per_output``."""
        return float(np.dot(self.weights, self.per_output(outputs, reference, labels)))

    def describe(self) -> str:
        """The metric in words, for the report."""
        parts = [f"output {k}: {name}" + (" (default)" if d else "")
                 for k, (name, d) in enumerate(zip(self.names, self.defaulted))]
        if len(parts) == 1:
            return self.names[0]
        return "; ".join(parts) + " (weights " + ", ".join(f"{w:g}" for w in self.weights) + ")"


def _check_metric(m: object, k: int) -> str | Metric:
    if isinstance(m, str):
        if m not in METRICS:
            raise AAError(f"metric {m!r} (output {k}) is not a built-in. Pass one of "
                          f"{sorted(METRICS)} or a callable metric(y, outputs) -> float.")
        return m
    if callable(m):
        return m
    raise AAError(f"metric must be a built-in name {sorted(METRICS)}, a callable "
                  f"metric(y, outputs) -> float, or one of those per output. Received: {m!r}")


def check_metric_option(metric: object) -> object:
    """``metric`` checked before any work: None, a built-in name, a callable, or a sequence of
    those (None allowed) per output; lists become tuples."""
    if metric is None:
        return None
    if isinstance(metric, (list, tuple)):
        return tuple(None if m is None else _check_metric(m, k) for k, m in enumerate(metric))
    return _check_metric(metric, 0)


def make_scorer(metric: object, weights: Sequence[float] | None, *,
                shapes: Sequence[Sequence[int]], labelled: Sequence[bool]) -> Scorer:
    """The ``Scorer`` for a model's outputs.

    Args:
        metric: None (the default per output), a built-in name or callable for every output,
            or a sequence with one (name, callable or None) per output.
        weights: None (the mean) or one non-negative weight per output, not all zero.
        shapes: Each output's per-sample shape.
        labelled: Per output, whether labels were given for it.

    Raises:
        AAError: A metric is unknown, the counts do not match the outputs, ``"top1"`` has no
            labels, or the weights are bad.
    """
    n = len(shapes)
    given = list(metric) if isinstance(metric, (list, tuple)) else [metric] * n
    if len(given) != n:
        raise AAError(f"metric lists {len(given)} metrics for a model with {n} outputs; pass "
                      "one per output, or one for all of them.")
    chosen = [default_metric(shapes[k], labelled[k]) if m is None else _check_metric(m, k)
              for k, m in enumerate(given)]
    for k, m in enumerate(chosen):
        if m == "top1" and not labelled[k]:
            raise AAError(f"metric 'top1' (output {k}) needs labels: pass eval_data=(x, y), or "
                          "use 'agreement' to compare with the float model.")
    if weights is None:
        w = np.full(n, 1.0 / n)
    else:
        w = np.asarray(list(weights), np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise AAError(f"output_weights must be {n} non-negative numbers, not all zero (one "
                          f"per output). Received: {list(weights)!r}")
        w = w / w.sum()
    return Scorer(tuple(chosen), tuple(float(v) for v in w),
                  tuple(m is None for m in given))
