"""The accuracy-memory curve: the greedy path from int8 down to the smallest plan, some of its
steps built and verified in the interpreter. No TensorFlow import."""

from __future__ import annotations

import dataclasses

import numpy as np

from aa_tflite.config import ConvertConfig
from aa_tflite.search import planner
from aa_tflite.search.baseline import Baseline
from aa_tflite.search.measure import Measured, parallel_map
from aa_tflite.search.memory_modes import memory_model

__all__ = ["CurveSample", "curve", "score"]


@dataclasses.dataclass(frozen=True)
class CurveSample:
    """One step of the greedy path.

    Attributes:
        peak: The budgeted figure after the step, bytes.
        predicted: The int8 score minus the summed single-site losses so far.
        verified: The score of the step's plan built and run, or None if not built.
    """

    peak: int
    predicted: float
    verified: float | None


def score(metrics) -> float:
    """A run's score in the conversion's metric (``aa_tflite.metrics``; for a classifier, accuracy
    with labels, else agreement with the float model)."""
    return metrics.score


def curve(base: Baseline, measured: Measured, cfg: ConvertConfig) -> tuple[CurveSample, ...]:
    """The greedy path from int8 down to the smallest plan; ``cfg.curve_points`` of its steps,
    evenly spaced, built and verified."""
    if not measured.options or cfg.curve_points <= 0:
        return ()
    bench = base.bench
    buffers = memory_model(cfg.memory).planning_buffers(base)
    int8_score = score(bench.baseline)
    floor = planner.smallest(buffers, measured.options)
    steps = planner.greedy(buffers, measured.options, floor.peak).steps
    if not steps:
        return ()
    pick = set(np.linspace(0, len(steps) - 1, min(cfg.curve_points, len(steps))).round()
               .astype(int))
    plans, configs = {}, {}
    for k, step in enumerate(steps):
        configs[step.unit] = step.config
        if k in pick:
            plans[k] = base.expand(configs)
    # The largest plans first (they build the most corrections): the last to start are the
    # quickest, so the threads finish together. The scores do not depend on the order.
    order = sorted(plans, key=lambda k: -k)
    verified = dict(zip(order, parallel_map(
        base, lambda plan: score(bench.measure(bench.build(plan))), [plans[k] for k in order])))
    return tuple(CurveSample(step.peak, int8_score - step.predicted_loss / 100.0,
                             verified.get(k)) for k, step in enumerate(steps))
