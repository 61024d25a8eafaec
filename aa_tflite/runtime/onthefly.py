"""Run a multi-point ``.tflite`` and switch its operating points at run time.

This module imports neither TensorFlow nor the LiteRT schema: it runs on a Raspberry Pi or Coral
host with only ``tflite-runtime`` and numpy, as well as with ``ai-edge-litert``. The points and
their figures come from the file's own ``aa_tflite`` metadata, read here with a small flatbuffer
reader.

Example:
    >>> from aa_tflite.runtime.onthefly import OperatingPoints
    >>> points = OperatingPoints("out/digits.tflite")  # doctest: +SKIP
    >>> point = points.select(budget_kb=2.0)  # doctest: +SKIP
    >>> probs = points.run(x, point=point.key)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Any

import numpy as np

from aa_tflite.runtime.interpreter import (
    check_input_shape,
    dequantize,
    make_interpreter,
    median_latency_ms,
    quantize,
)
from aa_tflite.types import AAError, Kernels

__all__ = ["OperatingPoints", "PointInfo", "PointsError", "file_points"]

_NAME = "aa_tflite"


class PointsError(AAError):
    """A file or a request the run-time API cannot serve; the message says what to do."""


# --- a minimal flatbuffer reader: Model.buffers / Model.metadata only -----------------------


def _u32(b: bytes, at: int) -> int:
    return struct.unpack_from("<I", b, at)[0]


def _field(b: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the table at ``table``, or None if absent."""
    vtable = table - struct.unpack_from("<i", b, table)[0]
    size = struct.unpack_from("<H", b, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    off = struct.unpack_from("<H", b, vtable + 4 + 2 * index)[0]
    return table + off if off else None


def _vector(b: bytes, at: int) -> tuple[int, int]:
    """(start, length) of the vector referenced at ``at``."""
    start = at + _u32(b, at)
    return start + 4, _u32(b, start)


def _tables(b: bytes, at: int | None) -> list[int]:
    if at is None:
        return []
    start, n = _vector(b, at)
    return [start + 4 * k + _u32(b, start + 4 * k) for k in range(n)]


def _raw_metadata(data: bytes) -> bytes | None:
    """The bytes of the ``aa_tflite`` metadata buffer, or None."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise PointsError("Expected a .tflite file (file identifier 'TFL3').")
    try:
        model = _u32(data, 0)
        buffers = _tables(data, _field(data, model, 4))
        for entry in _tables(data, _field(data, model, 6)):
            name_at = _field(data, entry, 0)
            if name_at is None:
                continue
            start, n = _vector(data, name_at)
            if data[start:start + n].decode("utf-8", "replace") != _NAME:
                continue
            at = _field(data, entry, 1)
            index = 0 if at is None else _u32(data, at)
            buf = buffers[index]
            data_at = _field(data, buf, 0)
            if data_at is not None:
                start, n = _vector(data, data_at)
                return bytes(data[start:start + n])
            off_at, size_at = _field(data, buf, 1), _field(data, buf, 2)
            if off_at is not None and size_at is not None:  # a >2 GB file's external buffer
                off, size = (struct.unpack_from("<Q", data, a)[0] for a in (off_at, size_at))
                return bytes(data[off:off + size])
            return None
    except (struct.error, IndexError) as e:
        raise PointsError("This .tflite is damaged (its metadata cannot be read). Convert the "
                          "model again.") from e
    return None


# --- points ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PointInfo:
    """One operating point as the file describes it.

    Attributes:
        key: Its signature key.
        budget_kb: The budget it was planned for (KiB), if known.
        input_size: Its input size, or None for the model's own.
        packed: Packed activation peak in bytes (real on a runtime that packs low-bit tensors).
        packed_sparse: Packed+sparse peak in bytes.
        tflm_arena: The stock TFLite Micro arena in bytes, if measured.
        weights: Bytes of constant data.
        score: The measured score (``metric``) on the data the planner was given.
        metric: What ``score`` is.
        low_bit_tensors: How many activation tensors are below 8 bits.
        layout: The graph's layout: ``"as converted"``, or the TFLite Micro firmware rewrites
            (batch 1, patches, a channel split, an offline memory plan) a ``memory="tflm"``
            point was planned with.
    """

    key: str
    budget_kb: float | None = None
    input_size: int | None = None
    packed: int | None = None
    packed_sparse: int | None = None
    tflm_arena: int | None = None
    weights: int | None = None
    score: float | None = None
    metric: str | None = None
    low_bit_tensors: int = 0
    layout: str = "as converted"


def file_points(data: bytes) -> list[PointInfo]:
    """The operating points a ``.tflite``'s ``aa_tflite`` metadata lists (empty if it has none).

    Example:
        >>> [p.key for p in file_points(open("out/digits.tflite", "rb").read())]  # doctest: +SKIP
        ['kib2p5', 'kib1p8', 'kib1p2']
    """
    raw = _raw_metadata(bytes(data))
    if raw is None:
        return []
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PointsError("The file's aa_tflite metadata is not valid JSON; convert the model "
                          "again.") from e
    out = []
    for p in doc.get("points", []):
        mem, scores = p.get("memory", {}), p.get("scores", {})
        out.append(PointInfo(
            key=p["signature"], budget_kb=p.get("budget_kb"), input_size=p.get("input_size"),
            packed=mem.get("packed_peak"), packed_sparse=mem.get("packed_sparse_peak"),
            tflm_arena=mem.get("tflm_arena"), weights=mem.get("weights"),
            score=scores.get("planned"), metric=scores.get("metric"),
            low_bit_tensors=len(p.get("tensor_bits", {})),
            layout=p.get("layout") or "as converted"))
    return out


class OperatingPoints:
    """A multi-point ``.tflite`` on one interpreter, run at any of its points.

    Every point is a signature of the file. ``run`` runs inputs on a point; the next call may use
    another point, in any order, and gives the same outputs as a fresh interpreter would.

    Memory: LiteRT allocates a point's tensors (its own arena) the first time it runs, and keeps
    them until this object is dropped; there is no API to release one. Each point used therefore
    adds its arena to the process; points never run cost nothing. The file's constants are
    shared by all points. ``benchmarks/points.py`` measures the resident-memory cost per point.

    Args:
        model: Path to the ``.tflite``, or its bytes.
        num_threads: Interpreter threads (None: the runtime's default).
        kernels: ``Kernels.XNNPACK``, the runtime's default (XNNPACK delegate), as apps run it;
            or ``Kernels.BUILTIN``, its builtin kernels without delegates (what ``convert``
            measures on when no target or kernels are named).

    Example:
        >>> points = OperatingPoints("out/digits.tflite")  # doctest: +SKIP
        >>> [p.key for p in points.points]  # doctest: +SKIP
        ['kib2p5', 'kib1p8', 'kib1p2']
        >>> points.run(x, point="kib1p2").argmax(-1)  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike | bytes, *, num_threads: int | None = None,
                 kernels: Kernels | str = Kernels.XNNPACK):
        if kernels not in (Kernels.XNNPACK, Kernels.BUILTIN):
            raise PointsError(f"kernels must be {Kernels.XNNPACK.value!r} or "
                              f"{Kernels.BUILTIN.value!r}. Received: {kernels!r}")
        if isinstance(model, (bytes, bytearray, memoryview)):
            data = bytes(model)
        else:
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise PointsError(f"No such file: {path!r}. Give the path of a .tflite that "
                                  "aa_tflite.convert wrote (or its bytes).")
            with open(path, "rb") as f:
                data = f.read()
        described = {p.key: p for p in file_points(data)}
        self._interp = make_interpreter(data, kernels, num_threads=num_threads)
        keys = list(self._interp.get_signature_list())
        if not keys:
            raise PointsError("This .tflite has no signatures, so it has no points to switch "
                              "between. Convert with a list of budgets, e.g. budget_kb=[6, 4, 3].")
        self._points = [described.get(k, PointInfo(k)) for k in keys]
        self._runners: dict[str, Any] = {}
        self._latency: dict[str, float] = {}
        self.current = keys[0]

    @property
    def points(self) -> list[PointInfo]:
        """The points, in the file's order."""
        return list(self._points)

    def point(self, key: str) -> PointInfo:
        """The point named ``key``; a ``PointsError`` lists the keys if there is none."""
        for p in self._points:
            if p.key == key:
                return p
        raise PointsError(f"No point {key!r} in this file. Its points: "
                          f"{[p.key for p in self._points]}.")

    def _runner(self, key: str) -> Any:
        self.point(key)
        if key not in self._runners:
            self._runners[key] = self._interp.get_signature_runner(key)
        return self._runners[key]

    def switch(self, key: str) -> None:
        """Makes ``key`` the point ``run`` uses when no point is named."""
        self.point(key)
        self.current = key

    def run(self, x: np.ndarray, *, point: str | None = None) -> np.ndarray:
        """Runs float inputs ``x`` (a batch, ``(N, *input_shape)``) on a point; returns float
        outputs ``(N, ...)``. Inputs are quantized and outputs dequantized as the file says.

        Args:
            x: Inputs in the model's float domain.
            point: The point's key; defaults to ``current``.
        """
        key = self.current if point is None else point
        runner = self._runner(key)
        (name, detail), = runner.get_input_details().items()
        (out_name, out_detail), = runner.get_output_details().items()
        x = np.asarray(x, np.float32)
        check_input_shape(x, detail, what=f"point {key!r}", error=PointsError)
        outs = []
        for sample in x:
            q = quantize(sample[None], detail)
            raw = runner(**{name: q})[out_name]
            outs.append(dequantize(raw, out_detail))
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def latency_ms(self, key: str, *, repeats: int = 20) -> float:
        """Median time of one single-sample run of point ``key`` on this device, in ms."""
        if key not in self._latency:
            runner = self._runner(key)
            (name, detail), = runner.get_input_details().items()
            q = np.zeros([1, *[int(d) for d in detail["shape"][1:]]], detail["dtype"])
            self._latency[key] = median_latency_ms(lambda: runner(**{name: q}), repeats=repeats)
        return self._latency[key]

    def select(self, *, budget_kb: float | None = None, max_latency_ms: float | None = None,
               min_score: float | None = None, tflm_kb: float | None = None) -> PointInfo:
        """The best point that fits: the highest score among the points whose packed peak is
        within ``budget_kb``, whose real TFLite Micro arena (as measured when the file was
        written) is within ``tflm_kb``, whose latency measured here is within
        ``max_latency_ms``, and whose score is at least ``min_score``. Ties go to the smaller
        packed peak.

        Raises:
            PointsError: No point fits; the message gives each point's figures.
        """
        fits = []
        for p in self._points:
            if budget_kb is not None and (p.packed is None or p.packed > budget_kb * 1024):
                continue
            if min_score is not None and (p.score is None or p.score < min_score):
                continue
            if tflm_kb is not None and (p.tflm_arena is None or p.tflm_arena > tflm_kb * 1024):
                continue
            if max_latency_ms is not None and self.latency_ms(p.key) > max_latency_ms:
                continue
            fits.append(p)
        if not fits:
            table = "; ".join(f"{p.key}: packed {p.packed} B, TFLM arena {p.tflm_arena} B, "
                              f"score {p.score}" for p in self._points)
            raise PointsError(f"No point fits budget_kb={budget_kb}, tflm_kb={tflm_kb}, "
                              f"max_latency_ms={max_latency_ms}, min_score={min_score}. "
                              f"Points: {table}.")
        return max(fits, key=lambda p: (-math.inf if p.score is None else p.score,
                                        -(p.packed or 0)))

