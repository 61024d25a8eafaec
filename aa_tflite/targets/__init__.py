"""Where a ``.tflite`` ships: one ``Target`` per place, all in ``TARGETS``.

A target names the kernels it runs (``convert(target=...)`` measures every loss on them) and
knows how to write what its build needs (``aa-tflite export --target NAME``). Every export
returns one kind of record, ``TargetExport``.

Adding a target is one module in this package, defining
``export(tflite, out, *, name="model", source="", samples=None) -> TargetExport``, and one line in
``TARGETS``. The module is imported when its export runs, so ``import aa_tflite.targets`` costs
nothing beyond ``aa_tflite.types``.

Example:
    >>> from aa_tflite.targets import TARGETS, kernels_for
    >>> kernels_for("android").value
    'xnnpack'
    >>> TARGETS["tflm"].export(tflite, "firmware/model", name="digits")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import types
from collections.abc import Mapping
from typing import Any

from aa_tflite.types import AAError, Kernels

__all__ = ["TARGETS", "TargetExport", "Target", "kernels_for"]


@dataclasses.dataclass(frozen=True)
class TargetExport:
    """What a target's export wrote: the same record for every target.

    Attributes:
        target: The target's name (a key of ``TARGETS``).
        files: The paths written, in order.
        points: Point key -> what the export found for that point, by name; the target's
            module documents its names (``tflm``: ``file``, ``tflm_arena``, ``c_array``).
            In the file's order; read-only.
        info: What holds for the whole export, by name (``tflm``: ``arena_size``, ``ops``);
            read-only.
        lines: What ``aa-tflite export`` prints, one line each (without the ``Wrote:`` line).
    """

    target: str
    files: tuple[str, ...]
    points: Mapping[str, Mapping[str, Any]]
    info: Mapping[str, Any]
    lines: tuple[str, ...]

    def __post_init__(self) -> None:
        frozen = {k: types.MappingProxyType(dict(v)) for k, v in self.points.items()}
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "points", types.MappingProxyType(frozen))
        object.__setattr__(self, "info", types.MappingProxyType(dict(self.info)))
        object.__setattr__(self, "lines", tuple(self.lines))


@dataclasses.dataclass(frozen=True)
class Target:
    """A place a ``.tflite`` runs.

    Attributes:
        name: Its name, as ``--target`` takes it.
        kernels: The kernels it runs, which ``convert(target=name)`` measures on.
        description: One line: what ``export`` writes for it.
        module: The module (in this package) whose ``export`` writes its files.
    """

    name: str
    kernels: Kernels
    description: str
    module: str

    def export(self, tflite: bytes, out: str | os.PathLike, **options: Any) -> TargetExport:
        """Writes what this target's build needs from ``tflite`` into the folder ``out``.

        Args:
            tflite: A ``.tflite`` written by ``convert`` (one point or several).
            out: Folder to write into (created if needed).
            **options: ``name`` (stem of the files and C names), ``source`` (where the model
                came from, for generated comments), ``samples`` (``(x, y)`` sample inputs and
                labels, or None for the defaults); each target uses those it needs.

        Returns:
            An ``TargetExport``.
        """
        return importlib.import_module(self.module).export(tflite, out, **options)


def _target(name: str, kernels: Kernels, description: str) -> tuple[str, Target]:
    return name, Target(name, kernels, description, f"{__name__}.{name}")


# The registry: one line per target. Its module is aa_tflite.targets.<name>.
TARGETS: dict[str, Target] = dict([
    _target("android", Kernels.XNNPACK, "the Android demo app's assets: the model, its metadata, "
            "labels and sample inputs"),
    _target("edgetpu", Kernels.BUILTIN, "one static-shape file per point, checked against the "
            "Edge TPU's documented constraints (compiled if edgetpu_compiler is installed)"),
    _target("pi", Kernels.XNNPACK, "for tflite-runtime: one single-subgraph file per point, and "
            "the multi-point file for aa_tflite.runtime.OperatingPoints"),
    _target("tflm", Kernels.TFLM, "one .tflite per point, a C++ byte-array source and a header "
            "with the arena size and the op resolver entries"),
    _target("web", Kernels.XNNPACK, "the browser demo's assets: the model with float32 I/O and "
            "a static batch, its metadata, labels and sample inputs"),
])


def kernels_for(target: str | None) -> Kernels:
    """The kernels ``target`` runs: builtin when no target is named.

    Example:
        >>> kernels_for(None).value, kernels_for("tflm").value
        ('builtin', 'tflm')

    Raises:
        AAError: ``target`` is not a key of ``TARGETS``; the message lists them.
    """
    if target is None:
        return Kernels.BUILTIN
    if not isinstance(target, str) or target not in TARGETS:
        raise AAError(f"target must be one of {sorted(TARGETS)} (or None). Received: "
                      f"target={target!r}")
    return TARGETS[target].kernels
