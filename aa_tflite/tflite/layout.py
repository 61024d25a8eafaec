"""The TFLM-style greedy memory layout, on plain sizes and lifetimes. No import beyond the
standard library (not even the LiteRT schema), so the planner can use it.

It follows TFLite Micro's ``greedy_memory_planner.cc``: buffers are placed largest first, each at
the lowest offset that does not collide with a buffer alive at the same time.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TFLM_ALIGNMENT", "greedy_offsets"]

TFLM_ALIGNMENT = 16  # MicroArenaBufferAlignment()


def greedy_offsets(sizes: Sequence[int], first: Sequence[int], last: Sequence[int]
                   ) -> tuple[list[int], int]:
    """Places buffers like TFLM's ``GreedyMemoryPlanner``.

    Args:
        sizes: Bytes of each buffer (already aligned if alignment matters).
        first: Scope in which each buffer is created.
        last: Scope of each buffer's last use (inclusive).

    Returns:
        The offset of each buffer, and the arena size (highest end offset).

    Example:
        >>> greedy_offsets([10, 20, 5], [0, 1, 2], [1, 2, 3])
        ([20, 0, 20], 30)
    """
    n = len(sizes)
    if not (len(first) == len(last) == n):
        raise ValueError("sizes, first and last must have the same length")
    # Largest first; equal sizes keep the order they were added in (TFLM's stable bubble sort).
    order = sorted(range(n), key=lambda i: -sizes[i])
    placed: list[tuple[int, int]] = []  # (offset, id), kept sorted by offset
    offsets = [0] * n
    for i in order:
        candidate = 0
        for off, j in placed:  # in offset order: look for the first gap that fits
            if first[j] > last[i] or first[i] > last[j]:
                continue  # not alive at the same time
            if off - candidate >= sizes[i]:
                break
            candidate = max(candidate, off + sizes[j])
        offsets[i] = candidate
        # Insert after every entry with offset <= candidate (TFLM inserts after equal offsets).
        k = len(placed)
        while k > 0 and placed[k - 1][0] > candidate:
            k -= 1
        placed.insert(k, (candidate, i))
    peak = max((offsets[i] + sizes[i] for i in range(n)), default=0)
    return offsets, peak
