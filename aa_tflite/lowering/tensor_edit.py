"""What the lowerings written per tensor share (the signed clamp and the residual offset): the
frame of their edit, their report wording, and the quantiles and subsample their fits use. No
TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from aa_tflite.precision import precision
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.tflite.kernel_math import open_model
from aa_tflite.types import AAError, Bits, SiteConfig

__all__ = ["FIT_SAMPLES", "HI_QUANTILES", "LO_QUANTILES", "TensorLowering", "edit_tensors",
           "subsample"]

# Quantiles tried for the bottom and top level of each channel's range.
LO_QUANTILES = (0.0, 0.001, 0.005, 0.02, 0.05)
HI_QUANTILES = tuple(1.0 - q for q in LO_QUANTILES)
FIT_SAMPLES = 20_000  # calibration rows a fit reads at most (a fixed subsample)
_Choice = TypeVar("_Choice")


def subsample(v: np.ndarray) -> np.ndarray:
    """At most ``FIT_SAMPLES`` rows of ``v``, evenly spaced: a fixed subsample keeps a fit fast
    and deterministic."""
    if len(v) > FIT_SAMPLES:
        v = v[np.linspace(0, len(v) - 1, FIT_SAMPLES).astype(np.int64)]
    return v


def edit_tensors(tflite: bytes, choices: Mapping[int, _Choice],
                 reach: Callable[[bytes], Mapping[int, Any]], write: Callable[..., None],
                 refusal: str) -> bytes:
    """The frame of a per-tensor lowering's ``apply``.

    Choices at 8 bits are dropped; when none is left, ``tflite`` comes back as it is. Otherwise
    each chosen tensor must be a key of ``reach(tflite)``, the model is opened, and
    ``write(model, ops, tensors, users, chosen)`` edits it, ``chosen`` being the
    ``(tensor, choice, reach(tflite)[tensor])`` triples in the order of ``choices``.

    Args:
        tflite: The model's bytes.
        choices: Tensor index -> a choice with a ``bits`` field.
        reach: The tensors the lowering reaches, by index, from the model's bytes.
        write: Writes the lowering into the unpacked model.
        refusal: The error message for a tensor ``reach`` does not list; ``{t}`` is the tensor
            and ``{known}`` the reachable ones.

    Returns:
        The edited model's bytes.

    Raises:
        AAError: A chosen tensor is not reachable (or ``write`` refuses a choice).
    """
    chosen = {int(t): c for t, c in choices.items() if int(c.bits) != 8}
    if not chosen:
        return bytes(tflite)
    graphs = reach(tflite)
    for t in chosen:
        if t not in graphs:
            raise AAError(refusal.format(t=t, known=sorted(graphs)))
    model, ops, tensors, users = open_model(tflite)
    write(model, ops, tensors, users, [(t, c, graphs[t]) for t, c in chosen.items()])
    return flatbuffer.write(model)


class TensorLowering:
    """What the signed lowerings share: their choices are written per tensor (``apply_tensors``,
    tensor index -> choice), and the report words them by ``form`` and ``how``."""

    kind = ""  # as in SiteGraph.lowering
    corrected = False
    form = ""  # e.g. "signed"
    how = ""  # what the producer and its readers do, after the producer's name

    @staticmethod
    def apply_tensors(tflite: bytes, choices: Mapping[int, Any]) -> bytes:
        raise NotImplementedError

    def apply(self, tflite: bytes, units: Mapping[str, SiteGraph],
              choices: Mapping[str, Any]) -> bytes:
        return self.apply_tensors(tflite, {units[s].tensor: c for s, c in choices.items()})

    def bits_only(self, config: SiteConfig, unit: SiteGraph) -> int:
        """``config``'s bits, for a form whose range comes from the data.

        Raises:
            AAError: ``config`` has a threshold or a clip, or is 8 bits.
        """
        if config.threshold or config.clip is not None or int(config.bits) == 8:
            raise AAError(f"{unit.name!r} is a signed tensor lowered by {self.kind}: give it bits "
                          f"below 8 only (its range comes from the data). Received: {config}")
        return int(config.bits)

    def describe(self, config: SiteConfig, unit: SiteGraph,
                 zero_point: tuple[float, int] | None) -> str:
        if config.bits == Bits.INT8 or zero_point is None:
            return "plain int8"
        p = precision(config.bits)
        return (f"{p.bits}-bit {self.form}: int8 tensor, zero point {zero_point[1]}, scale "
                f"{zero_point[0]:.4g} ({p.levels} levels, no op added); {unit.producer_op} "
                f"{self.how}")
