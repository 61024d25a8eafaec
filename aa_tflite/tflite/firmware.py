"""A model as firmware runs it on TensorFlow Lite Micro, with the rewrites that shrink TFLM's
real arena: batch 1 (``static_batch``), optionally a channel split (``channel_split``), and an
offline memory plan (``offline_plan``). Every rewrite is exact (``docs/rewrites.md``). Schema
only; TFLM's arena is measured in a child process (``memory.smallest_arena``).

Example:
    >>> fw = firmware_model(open("digits.tflite", "rb").read())  # doctest: +SKIP
    >>> fw.arena, fw.plan_saves  # doctest: +SKIP
    (6720, 0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from aa_tflite.tflite import channel_split, flatbuffer, memory, offline_plan
from aa_tflite.tflite.layout import TFLM_ALIGNMENT
from aa_tflite.tflite.static_batch import static_batch

__all__ = ["Firmware", "firmware_model"]


@dataclasses.dataclass(frozen=True)
class Firmware:
    """One rewritten model and what it costs in TFLM.

    Attributes:
        tflite: The model: batch 1, any split, any offline plan.
        arena: The smallest arena TFLM accepts for it, in bytes.
        plan_saves: Head bytes the offline plan saves against TFLM's own greedy layout.
        splits: Chunks per split conv op index (empty: no split).
        library: The kernel library the plan's in-place overlaps are proven for.
        ops: How many ops it runs (a split adds ops: the proxy for latency).
    """

    tflite: bytes = dataclasses.field(repr=False)
    arena: int
    plan_saves: int
    splits: Mapping[int, int]
    library: str
    ops: int

    def describe(self) -> str:
        """The rewrites, in words."""
        parts = ["batch 1"]
        if self.splits:
            parts.append("channel split " + ", ".join(f"op {k} into {n}"
                                                      for k, n in sorted(self.splits.items())))
        if self.plan_saves:
            parts.append(f"offline memory plan ({self.plan_saves:,} B of head saved, overlaps "
                         f"proven for {self.library} kernels)")
        return ", ".join(parts)


def firmware_model(tflite: bytes, *, library: str = "all", split: bool = False) -> Firmware:
    """``tflite`` fixed at batch 1; with ``split``, its expand -> depthwise pairs at the peak
    split by channels where that lowers TFLM's arena (``channel_split.best_split``: exact, but
    more ops); and, where it lowers TFLM's head, an offline memory plan whose in-place overlaps
    are proven safe for ``library`` (checked against the tensors' lifetimes before it is
    written).

    Args:
        tflite: A single-subgraph int8 ``.tflite`` without an offline plan.
        library: ``"all"`` (overlaps safe on TFLM's reference kernels, CMSIS-NN and ESP-NN
            alike) or one of ``offline_plan.LIBRARIES``.
        split: Try the channel split.

    Returns:
        A ``Firmware``.
    """
    offline_plan.check_library(library)
    fixed, splits = static_batch(tflite), {}
    if split:
        fixed, record = channel_split.best_split(fixed)
        splits = dict(record.splits)
    greedy, _ = memory.plan_tensors(fixed, alignment=TFLM_ALIGNMENT)
    offsets, head = offline_plan.plan_offsets(fixed, in_place="auto", library=library)
    if head < greedy:
        fixed = offline_plan.write_offline_plan(fixed, offsets, overlaps="auto", library=library)
    ops, _ = flatbuffer.describe(flatbuffer.read(fixed))
    return Firmware(tflite=fixed, arena=memory.smallest_arena(fixed),
                    plan_saves=max(greedy - head, 0), splits=splits, library=library,
                    ops=len(ops))
