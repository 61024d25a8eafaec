"""The demo (``aa-tflite demo``, ``make demo``): the main job on the embedded models, in two parts.

1. **Bits** (the paper's knob): the default digits CNN planned at a few budgets, one file with one
   signature per point, switched live. These points differ in the packed figure, which is real
   only on hardware that packs low-bit activations; on stock runtimes they share one arena.
2. **What the device pays**: the fully convolutional digits model at several input sizes, one
   file, switched live. These points differ in TFLite Micro's real arena and in LiteRT latency,
   and in accuracy.

Example:
    >>> run_demo("demo_out/digits", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["SIZES", "run_demo"]

SIZES = (4, 6, 8)  # the input sizes of part 2 (the fully convolutional model is trained at them)


def run_demo(out: str, *, fractions: Sequence[float] = (0.8, 0.6, 0.4),
             sizes: Sequence[int] = SIZES, progress: bool = True) -> list[str]:
    """Runs both parts, prints their tables, and writes ``out.*`` (bits) and ``out_sizes.*``
    (input sizes).

    Args:
        out: Output prefix, e.g. ``"demo_out/digits"``.
        fractions: Part 1's budgets, as fractions of the int8 packed peak, each in (0, 1].
        sizes: Part 2's input sizes.
        progress: Show progress bars.

    Returns:
        The paths written.

    Raises:
        AAError: A fraction is out of range, or ``out`` cannot be written.
    """
    from aa_tflite.files import check_output_path
    from aa_tflite.types import AAError

    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise AAError(f"Budget fractions must be in (0, 1]. Received: {list(fractions)}")
    check_output_path(out + ".tflite")
    check_output_path(out + "_sizes.tflite")
    written = _bits(out, fractions, progress)
    return written + _sizes(out + "_sizes", sizes, progress)


def _int8_peak(model, x_cal) -> int:
    from aa_tflite.frontend.export import to_tflite
    from aa_tflite.tflite import memory

    return memory.plan_tensors(to_tflite(model, x_cal))[0]


def _bits(out: str, fractions: Sequence[float], progress: bool) -> list[str]:
    from aa_tflite.conversion import convert
    from aa_tflite.frontend.embedded import load_default
    from aa_tflite.runtime import interpreter as runtime

    model, x_cal, x_val, y_val = load_default()
    half = len(x_val) // 2
    peak = _int8_peak(model, x_cal)
    budgets = [round(f * peak / 1024, 2) for f in fractions]
    print(f"Part 1, bits. Embedded model: {model.name}, {model.count_params():,} parameters, "
          f"input {tuple(model.inputs[0].shape[1:])} (scikit-learn digits). int8 packed "
          f"activation peak {peak:,} B; budgets "
          + ", ".join(f"{f:.0%} = {b:,g} KiB" for f, b in zip(fractions, budgets, strict=True))
          + f".\nPlanning with {len(x_cal)} calibration and {half} labelled samples; "
          f"{len(x_val) - half} more are held out.\n")
    result = convert(model, budget_kb=budgets if len(budgets) > 1 else budgets[0],
                     representative_data=x_cal, eval_data=(x_val[:half], y_val[:half]),
                     progress=progress)
    files = result.save(out)
    print(result.points_markdown() if len(result.points) > 1 else result.report.to_markdown())
    print("Wrote: " + ", ".join(files))
    x_held, y_held = x_val[half:], y_val[half:]
    base = runtime.evaluate(result.baseline_tflite, x_held, y_held)
    print(f"\nHeld-out top-1 ({len(x_held)} samples the planner did not see): int8 {base:.4f}.")
    _switch(out + ".tflite", lambda size: x_held, y_held)
    arenas = {p.tflm_arena for p in result.points}
    if len(arenas) == 1:
        print(f"These points share one TFLite Micro arena ({arenas.pop():,} B) and one latency: "
              "their packed figures are real only where low-bit activations are packed.\n")
    return files


def _sizes(out: str, sizes: Sequence[int], progress: bool) -> list[str]:
    from aa_tflite.conversion import convert
    from aa_tflite.frontend.embedded import load_default
    from aa_tflite.frontend.resize import resize

    model, x_cal, x_val, y_val = load_default("digits_fcn")
    half = len(x_val) // 2
    peak = _int8_peak(model, x_cal)
    budget = math.ceil(max(sizes) ** 2 / 64 * peak / 1024 * 100) / 100  # every size fits at int8
    print(f"Part 2, what the device pays. Embedded model: {model.name}, fully convolutional, "
          f"trained at {', '.join(f'{s}x{s}' for s in sizes)} (the digits resized). One file, "
          f"one point per input size, each planned within {budget:,g} KiB.\n")
    result = convert(model, budget_kb=budget, input_sizes=list(sizes),
                     representative_data=x_cal, eval_data=(x_val[:half], y_val[:half]),
                     progress=progress)
    files = result.save(out)
    print(result.points_markdown())
    print("Wrote: " + ", ".join(files))
    x_held, y_held = x_val[half:], y_val[half:]
    _switch(out + ".tflite", lambda size: resize(x_held, size), y_held)
    arenas = sorted({p.tflm_arena for p in result.points if p.tflm_arena is not None})
    if len(arenas) > 1:
        print(f"These points differ in what the device allocates: TFLite Micro arenas from "
              f"{arenas[0]:,} to {arenas[-1]:,} B, with stock kernels.")
    return files


def _switch(path: str, inputs, y_held: np.ndarray) -> None:
    """Switches live between the file's points on one interpreter, there and back, and prints
    each one's held-out top-1 and what it costs."""
    from aa_tflite.runtime.onthefly import OperatingPoints

    points = OperatingPoints(path)
    keys = [p.key for p in points.points]
    print(f"Switching live between {len(keys)} points of {path} on one interpreter:")
    for key in [*keys, *reversed(keys)]:
        points.switch(key)
        info = points.point(key)
        acc = float(np.mean(points.run(inputs(info.input_size)).argmax(1) == y_held))
        arena = "-" if info.tflm_arena is None else f"{info.tflm_arena:,}"
        print(f"  {key:>16}: held-out top-1 {acc:.4f}, TFLM arena {arena} B, packed peak "
              f"{info.packed:,} B, {points.latency_ms(key):,.3f} ms per sample")
