"""Lowerings (schema only): each writes one class of activation tensor below 8 bits by editing an
int8 ``.tflite``, with no extra op and no extra tensor.

A lowering is an object with the ``LoweringForm`` protocol, and ``LOWERINGS`` lists them in the
order their edits are written: ReLU outputs (``relu``), then signed tensors under a clamp
(``signed``), then signed tensors that reach a residual ``ADD`` (``offset``, then ``stream``,
which divides whole residual streams and so must be written last). A planning unit
(``SiteGraph``) names its lowering by ``kind`` in ``SiteGraph.lowering``. Adding a lowering is one
module with one such class, plus its line in ``LOWERINGS``.

Example:
    >>> [form.kind for form in LOWERINGS]
    ['relu', 'signed', 'offset', 'stream']
    >>> graphs, notes = reach_all(tflite, exported.site_tensors)  # doctest: +SKIP
    >>> lowering_of(graphs["conv1_relu"]).kind  # doctest: +SKIP
    'relu'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aa_tflite.lowering.offset import ResidualOffset
from aa_tflite.lowering.relu import ReluZeroPoint
from aa_tflite.lowering.signed import SignedClamp
from aa_tflite.lowering.stream import ResidualStream
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.types import AAError, SiteConfig

__all__ = ["LOWERINGS", "LoweringForm", "lowering_of", "reach_all"]


class LoweringForm(Protocol):
    """One zero-cost lowering: which tensors it reaches, how it fits a config to the data, how it
    writes its choices into a ``.tflite``, and how the report words it.

    Attributes:
        kind: Its name, as in ``SiteGraph.lowering`` of the units it reaches.
        corrected: Its choices are written first, one unit at a time, each unit's consumer
            corrected towards the baseline (``Bench.build``); its choices then carry a
            ``correction`` field. Only the ReLU lowering is.
    """

    kind: str
    corrected: bool

    def reach(self, tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], dict[int, str]]:
        """The units it lowers in ``tflite`` (by name), and, by tensor, why each tensor it looked
        at and cannot lower stays int8 (a note for the report)."""
        ...

    def fit(self, values: Callable[..., Any], config: SiteConfig, unit: SiteGraph, *,
            per_channel: bool = False) -> Any:
        """The choice that writes ``config`` at ``unit``. ``values()`` gives the unit's baseline
        calibration values (channels on the last axis); it is called only when the choice
        depends on the data. ``values(stored=True)`` gives them as stored (a
        ``tflite.levels.Stored``) where the unit is one int8 tensor, else as floats.
        ``per_channel`` asks for per-channel ranges where the unit allows.

        Raises:
            AAError: The lowering cannot write ``config``.
        """
        ...

    def apply(self, tflite: bytes, units: Mapping[str, SiteGraph],
              choices: Mapping[str, Any]) -> bytes:
        """``tflite`` with the choices (unit name -> ``fit``'s result) written in."""
        ...

    def describe(self, config: SiteConfig, unit: SiteGraph,
                 zero_point: tuple[float, int] | None) -> str:
        """How ``config`` was written at ``unit``, in words for the report; ``zero_point`` is the
        unit tensor's ``(scale, zero point)`` in the written model."""
        ...


LOWERINGS: tuple[LoweringForm, ...] = (ReluZeroPoint(), SignedClamp(), ResidualOffset(),
                                       ResidualStream())
_BY_KIND = {form.kind: form for form in LOWERINGS}


def lowering_of(unit: SiteGraph) -> LoweringForm:
    """The lowering that writes ``unit``.

    Raises:
        AAError: No lowering has the unit's kind.
    """
    form = _BY_KIND.get(unit.lowering)
    if form is None:
        raise AAError(f"Unit {unit.name!r} names lowering {unit.lowering!r}; the lowerings are "
                      f"{sorted(_BY_KIND)}.")
    return form


def reach_all(tflite: bytes, site_tensors: Mapping[str, int | None]
              ) -> tuple[dict[str, SiteGraph], list[str]]:
    """Every unit any lowering reaches, and why the tensors none reaches stay int8.

    Args:
        tflite: The int8 model's bytes.
        site_tensors: The ReLU sites' tensors, by site name (``Exported.site_tensors``).

    Returns:
        Unit name -> ``SiteGraph``, the lowerings' units in ``LOWERINGS`` order; and the notes
        of the tensors a lowering looked at and none reaches, in the same order.
    """
    reached = [form.reach(tflite, site_tensors) for form in LOWERINGS]
    covered = {g.tensor for units, _ in reached for g in units.values()}
    graphs: dict[str, SiteGraph] = {}
    notes: list[str] = []
    for units, unreached in reached:
        graphs.update(units)
        notes += [note for t, note in unreached.items() if t not in covered]
    return graphs, notes
