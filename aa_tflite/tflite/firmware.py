"""A model as firmware runs it on TensorFlow Lite Micro, with the rewrites that shrink TFLM's
real arena: batch 1 (``static_batch``), optionally patch-based execution of the first stage
(``patches``) and a channel split (``channel_split``), and an offline memory plan
(``offline_plan``). Every rewrite is exact (``docs/rewrites.md``). Schema
only; TFLM's arena is measured in a child process (``memory.smallest_arena``).

Example:
    >>> fw = firmware_model(open("digits.tflite", "rb").read())  # doctest: +SKIP
    >>> fw.arena, fw.plan_saves  # doctest: +SKIP
    (6720, 0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from aa_tflite.tflite import channel_split, flatbuffer, memory, offline_plan, patches, reorder
from aa_tflite.tflite.layout import TFLM_ALIGNMENT
from aa_tflite.tflite.static_batch import static_batch

__all__ = ["Firmware", "firmware_model", "work"]


@dataclasses.dataclass(frozen=True)
class Firmware:
    """One rewritten model and what it costs in TFLM.

    Attributes:
        tflite: The model: batch 1, any split, any offline plan.
        arena: The smallest arena TFLM accepts for it, in bytes.
        plan_saves: Head bytes the offline plan saves against TFLM's own greedy layout.
        splits: Chunks per split conv op index (empty: no split).
        library: The kernel library the plan's in-place overlaps are proven for.
        ops: How many ops it runs (a split or patching adds ops).
        work: Its ``work`` (MACs plus bytes written): the deterministic latency model.
        patch: The split op and (rows, columns) grid of patch-based execution, or None.
        reordered: The ops run in a memory-aware order (``reorder.best_order``), not the
            converter's.
    """

    tflite: bytes = dataclasses.field(repr=False)
    arena: int
    plan_saves: int
    splits: Mapping[int, int]
    library: str
    ops: int
    work: int = 0
    patch: tuple[int, tuple[int, int]] | None = None
    reordered: bool = False

    def describe(self) -> str:
        """The rewrites, in words."""
        parts = ["batch 1"]
        if self.patch:
            parts.append(f"first stage (ops 0-{self.patch[0]}) run in "
                         f"{self.patch[1][0]}x{self.patch[1][1]} patches")
        if self.splits:
            parts.append("channel split " + ", ".join(f"op {k} into {n}"
                                                      for k, n in sorted(self.splits.items())))
        if self.reordered:
            parts.append("ops reordered")
        if self.plan_saves:
            parts.append(f"offline memory plan ({self.plan_saves:,} B of head saved, overlaps "
                         f"proven for {self.library} kernels)")
        return ", ".join(parts)


def work(tflite: bytes) -> int:
    """A deterministic latency model of ``tflite``: multiply-accumulates of its convolutions and
    fully connected layers, plus every byte each op writes (copies, padding, elementwise ops).
    It ranks rewrites of one model (patches re-compute halos, splits add concatenations); the
    benchmarks measure the real latency.

    Example:
        >>> work(open("digits.tflite", "rb").read()) > 0  # doctest: +SKIP
        True
    """
    ops, tensors = flatbuffer.describe(flatbuffer.read(tflite))
    total = 0
    for op in ops:
        out = sum(tensors[t].elements for t in op.outputs if t >= 0)
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = tensors[op.inputs[1]].shape
            per_output = int(np.prod(w[1:])) if op.name != "DEPTHWISE_CONV_2D" else w[1] * w[2]
            out *= max(per_output, 1)
        total += out
    return int(total)


def _planned(tflite: bytes, library: str) -> tuple[bytes, int]:
    """``tflite`` with an offline plan where it lowers TFLM's head, and the head bytes saved."""
    greedy, _ = memory.plan_tensors(tflite, alignment=TFLM_ALIGNMENT)
    offsets, head = offline_plan.plan_offsets(tflite, in_place="auto", library=library)
    if head >= greedy:
        return tflite, 0
    return offline_plan.write_offline_plan(tflite, offsets, overlaps="auto",
                                           library=library), greedy - head


def _rewrite(tflite: bytes, patch: bool, split: bool, measure):
    """The smallest of the requested rewrites by ``measure``: patches then a split where it still
    pays, and, when both are asked for, a split alone too (patching first can leave a split
    nothing to do, and the split alone can be smaller). Ties go to less work."""
    if not (patch or split):
        return tflite, None, {}
    tries = []
    for use_patch in ([True, False] if patch and split else [patch]):
        out, tiles, splits = tflite, None, {}
        if use_patch:
            out, record = patches.best_patches(out, measure=measure)
            tiles = (record.point.op, record.grid) if record.point else None
            arena = record.measured_after
        if split:  # its record measures the final file: no second TFLM run
            out, split_record = channel_split.best_split(out, measure=measure)
            splits, arena = dict(split_record.splits), split_record.measured_after
        tries.append((arena, work(out), len(tries), out, tiles, splits))
    return min(tries, key=lambda t: t[:3])[3:]


def firmware_model(tflite: bytes, *, library: str = "all", split: bool = False,
                   patch: bool = False) -> Firmware:
    """``tflite`` fixed at batch 1; with ``patch``, its first stage run in patches where that
    lowers TFLM's arena (``patches.best_patches``); with ``split``, its expand -> depthwise
    pairs at the peak split by channels where that lowers it (``channel_split.best_split``);
    its ops in a memory-aware order where that lowers the planned head (``reorder``); and,
    where it lowers TFLM's head, an offline memory plan whose in-place overlaps are proven
    safe for ``library`` (checked against the tensors' lifetimes before it is written). Patches
    and splits are chosen by TFLM's total arena with the plan; with both, the smaller of patches
    (plus a split where one still pays) and a split alone. All rewrites are exact; patches and
    splits add ops and cost latency.

    Args:
        tflite: A single-subgraph int8 ``.tflite`` without an offline plan.
        library: ``"all"`` (overlaps safe on TFLM's reference kernels, CMSIS-NN and ESP-NN
            alike) or one of ``offline_plan.LIBRARIES``.
        split: Try the channel split.
        patch: Try patch-based execution of the first stage.

    Returns:
        A ``Firmware``.

    Example:
        >>> fw = firmware_model(tflite, patch=True, split=True)  # doctest: +SKIP
        >>> fw.describe(), fw.arena  # doctest: +SKIP
    """
    offline_plan.check_library(library)
    fixed = static_batch(tflite)

    def measure(t: bytes) -> int:
        return memory.tflm_arena(_planned(t, library)[0]).total

    fixed, tiles, splits = _rewrite(fixed, patch, split, measure)
    order, _ = reorder.best_order(fixed, library=library)
    reordered = order != sorted(order)
    if reordered:  # strictly smaller planned head than the file's order
        fixed = reorder.reorder(fixed, order)
    fixed, saves = _planned(fixed, library)
    ops, _ = flatbuffer.describe(flatbuffer.read(fixed))
    return Firmware(tflite=fixed, arena=memory.smallest_arena(fixed), plan_saves=saves,
                    splits=splits, library=library, ops=len(ops), work=work(fixed), patch=tiles,
                    reordered=reordered)
