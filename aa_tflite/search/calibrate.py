"""Values of intermediate tensors, read in the TFLite interpreter, and statistics of them.

``tensor_values`` runs a ``.tflite`` cut after the requested tensors and returns their
dequantized values: the ``Bench`` reads every value it fits clips, corrections and sparsity on
this way, so they describe exactly what the deployed model computes. ``stored_levels`` counts
the distinct int8 levels a tensor holds (how tests check a low-bit tensor keeps its levels).

``site_statistics`` and ``thresholds_for_sparsity`` are a public helper for users who want a
site's percentiles and sparsity curve; ``convert`` does not call them (its threshold candidates
are computed from the same values by ``search.bench.candidates``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from aa_tflite.runtime.interpreter import batches, dequantize, load_interpreter, planning_threads
from aa_tflite.types import AAError

__all__ = ["FitValues", "QuantizedValues", "SiteStats", "fit_positions", "nonzero_stats",
           "site_statistics", "stored_levels", "tensor_values", "thresholds_for_sparsity"]

_PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
# Requested values per batch at most: the interpreter keeps every requested tensor of a batch
# alive, so a 224x224 network's 38 activations at batch 64 would hold 1.5 GB (integer kernels
# give each sample the same values at any batch size).
_BATCH_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class SiteStats:
    """Statistics of one site's output (after its ReLU) over the calibration data.

    Attributes:
        zero_fraction: Share of exact zeros at threshold 0 (the ReLU's own sparsity).
        max: Largest value seen.
        percentiles: Value at each of ``50, 90, 99, 99.9, 100`` percent.
        quantile_grid: Values at the quantiles ``0.00, 0.01, ..., 1.00`` of all elements, used to
            read off sparsity as a function of the threshold.
    """

    zero_fraction: float
    max: float
    percentiles: Mapping[float, float]
    quantile_grid: tuple[float, ...]

    def sparsity_at(self, threshold: float) -> float:
        """Share of elements below ``threshold`` (zeros after thresholding), interpolated."""
        if threshold <= 0:
            return self.zero_fraction
        grid = np.asarray(self.quantile_grid)
        return float(np.interp(threshold, grid, np.linspace(0, 1, len(grid)), right=1.0))


class QuantizedValues(Mapping):
    """Tensor index -> dequantized values, stored as the runtime's int8 (a quarter of float32's
    memory) and dequantized on each access.

    Example:
        >>> values = tensor_values(tflite, [14, 15], x, keep_quantized=True)  # doctest: +SKIP
        >>> values[14].dtype  # doctest: +SKIP
        dtype('float32')
    """

    def __init__(self, raw: Mapping[int, np.ndarray], details: Mapping[int, dict]) -> None:
        self._raw, self._details = dict(raw), dict(details)

    def __getitem__(self, tensor: int) -> np.ndarray:
        return dequantize(self._raw[tensor], self._details[tensor])

    def raw(self, tensor: int) -> np.ndarray:
        """The tensor's values as stored (int8)."""
        return self._raw[tensor]

    def detail(self, tensor: int) -> dict:
        """The interpreter's details of the tensor (its quantization)."""
        return self._details[tensor]

    def positions(self, tensor: int, limit: int) -> np.ndarray:
        """``fit_positions`` of one tensor, dequantizing only the positions kept."""
        return dequantize(fit_positions(self._raw[tensor], limit), self._details[tensor])

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class FitValues:
    """What a bench keeps of the baseline's tensors on the fitting inputs: each tensor's
    ``fit_positions`` as int8, and its non-zero statistics (``nonzero_stats``), not the full
    tensors. MobileNetV2 at 224x224 held 390 MB of full tensors where this keeps a fraction.

    The tensors are read in one run of the model cut after them, a batch at a time; each batch
    gives its share of the positions and statistics, so the full tensors are never held. With
    ``stored``, ``x`` is the stored values of the model's input (a ``search.tail`` suffix's).

    Example:
        >>> values = FitValues(tflite, [14, 15], x, limit=200_000)  # doctest: +SKIP
        >>> values.positions(14).shape  # doctest: +SKIP
        (4096, 8)
    """

    def __init__(self, tflite: bytes, tensors: Sequence[int], x: np.ndarray, *, limit: int,
                 batch_size: int = 64, num_threads: int | None = None,
                 stored: bool = False) -> None:
        self.limit = limit
        tensors = sorted(set(tensors))
        self._details, runs = _tensor_batches(tflite, tensors, x, batch_size=batch_size,
                                              num_threads=num_threads, stored=stored)
        parts: dict[int, list[np.ndarray]] = {t: [] for t in tensors}
        zeros = dict.fromkeys(tensors, 0)
        self._worst = dict.fromkeys(tensors, 0)
        for start, got in runs:
            for t in tensors:
                v = got[t]
                counts = _zero_counts(v, self._details[t])
                zeros[t] += int(counts.sum())
                self._worst[t] = max(self._worst[t], int(v[0].size - counts.min()))
                parts[t].append(_positions_of_batch(v, start, len(x), limit))
        self._raw = {t: np.concatenate(parts[t]) for t in tensors}
        self._zeros = {t: zeros[t] / (len(x) * int(np.prod(self._details[t]["shape"][1:])))
                       for t in tensors}

    def __contains__(self, tensor: object) -> bool:
        return tensor in self._raw

    def size(self, tensor: int) -> int:
        """How many values of the tensor are kept (its positions times its channels)."""
        return int(self._raw[tensor].size)

    def positions(self, tensor: int) -> np.ndarray:
        """The tensor's ``fit_positions`` (at most ``limit``), dequantized."""
        return dequantize(self._raw[tensor], self._details[tensor])

    def stored(self, tensor: int) -> tuple[np.ndarray, tuple[float, int]]:
        """The tensor's ``fit_positions`` as stored (int8, or float32 for a float tensor) and
        its ``(scale, zero point)``."""
        scale, zero = self._details[tensor]["quantization"]
        return self._raw[tensor], (float(scale), int(zero))

    def zero_stats(self, tensors: Sequence[int]) -> tuple[dict[int, int], dict[int, float]]:
        """``nonzero_stats`` of ``tensors``, as read from the full tensors."""
        return {t: self._worst[t] for t in tensors}, {t: self._zeros[t] for t in tensors}


def _positions_of_batch(batch: np.ndarray, start: int, samples: int, limit: int) -> np.ndarray:
    """The rows of ``fit_positions`` over all ``samples`` that fall in ``batch`` (samples
    ``start`` onwards): concatenated over the batches, ``fit_positions`` of the whole tensor."""
    flat = batch.reshape(-1, batch.shape[-1]) if batch.ndim > 1 else batch.reshape(-1, 1)
    per_sample = len(flat) // max(len(batch), 1)
    total = samples * per_sample
    if total <= limit:
        return flat
    keep = np.linspace(0, total - 1, limit).astype(np.int64)
    lo, hi = start * per_sample, (start + len(batch)) * per_sample
    return flat[keep[(keep >= lo) & (keep < hi)] - lo]


def fit_positions(values: np.ndarray, limit: int) -> np.ndarray:
    """A tensor's values as ``(positions, channels)``: the sample and spatial axes flattened
    (a 2-D ``(samples, features)`` tensor stays as it is), at most ``limit`` evenly spaced
    positions. What a per-channel fit reads: large activations cost a fixed amount.

    Example:
        >>> fit_positions(np.zeros((64, 112, 112, 32)), 200_000).shape
        (200000, 32)
    """
    flat = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(-1, 1)
    if len(flat) > limit:
        flat = flat[np.linspace(0, len(flat) - 1, limit).astype(np.int64)]
    return flat


def tensor_values(tflite: bytes, tensors: Sequence[int], x: np.ndarray, *,
                  batch_size: int = 64, num_threads: int | None = None,
                  keep_quantized: bool = False) -> Mapping[int, np.ndarray]:
    """Runs ``x`` and returns the dequantized values of ``tensors``.

    The model is cut after the last op that ``tensors`` need, with ``tensors`` as its outputs, so
    an early tensor costs only the ops before it (the same kernels compute the same values).
    Where that cannot be done (a requested tensor no op writes), the whole model runs with every
    tensor preserved.

    ``num_threads`` is the interpreter's threads (default ``planning_threads()``).
    ``keep_quantized`` returns a ``QuantizedValues``: the same values, held as int8.

    Returns:
        Tensor index -> float32 array shaped ``(N, ...)``.
    """
    details, runs = _tensor_batches(tflite, tensors, x, batch_size=batch_size,
                                    num_threads=num_threads)
    out: dict[int, np.ndarray] = {}
    for start, got in runs:
        for t in tensors:
            if t not in out:
                out[t] = np.empty((len(x), *got[t].shape[1:]), got[t].dtype)
            out[t][start:start + len(got[t])] = got[t]
    if keep_quantized:
        return QuantizedValues(out, {t: details[t] for t in tensors})
    for t in tensors:  # one tensor at a time: its int8 copy goes as its floats come
        out[t] = dequantize(out[t], details[t])
    return out


def _tensor_batches(tflite: bytes, tensors: Sequence[int], x: np.ndarray, *, batch_size: int,
                    num_threads: int | None, stored: bool = False
                    ) -> tuple[dict[int, dict], Iterator]:
    """The details of ``tensors`` and an iterator of ``(start, {tensor: values of the batch})``
    over ``x``: the model cut after ``tensors`` (``_prefix_model``), batches of at most
    ``_BATCH_BYTES`` of requested values."""
    prefix = _prefix_model(tflite, tensors)
    threads = planning_threads() if num_threads is None else num_threads
    interp = (load_interpreter(tflite, preserve_all_tensors=True, num_threads=threads)
              if prefix is None else load_interpreter(prefix, num_threads=threads))
    details = {d["index"]: d for d in interp.get_tensor_details()}
    per_sample = sum(int(np.prod(details[t]["shape"][1:])) * np.dtype(details[t]["dtype"]).itemsize
                     for t in tensors)
    batch = max(1, min(batch_size, _BATCH_BYTES // max(per_sample, 1)))
    runs = ((start, {t: interp.get_tensor(t) for t in tensors})  # copies already
            for start in batches(interp, x, batch_size=batch, stored=stored))
    return {t: details[t] for t in tensors}, runs


def nonzero_stats(values: QuantizedValues, tensors: Sequence[int]
                  ) -> tuple[dict[int, int], dict[int, float]]:
    """Per tensor, the largest count of non-zero values in one sample (axis 0 is the sample) and
    the fraction of zeros, read from the int8 values: a value is zero exactly when it is the zero
    point, so no float copy is made.

    Example:
        >>> nz, zeros = nonzero_stats(values, [14])  # doctest: +SKIP
        >>> nz[14], zeros[14]  # doctest: +SKIP
        (212, 0.48)
    """
    worst, frac = {}, {}
    for t in tensors:
        raw, detail = values.raw(t), values.detail(t)
        counts = _zero_counts(raw, detail)
        worst[t] = int(raw[0].size - counts.min())
        frac[t] = int(counts.sum()) / raw.size
    return worst, frac


def _zero_counts(raw: np.ndarray, detail: dict) -> np.ndarray:
    """Zeros per sample of stored values (axis 0 is the sample): a value is zero exactly when it
    is the zero point (0 for float32)."""
    zero = 0 if raw.dtype == np.float32 else detail["quantization"][1]
    return (raw == zero).reshape(len(raw), -1).sum(axis=1)


def _prefix_model(tflite: bytes, tensors: Sequence[int]) -> bytes | None:
    """``tflite`` with only the ops ``tensors`` depend on, and ``tensors`` as its outputs; None if
    some requested tensor is not written by an op (an input or a constant)."""
    from aa_tflite.tflite import flatbuffer

    model = flatbuffer.read(tflite)
    graph = model.subgraphs[0]
    ops = graph.operators or []
    written = {int(o) for op in ops for o in (op.outputs if op.outputs is not None else [])}
    if not tensors or any(int(t) not in written for t in tensors):
        return None
    need, keep = {int(t) for t in tensors}, []
    for k in range(len(ops) - 1, -1, -1):
        outs = [int(o) for o in (ops[k].outputs if ops[k].outputs is not None else [])]
        if need.intersection(outs):
            keep.append(k)
            need.update(int(i) for i in (ops[k].inputs if ops[k].inputs is not None else [])
                        if i >= 0)
    graph.operators = [ops[k] for k in sorted(keep)]
    graph.outputs = np.array(sorted({int(t) for t in tensors}), np.int32)
    model.signatureDefs = []
    return flatbuffer.write(model)


def stored_levels(tflite: bytes, tensors: Sequence[int], raw_inputs: Sequence[np.ndarray]
                  ) -> dict[int, set[int]]:
    """The distinct stored (int8) values each of ``tensors`` takes over batches of raw inputs.

    A tensor counted at ``b`` bits must hold at most ``2**b`` of them for any input; this is how
    the tests and the random-graph run check it, on real, random and extreme inputs.

    Example:
        >>> stored_levels(tflite, [14], [np.full((4, 8, 8, 1), 127, np.int8)])  # doctest: +SKIP
        {14: {112, 127}}

    Args:
        tflite: The model's bytes.
        tensors: Tensor indices to watch.
        raw_inputs: Batches already in the model's input dtype, shaped ``(N, *input_shape)``.
    """
    interp = load_interpreter(tflite, preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    seen: dict[int, set[int]] = {t: set() for t in tensors}
    for batch in raw_inputs:
        interp.resize_tensor_input(inp["index"], list(batch.shape))
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], batch)
        interp.invoke()
        for t in tensors:
            seen[t] |= set(np.unique(interp.get_tensor(t)).tolist())
    return seen


def site_statistics(tflite: bytes, site_tensors: Mapping[str, int | None],
                    x: np.ndarray) -> dict[str, SiteStats]:
    """Per-site statistics of a (baseline) model on calibration inputs ``x``."""
    known = {s: t for s, t in site_tensors.items() if t is not None}
    if not known:
        raise AAError("No site tensor is known in this .tflite, so no statistics can be taken.")
    values = tensor_values(tflite, sorted(set(known.values())), np.asarray(x, np.float32))
    stats = {}
    for site, t in known.items():
        v = values[t].reshape(-1)
        stats[site] = SiteStats(
            zero_fraction=float(np.mean(v <= 0)),
            max=float(v.max()),
            percentiles={p: float(np.percentile(v, p)) for p in _PERCENTILES},
            quantile_grid=tuple(float(q) for q in np.quantile(v, np.linspace(0, 1, 101))))
    return stats


def thresholds_for_sparsity(stats: SiteStats, added_points: Sequence[float]) -> list[float]:
    """Thresholds that raise a site's sparsity by each of ``added_points`` (in points, 0-100).

    Example:
        >>> thresholds_for_sparsity(stats, [10, 20, 30])  # doctest: +SKIP
        [0.08, 0.17, 0.29]
    """
    grid = np.asarray(stats.quantile_grid)
    out = []
    for p in added_points:
        target = min(stats.zero_fraction + p / 100.0, 0.995)
        out.append(float(np.interp(target, np.linspace(0, 1, len(grid)), grid)))
    return out
