"""The baseline stage: the int8 conversion every variant is an edit of, analysed once.

It takes the int8 ``.tflite`` (made by ``aa_tflite.frontend``), finds every unit the lowerings
reach, runs the baseline once on the data (the ``Bench``), and lays out its activations. No
TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

from aa_tflite.config import ConvertConfig
from aa_tflite.lowering import reach_all
from aa_tflite.metrics import Scorer
from aa_tflite.search import planner
from aa_tflite.search.bench import Bench, sparse_bytes
from aa_tflite.search.runtimes import probe_baseline
from aa_tflite.tflite import memory as memory_mod
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.types import SiteConfig

__all__ = ["Baseline", "Data", "baseline", "planning_units"]


@dataclasses.dataclass(frozen=True)
class Data:
    """The checked data every stage measures on.

    Attributes:
        x_cal: Representative inputs (calibration).
        x_fit: The first ``max_fit_samples`` of them: corrections and sparsity are fitted on them.
        x_eval: Inputs the loss is measured on.
        y_eval: Their integer labels, or None (the loss is then agreement with the float model);
            with several outputs, a list with one label array or None per output.
        reference: The float model's outputs on ``x_eval`` (a list with several outputs).
        scorer: What the loss is measured in (``aa_tflite.metrics``); None: the default per output.
    """

    x_cal: np.ndarray
    x_fit: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | list | None
    reference: np.ndarray | list
    scorer: Scorer | None = None


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The int8 conversion every variant is an edit of, with what the later stages read.

    Attributes:
        tflite: The int8 ``.tflite``.
        site_tensors: The user's ReLU sites -> their tensor in ``tflite`` (None if not found).
        graphs: Every site a lowering reaches, by name.
        bench: Builds and measures variants of ``tflite``.
        elements: Planned activation tensor -> elements.
        group_tensors: Every tensor of every site's group.
        buffers: The int8 layout, one buffer per activation tensor.
        sparse_buffers: The same, zero-compressed at the worst sample.
        notes: What the report says about the baseline.
        units: What the planner moves: a unit is one site, or the sites a tie
            (CONCATENATION, PACK) joins, which take one precision and one clip together.
    """

    tflite: bytes
    site_tensors: Mapping[str, int | None]
    graphs: Mapping[str, SiteGraph]
    bench: Bench
    elements: Mapping[int, int]
    group_tensors: tuple[int, ...]
    buffers: tuple[planner.Buffer, ...]
    sparse_buffers: tuple[planner.Buffer, ...]
    notes: tuple[str, ...]
    units: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def unit_of(self, site: str) -> str:
        """The planning unit a site belongs to."""
        return next((u for u, members in self.units.items() if site in members), site)

    def expand(self, configs: Mapping[str, SiteConfig]) -> dict[str, SiteConfig]:
        """Per-unit configs (the planner's) as per-site configs (the plan's)."""
        return {s: c for u, c in configs.items() for s in self.units.get(u, (u,))}

    def unit_tensors(self, unit: str) -> list[int]:
        """The planned activation tensors of a unit's sites, sorted."""
        return sorted({t for m in self.units.get(unit, (unit,)) for t in self.graphs[m].group
                       if t in self.elements})

    def tensor_bits(self, configs: Mapping[str, SiteConfig]) -> dict[int, int]:
        """Tensor index -> bits, for every tensor a plan stores below 8 bits (the one place a
        plan's per-tensor bits are computed)."""
        return {t: int(c.bits) for s, c in sorted(configs.items()) if int(c.bits) != 8
                for t in self.graphs[s].group}


def baseline(tflite: bytes, site_tensors: Mapping[str, int | None], data: Data,
             cfg: ConvertConfig, *, notes: tuple[str, ...] = (),
             bench: Callable[..., Bench] = Bench, probed: bool = False) -> Baseline:
    """Runs the int8 conversion in a child process first (unless ``probed``: the caller did),
    then analyses its sites.

    Args:
        tflite: The int8 ``.tflite``.
        site_tensors: The user's ReLU sites -> their tensor in it.
        data: The checked data.
        cfg: The options.
        notes: Notes from the stages before (the export's repairs, the data).
        bench: What builds the ``Bench``: ``Bench`` itself, or a test's subclass.
        probed: ``probe_baseline(tflite, cfg.measure_kernels)`` has passed already.
    """
    if not probed:
        probe_baseline(tflite, cfg.measure_kernels)
    graphs, reach_notes = reach_all(tflite, site_tensors)
    made = bench(tflite, graphs, x_fit=data.x_fit, x_eval=data.x_eval, y_eval=data.y_eval,
                 reference=data.reference, batch_size=cfg.batch_size, scorer=data.scorer,
                 kernels=cfg.measure_kernels.value, share_weights=cfg.share_weights)
    _, layout = memory_mod.plan_tensors(tflite)
    elements = {tm.index: math.prod(tm.shape) if tm.shape else 1 for tm in layout}
    group_tensors = tuple(sorted({t for g in graphs.values() for t in g.group if t in elements}))
    base_nz = made.nonzeros(tflite, group_tensors)
    buffers = tuple(planner.Buffer(tm.index, tm.first, tm.last, tm.nbytes) for tm in layout)
    sparse = tuple(dataclasses.replace(b, nbytes=sparse_bytes(elements[b.tensor],
                                                              base_nz[b.tensor], 8))
                   if b.tensor in base_nz else b for b in buffers)
    all_notes = [*notes, *reach_notes, _weights_note(cfg.share_weights)]
    for s, g in sorted(graphs.items()):
        all_notes += [f"{s}: {n}" for n in g.notes]
    for s, tensor in sorted(site_tensors.items()):
        if tensor is None or s not in graphs:
            all_notes.append(f"{s}: its tensor was not found in the .tflite; it stays plain int8.")
    return Baseline(tflite=tflite, site_tensors=dict(site_tensors), graphs=graphs, bench=made,
                    elements=elements, group_tensors=group_tensors, buffers=buffers,
                    sparse_buffers=sparse, notes=tuple(all_notes), units=planning_units(graphs))


def _weights_note(share: bool) -> str:
    if share:
        return ("Weights: every int8 kernel is the plain conversion's, byte for byte, at every "
                "point (share_weights=True): corrections and ranges go into filter scales and "
                "biases, so a multi-point file stores the weights once.")
    return ("Weights: corrections are folded into the int8 kernels (share_weights=False); a "
            "multi-point file stores each corrected kernel once per point.")


def planning_units(graphs: Mapping[str, SiteGraph]) -> dict[str, tuple[str, ...]]:
    """Unit name -> sites: each site alone, or its tie group named ``"a + b"``.

    Example:
        >>> planning_units({})
        {}
    """
    out: dict[str, tuple[str, ...]] = {}
    for s, g in sorted(graphs.items()):
        members = tuple(g.tie) or (s,)
        out[" + ".join(members)] = members
    return out
