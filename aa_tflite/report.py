"""Human-readable pieces of reports: memory figures side by side, and the per-tensor table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aa_tflite.types import MemoryReport, TensorMemory

__all__ = ["MEMORY_NOTE", "memory_lines", "tensor_table"]

MEMORY_NOTE = ("Packed = activation peak with each tensor at its bit-width (int4 packed two per "
               "byte): real only on a runtime that packs activations. TFLM arena = what stock "
               "TFLite Micro allocates (int8 activations, plus its bookkeeping tail).")


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.2f} KiB)"


def memory_lines(m: MemoryReport) -> list[str]:
    """The memory figures of one model, one per line."""
    lines = [f"packed activation peak : {_kib(m.packed_peak)}",
             f"int8 activation peak   : {_kib(m.int8_peak)}"]
    if m.tflm is not None:
        lines.append(f"TFLM arena (real)      : {_kib(m.tflm.total)} = head {m.tflm.head:,} "
                     f"(activations) + tail {m.tflm.tail:,} (persistent)")
    lines += [f"weights                : {_kib(m.weights)}",
              f".tflite file           : {_kib(m.file_size)}"]
    return lines


def tensor_table(layout: Sequence[TensorMemory], levels: Mapping[int, int] | None = None,
                 width: int = 48) -> list[str]:
    """A markdown table of planned activation tensors."""
    levels = levels or {}
    rows = ["| # | tensor | dtype | shape | bits | levels | bytes | live | offset |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in layout:
        name = t.name if len(t.name) <= width else "…" + t.name[-(width - 1):]
        lv = levels.get(t.index, 2 ** t.bits if t.dtype in ("INT8", "UINT8", "INT4") else "-")
        rows.append(f"| {t.index} | `{name}` | {t.dtype} | {list(t.shape)} | {t.bits} | {lv} | "
                    f"{t.nbytes:,} | {t.first}-{t.last} | {t.offset:,} |")
    return rows
