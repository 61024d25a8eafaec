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

from aa_tflite.config import budget_kb_for
from aa_tflite.precision import precision
from aa_tflite.search import planner
from aa_tflite.search.bench import sparse_bytes
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite import memory as memory_mod
from aa_tflite.types import BudgetError, FloorTensor, MemoryMode, SiteConfig

if TYPE_CHECKING:  # pragma: no cover
    from aa_tflite.config import Budget, ConvertConfig
    from aa_tflite.search.baseline import Baseline

__all__ = ["MEMORY_MODELS", "FixedPlan", "MemoryModel", "Packed", "PackedSparse", "RealArena",
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

    def fixed_plan(self, base: Baseline, budget: Budget | None,
                   cfg: ConvertConfig | None = None) -> FixedPlan | None:
        """None if precision plans can shrink the figure. Otherwise the one plan this mode
        has (``FixedPlan``); raises ``BudgetError`` if even that is over the budget."""
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


@dataclasses.dataclass(frozen=True)
class FixedPlan:
    """The plan of a memory mode no precision shrinks: the model to write, its layout (the
    rewrites, in words), and why."""

    tflite: bytes = dataclasses.field(repr=False)
    notes: tuple[str, ...]
    layout: str = "as converted"


class RealArena(MemoryModel):
    """``"tflm"``: the arena TFLite Micro really allocates (head plus tail, the smallest it
    accepts). TFLM stores every activation in int8 and compresses no zeros, so no precision or
    threshold shrinks it; exact rewrites do (``tflite.firmware``): batch 1 and an offline memory
    plan always; a channel split, patch-based execution of the first stage, or both, only when
    the budget needs them (they add ops and work). Of the variants that fit, the one with the
    least work (``firmware.work``: MACs plus bytes written, deterministic) runs."""

    mode = MemoryMode.TFLM
    can_shrink = False
    unit_words = "KiB (TFLM arena)"

    def fixed_plan(self, base: Baseline, budget: Budget | None,
                   cfg: ConvertConfig | None = None) -> FixedPlan | None:
        from aa_tflite.tflite.firmware import firmware_model

        library = "all" if cfg is None else cfg.kernel_library
        variants = [firmware_model(base.tflite, library=library)]
        if budget is not None and variants[0].arena > budget.nbytes:
            variants += [firmware_model(base.tflite, library=library, split=split, patch=patch)
                         for split, patch in ((True, False), (False, True), (True, True))]
        fits = [v for v in variants if budget is None or v.arena <= budget.nbytes]
        stock = memory_mod.smallest_arena(base.tflite)
        if not fits:
            raise _arena_error(min(variants, key=lambda v: (v.arena, v.work)), stock, budget)
        chosen = min(fits, key=lambda v: (v.work, v.arena))
        return FixedPlan(chosen.tflite, (
            f"memory='tflm': the plan is the int8 model as TFLite Micro firmware runs it "
            f"({chosen.describe()}): arena {chosen.arena:,} B, against {stock:,} B for the stock "
            f"int8 model ({chosen.arena / stock:.2f}x). Bits and thresholds cannot shrink it: "
            "TFLM stores every activation in int8.", _costs(variants, chosen, base.tflite, stock)),
            layout=chosen.describe())

    def pick(self, packed: int, packed_sparse: int, tflm: int | None) -> int:
        return packed if tflm is None else tflm


def _costs(variants, chosen, stock_tflite: bytes, stock: int) -> str:
    """What each rewrite tried costs: arena, ops, work and LiteRT latency against stock."""
    from aa_tflite.runtime.interpreter import sample_latency_ms
    from aa_tflite.tflite.firmware import work

    base_work, base_ms = work(stock_tflite), sample_latency_ms(stock_tflite)
    rows = [f"{v.describe()}: arena {v.arena:,} B ({v.arena / stock:.2f}x stock), {v.ops} ops, "
            f"work {v.work / base_work:.2f}x, LiteRT latency "
            f"{sample_latency_ms(v.tflite) / base_ms:.2f}x (XNNPACK, 1 thread, median)"
            + (" <- chosen: the least work that fits" if v.tflite == chosen.tflite else "")
            for v in {v.tflite: v for v in variants}.values()]
    return "Rewrites tried for memory='tflm': " + "; ".join(rows) + "."


def _arena_error(best, stock: int, budget: Budget) -> BudgetError:
    """The ``BudgetError`` of a TFLM budget below every variant: the op and tensors at the
    smallest variant's peak, and the smallest arena reachable."""
    ops, infos = flatbuffer.describe(flatbuffer.read(best.tflite))
    _, layout = memory_mod.plan_tensors(best.tflite, alignment=16)
    live = memory_mod.live_bytes(best.tflite)
    scope = max(range(len(live)), key=live.__getitem__)
    where = f"op {scope - 1} ({ops[scope - 1].name})" if scope else "the model input"
    tensors = tuple(FloorTensor(
        tensor=t.index, name=infos[t.index].name.split(";")[0][-60:], shape=tuple(t.shape),
        nbytes=t.nbytes, why=f"int8 activation alive while {where} runs; TFLM stores it at 8 "
        "bits, and no rewrite here shrinks it further")
        for t in layout if t.first <= scope <= t.last)
    lines = [f"  tensor {f.tensor} `{f.name}` {list(f.shape)}: {f.nbytes:,} B" for f in tensors]
    return BudgetError(
        f"The budget of {budget.nbytes / 1024:.2f} KiB ({budget.nbytes:,} B) of TFLite Micro "
        f"arena cannot be met: the smallest arena aa_tflite reaches is {best.arena:,} B "
        f"({best.arena / 1024:.2f} KiB: {best.describe()}), against {stock:,} B for the stock "
        f"int8 model. TFLM stores every activation in int8, so bits and thresholds cannot shrink "
        f"it; its activations peak while {where} runs, holding:\n" + "\n".join(lines)
        + f"\nRaise budget_kb to at least {budget_kb_for(best.arena):.2f}, or plan "
        "with memory='packed' for a runtime that packs low-bit activations.",
        smallest_bytes=best.arena, plan={}, tensors=tensors)


MEMORY_MODELS: dict[MemoryMode, MemoryModel] = {
    MemoryMode.PACKED: Packed(),
    MemoryMode.PACKED_SPARSE: PackedSparse(),
    MemoryMode.TFLM: RealArena(),
}


def memory_model(mode: MemoryMode | str) -> MemoryModel:
    """The model of ``mode``."""
    return MEMORY_MODELS[MemoryMode(mode)]
