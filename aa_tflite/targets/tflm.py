"""TensorFlow Lite Micro: what a firmware build needs. No TensorFlow import.

``export_tflm`` writes one single-subgraph ``.tflite`` per operating point (fixed at batch 1, its
shape ops folded: ``tflite.static_batch``), a C++ source with each
model as a byte array, and a header with the arena size to reserve and the op resolver entries
the models need.
"""

from __future__ import annotations

import math
import os
import re

from aa_tflite.targets import TargetExport
from aa_tflite.targets.common import ident, point_files, write_files
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.firmware import firmware_model
from aa_tflite.types import AAError

__all__ = ["TFLM_MARGIN_FRACTION", "TFLM_MARGIN_MIN", "export", "export_tflm", "resolver_entries"]

# The arena is measured by TFLM's host build (64-bit pointers), which needs more persistent
# memory than a 32-bit microcontroller; the margin covers allocator differences between builds.
TFLM_MARGIN_FRACTION = 0.05
TFLM_MARGIN_MIN = 1024


def resolver_entries(tflite: bytes) -> list[str]:
    """The ``MicroMutableOpResolver`` methods a model's ops need, sorted.

    Example:
        >>> resolver_entries(tflite)  # doctest: +SKIP
        ['AddConv2D', 'AddFullyConnected', 'AddMaxPool2D', 'AddReshape']

    Raises:
        AAError: An op has no TFLite Micro resolver entry (a custom op, or one TFLM lacks).
    """
    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    names = set()
    for op in ops:
        if op.name.startswith("CUSTOM:") or op.name.startswith("BUILTIN_"):
            raise AAError(f"Op {op.name} has no TFLite Micro resolver entry; TFLM cannot run "
                          "this model as it is.")
        names.add("Add" + "".join(part.upper() if part[:1].isdigit() else part.capitalize()
                                  for part in op.name.split("_")))  # CONV_2D -> AddConv2D
    return sorted(names)


def _camel(text: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9A-Za-z]+", text) if p)


def _c_array(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 12]) for i in range(0, len(data), 12)]
    body = ",\n  ".join(rows)
    return (f"alignas(16) const unsigned char {name}[] = {{\n  {body}\n}};\n"
            f"const unsigned int {name}_len = {len(data)};\n")


def _arena(measured: dict[str, int]) -> tuple[int, int, int]:
    """``(arena constant, largest measured arena, margin)``: the largest arena plus
    ``max(5%, 1 KiB)``, rounded up to 16 bytes."""
    worst = max(measured.values())
    margin = max(TFLM_MARGIN_MIN, math.ceil(worst * TFLM_MARGIN_FRACTION))
    return 16 * math.ceil((worst + margin) / 16), worst, margin


def _switch(camel: str, count: int) -> list[str]:
    """The header's point table and ``SelectNamePoint``: every point's model runs in the one
    ``kNameArenaSize`` arena, so firmware changes points by rebuilding its interpreter there."""
    return [
        "", "// The operating points, in the file's order: switch between them at run time in",
        f"// the one arena of k{camel}ArenaSize bytes.",
        f"constexpr int k{camel}PointCount = {count};",
        f"struct {camel}Point {{",
        "  const char* key;              // the point's key (its signature in the .tflite)",
        "  const unsigned char* model;   // its flatbuffer (pass to tflite::GetModel)",
        "  unsigned int model_len;",
        "  size_t arena;                 // the arena TFLM measured for it (<= the constant)",
        "};",
        f"extern const {camel}Point k{camel}Points[k{camel}PointCount];", "",
        "// Builds the interpreter for `point` in `storage` (room for one Interpreter), in the",
        "// shared arena, after destroying `current` (the previous point's, or nullptr). The",
        "// arena and the resolver are reused: every point fits the arena, and the resolver",
        "// registers every point's kernels. Returns nullptr for a point out of range (and keeps",
        "// `current`). Call AllocateTensors() on the result. For example:",
        "//   alignas(16) static uint8_t arena[k" + camel + "ArenaSize];",
        "//   alignas(tflite::MicroInterpreter) static uint8_t storage[",
        "//       sizeof(tflite::MicroInterpreter)];",
        "//   auto* interp = Select" + camel + "Point<tflite::MicroInterpreter>(",
        "//       point, storage, interp, tflite::GetModel, resolver, arena);",
        "template <typename Interpreter, typename Resolver, typename GetModel>",
        f"Interpreter* Select{camel}Point(int point, void* storage, Interpreter* current,",
        "                                GetModel get_model, const Resolver& resolver,",
        "                                unsigned char* arena) {",
        f"  if (point < 0 || point >= k{camel}PointCount) return nullptr;",
        "  if (current != nullptr) current->~Interpreter();",
        f"  return new (storage) Interpreter(get_model(k{camel}Points[point].model), resolver,",
        f"                                   arena, k{camel}ArenaSize);",
        "}"]


def _said(built: dict, arrays: dict[str, str], arena: int, ops: list[str]) -> list[str]:
    """What ``export --target tflm`` prints: each point's arena and rewrites, the constant."""
    lines = [f"point {k}: TFLM arena {fw.arena:,} B (measured; {fw.describe()})"
             + (f", offline plan saves {fw.plan_saves:,} B" if fw.plan_saves else "")
             + f", C array {arrays[k]}" for k, fw in built.items()]
    return [*lines, f"Arena constant: {arena:,} B (largest measured + margin). Op resolver "
                    f"entries ({len(ops)}): {', '.join(ops)}."]


def _source(note: str, stem: str, camel: str, points: dict[str, bytes], arrays: dict[str, str],
            measured: dict[str, int]) -> str:
    """The ``NAME_model_data.cc`` text: each model as an aligned array, then the point table."""
    table = (f"const {camel}Point k{camel}Points[k{camel}PointCount] = {{\n"
             + "".join(f'  {{"{k}", {arrays[k]}, {len(b)}, {measured[k]}}},\n'
                       for k, b in points.items()) + "};\n")
    return (note + f'#include "{stem}_model_data.h"\n\n'
            + "\n".join(_c_array(arrays[k], b) for k, b in points.items()) + "\n" + table)


def _header(note: str, stem: str, camel: str, measured: dict[str, int], arrays: dict[str, str],
            ops: list[str]) -> str:
    """The ``NAME_model_data.h`` text: the arena constant, the arrays and ``RegisterNameOps``."""
    arena, worst, margin = _arena(measured)
    guard = f"{stem.upper()}_MODEL_DATA_H_"
    lines = [note, f"#ifndef {guard}", f"#define {guard}", "", "#include <cstddef>",
             "#include <new>", "",
             "// The TFLite Micro arena to reserve for any model below: the largest arena TFLM",
             f"// measured for them ({worst} B, host build) plus a margin of {margin} B, "
             "rounded up to 16.",
             f"constexpr size_t k{camel}ArenaSize = {arena};", ""]
    for k in arrays:
        lines += [f"// Operating point {k}: TFLM arena {measured[k]} B.",
                  f"extern const unsigned char {arrays[k]}[];",
                  f"extern const unsigned int {arrays[k]}_len;"]
    lines += _switch(camel, len(arrays))
    lines += ["", f"// The kernels these models use: pass a "
              f"tflite::MicroMutableOpResolver<k{camel}OpCount>.",
              f"constexpr int k{camel}OpCount = {len(ops)};",
              "template <typename Resolver>",
              f"bool Register{camel}Ops(Resolver& resolver) {{",
              "  // Each Add*() returns kTfLiteOk (0) on success.",
              "  return " + "\n      && ".join(f"static_cast<int>(resolver.{op}()) == 0"
                                               for op in ops) + ";",
              "}", "", f"#endif  // {guard}", ""]
    return "\n".join(lines)


def export_tflm(tflite: bytes, out_dir: str | os.PathLike, *, name: str = "model",
                source: str = "", library: str = "all", split: bool = False,
                patch: bool = False) -> TargetExport:
    """Writes a TFLite Micro build's inputs for every operating point of ``tflite``.

    Per point, ``NAME_KEY.tflite`` (one subgraph, as ``firmware_model`` makes it); then
    ``NAME_model_data.cc`` (each model as an aligned byte array) and ``NAME_model_data.h``:
    ``kNameArenaSize`` (the largest smallest-arena TFLM accepts for the points, plus
    ``max(5%, 1 KiB)``, rounded up to 16), ``RegisterNameOps(resolver)`` (exactly the kernels
    the models use, so the firmware links only those), and the point table ``kNamePoints``
    (key, model, measured arena) with ``SelectNamePoint``, which rebuilds the interpreter for
    another point in the same arena: firmware switches points at run time in one arena.

    Example:
        >>> export_tflm(open("out/digits.tflite", "rb").read(), "firmware/model",
        ...             name="digits")  # doctest: +SKIP

    Args:
        tflite: A ``.tflite`` written by ``convert`` (one point or several).
        out_dir: Folder to write into (created if needed). Files are written atomically.
        name: Stem for the files and the C identifiers.
        source: Where the model came from, for the generated files' header comment.
        library: The kernel library the firmware links, for the offline plan's overlaps:
            ``"all"`` (default: safe for TFLM's reference kernels, CMSIS-NN and ESP-NN alike)
            or one of ``offline_plan.LIBRARIES``, which may allow more.
        split: Split expand -> depthwise pairs by channels where TFLM's arena drops (bit-exact;
            each chunk adds ops, so the model runs slower). Defaults to False.
        patch: Run the first stage in patches where TFLM's arena drops (bit-exact; halos are
            computed more than once, so the model runs slower). Defaults to False.

    Returns:
        An ``TargetExport``: per point ``file`` (its ``.tflite``), ``tflm_arena`` (bytes, measured)
        and ``c_array`` (the C array's name); ``info`` has ``arena_size`` (the
        ``...ArenaSize`` constant) and ``ops`` (the op resolver methods, sorted).

    Raises:
        AAError: TFLM cannot allocate a point, or an op has no TFLM kernel.
    """
    stem, camel = ident(name), _camel(name) or "Model"
    built = {k: firmware_model(b, library=library, split=split, patch=patch)
             for k, b in point_files(tflite).items()}
    points = {k: fw.tflite for k, fw in built.items()}
    measured = {k: fw.arena for k, fw in built.items()}
    arena = _arena(measured)[0]
    ops = sorted({op for b in points.values() for op in resolver_entries(b)})
    arrays = {k: f"g_{stem}_{ident(k)}" for k in points}
    models = {k: f"{stem}_{ident(k)}.tflite" if len(points) > 1 else f"{stem}.tflite"
              for k in points}
    note = f"// Generated by aa_tflite from {source or 'a .tflite'}. Do not edit.\n"
    written = write_files(out_dir, {
        **{models[k]: b for k, b in points.items()},
        f"{stem}_model_data.h": _header(note, stem, camel, measured, arrays, ops),
        f"{stem}_model_data.cc": _source(note, stem, camel, points, arrays, measured)})
    lines = _said(built, arrays, arena, ops)
    return TargetExport("tflm", written, {
        k: {"file": written[i], "tflm_arena": measured[k], "c_array": arrays[k],
            "plan_saves": built[k].plan_saves}
        for i, k in enumerate(points)}, {"arena_size": arena, "ops": tuple(ops)}, tuple(lines))


def export(tflite: bytes, out: str | os.PathLike, *, name: str = "model", source: str = "",
           samples=None, library: str = "all", split: bool = False,
           patch: bool = False) -> TargetExport:
    """The ``Target`` form of ``export_tflm`` (``samples`` is not used)."""
    return export_tflm(tflite, out, name=name, source=source, library=library, split=split,
                       patch=patch)
