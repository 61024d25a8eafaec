"""What ``budget_kb`` counts: one ``MemoryModel`` per ``MemoryMode``, in ``MEMORY_MODELS``.

A memory model says which buffers the planner lays out, what an option's tensors cost, what a
built plan's budgeted figure is, whether thresholds save anything, and whether any plan can
shrink the figure at all. Adding a memory mode is one class here and one line in
``MEMORY_MODELS`` (plus its ``MemoryMode`` member). No TensorFlow import.

Example:
    >>> MEMORY_MODELS[MemoryMode.PACKED].offers_thresholds
    False
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from aa_tflite.precision import precision
from aa_tflite.search import planner
from aa_tflite.search.bench import sparse_bytes
from aa_tflite.tflite import memory as memory_mod
from aa_tflite.types import BudgetError, MemoryMode, SiteConfig

if TYPE_CHECKING:  # pragma: no cover
    from aa_tflite.config import Budget
    from aa_tflite.search.baseline import Baseline

__all__ = ["MEMORY_MODELS", "MemoryModel", "Packed", "PackedSparse", "StockArena",
           "memory_model", "sparse_layout"]


def sparse_layout(buffers: Sequence[planner.Buffer], elements: Mapping[int, int],
                  nonzeros: Mapping[int, int], bits: Mapping[int, int]
                  ) -> tuple[planner.Buffer, ...]:
    """``buffers`` with every tensor in ``nonzeros`` at its zero-compressed size (a bitmap plus
    its non-zeros at its bits, or dense if smaller); the others as they are."""
    return tuple(dataclasses.replace(b, nbytes=sparse_bytes(
        elements[b.tensor], nonzeros[b.tensor], bits.get(b.tensor, 8)))
        if b.tensor in nonzeros else b for b in buffers)


class MemoryModel:
    """How one ``MemoryMode`` counts activation memory. The base counts every tensor packed at
    its bits (``ceil(elements * bits / 8)``); a mode overrides what it counts differently."""

    mode: MemoryMode
    offers_thresholds = False  # thresholds (more zeros) save memory under this model
    can_shrink = True  # some plan can make the figure smaller than the int8 baseline's
    unit_words = "KiB"  # how a budget in this mode is named in messages

    def planning_buffers(self, base: Baseline) -> tuple[planner.Buffer, ...]:
        """The int8 layout the planner starts from."""
        return base.buffers

    def option_bytes(self, base: Baseline, unit: str, config: SiteConfig,
                     tflite: bytes) -> dict[int, int]:
        """What each of a unit's tensors costs under ``config`` (``tflite`` is its variant)."""
        return {t: precision(config.bits).nbytes(base.elements[t])
                for t in base.unit_tensors(unit)}

    def figure(self, base: Baseline, search: planner.Search,
               configs: Mapping[str, SiteConfig], tflite: bytes) -> int:
        """The budgeted figure of a built plan: by default the search's own peak (its options
        carry every tensor of each unit)."""
        return search.peak

    def fixed_plan(self, base: Baseline, budget: Budget | None) -> str | None:
        """None if plans can shrink the figure. Otherwise the note saying why the int8 plan is
        the plan; raises ``BudgetError`` if the int8 figure is over the budget."""
        return None

    def pick(self, packed: int, packed_sparse: int, tflm: int | None) -> int:
        """This mode's figure among a report's figures."""
        return packed


class Packed(MemoryModel):
    """``"packed"``: the activation peak with every tensor at ``ceil(elements * bits / 8)``."""

    mode = MemoryMode.PACKED


class PackedSparse(MemoryModel):
    """``"packed+sparse"``: post-ReLU tensors zero-compressed, at the worst sample."""

    mode = MemoryMode.PACKED_SPARSE
    offers_thresholds = True
    unit_words = "KiB (packed+sparse)"

    def planning_buffers(self, base: Baseline) -> tuple[planner.Buffer, ...]:
        return base.sparse_buffers

    def option_bytes(self, base: Baseline, unit: str, config: SiteConfig,
                     tflite: bytes) -> dict[int, int]:
        group = base.unit_tensors(unit)
        nz = base.bench.nonzeros(tflite, group)
        return {t: sparse_bytes(base.elements[t], nz[t], int(config.bits)) for t in group}

    def figure(self, base: Baseline, search: planner.Search,
               configs: Mapping[str, SiteConfig], tflite: bytes) -> int:
        nz = base.bench.nonzeros(tflite, base.group_tensors)
        return planner.peak(sparse_layout(base.buffers, base.elements, nz,
                                          base.tensor_bits(configs)))

    def pick(self, packed: int, packed_sparse: int, tflm: int | None) -> int:
        return packed_sparse


class StockArena(MemoryModel):
    """``"tflm"``: the arena stock TFLite Micro allocates. It stores every activation in int8
    and compresses no zeros, so no precision or threshold shrinks it."""

    mode = MemoryMode.TFLM
    can_shrink = False

    def fixed_plan(self, base: Baseline, budget: Budget | None) -> str | None:
        arena = memory_mod.tflm_arena(base.tflite)
        if budget is not None and arena.total > budget.nbytes:
            raise BudgetError(
                f"memory='tflm' means the arena stock TFLite Micro allocates, {arena.total:,} B "
                f"({arena.total / 1024:.2f} KiB) for this model's int8 baseline. AA-ReLU cannot "
                "shrink it: TFLM stores 4-bit activations in int8 tensors and does not compress "
                "zeros. Raise budget_kb, or plan with memory='packed' for a runtime that packs.",
                smallest_bytes=arena.total, plan={})
        return ("memory='tflm': the int8 baseline already fits, and no AA option can shrink the "
                "TFLM arena, so the plan is the plain int8 model.")

    def pick(self, packed: int, packed_sparse: int, tflm: int | None) -> int:
        return packed if tflm is None else tflm


MEMORY_MODELS: dict[MemoryMode, MemoryModel] = {
    MemoryMode.PACKED: Packed(),
    MemoryMode.PACKED_SPARSE: PackedSparse(),
    MemoryMode.TFLM: StockArena(),
}


def memory_model(mode: MemoryMode | str) -> MemoryModel:
    """The model of ``mode``."""
    return MEMORY_MODELS[MemoryMode(mode)]
