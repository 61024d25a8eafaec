"""The process heap while planning. No TensorFlow import.

Planning a large model allocates many arrays of 1-64 MiB on two threads at once: interpreter
arenas, the activations a correction is fitted on, the positions a clip is fitted on. glibc's
``malloc`` serves a block that large from its own mapping only above a threshold that starts at
128 KiB and rises to 32 MiB as such blocks are freed; below it, the blocks come from per-thread
heaps that fragment and are not given back. On MobileNetV2-1.0 at 224x224 that cost about 1 GB of
peak resident memory (``benchmarks.planning_scale``). ``map_large_allocations`` fixes the
threshold at ``LARGE`` bytes for the process; the bench calls it when the baseline values it
reads exceed ``LARGE_PLAN`` bytes (a small model would only pay for the extra mappings: 0.6 s
of a 3.6 s conversion of the digits CNN). ``trim`` gives freed heap back between stages.
Elsewhere than glibc both do nothing.

Example:
    >>> from aa_tflite.search import heap
    >>> heap.map_large_allocations() in (True, False)
    True
    >>> heap.trim()
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["LARGE", "LARGE_PLAN", "map_large_allocations", "trim"]

LARGE = 1 << 20  # bytes: blocks this large or larger get their own mapping
LARGE_PLAN = 64 << 20  # int8 baseline values (fitting inputs x tensors) that make a plan large
_M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


def map_large_allocations() -> bool:
    """Has glibc map every block of ``LARGE`` bytes or more on its own, and unmap it when freed
    (a fixed threshold: it no longer rises). Returns whether it took effect."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, LARGE))


def trim() -> None:
    """Gives the heap freed by a stage back to the system (glibc keeps it otherwise, and the next
    stage's peak starts from there)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
