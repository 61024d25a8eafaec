"""What ``convert`` reports: the ``Report`` record, its Markdown, and the pieces ``inspect`` shares
(memory figures side by side, the per-tensor table). No TensorFlow import."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aa_tflite.config import Budget, ConvertConfig
from aa_tflite.lowering import lowering_of
from aa_tflite.precision import precision
from aa_tflite.search import planner
from aa_tflite.search.baseline import Baseline, Data
from aa_tflite.search.bench import sparse_bytes
from aa_tflite.search.curve import CurveSample, score
from aa_tflite.search.measure import Measured
from aa_tflite.search.memory_modes import memory_model, sparse_layout
from aa_tflite.search.runtimes import runtime_notes
from aa_tflite.search.verify import Verified
from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite import memory as memory_mod
from aa_tflite.tflite.analyse import SiteGraph
from aa_tflite.types import MemoryMode, MemoryReport, Plan, SiteConfig, TensorMemory

__all__ = ["MEMORY_NOTE", "Report", "SiteRow", "build_report", "file_metadata", "inspect_lines",
           "lowering_words", "memory_lines", "point_doc", "tensor_table", "zero_points"]

MEMORY_NOTE = ("Packed = activation peak with each tensor at its bit-width, packed (ceil(n x bits "
               "/ 8) bytes): real only on a runtime that packs activations; stock TFLite and "
               "TFLite Micro store every activation in int8. TFLM arena = what TFLite Micro "
               "allocates for the file (int8 activations, plus its bookkeeping tail).")


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


def inspect_lines(tflite: bytes, *, name: str, measure_tflm: bool = True) -> list[str]:
    """What ``aa-tflite inspect`` prints about a ``.tflite``: its ops, its planned tensors, where
    the bits per tensor come from, whether it carries an offline memory plan, and its memory
    figures side by side (the same figures ``convert`` reports for the same file).

    Example:
        >>> print("\\n".join(inspect_lines(tflite, name="digits.tflite")))  # doctest: +SKIP
    """
    from aa_tflite.tflite import metadata, offline_plan

    ops, _ = flatbuffer.describe(flatbuffer.read(tflite))
    meta = metadata.read_metadata(tflite)
    bits = metadata.stored_bits(tflite)
    lines = [f"{name}: {len(ops)} ops"]
    for op in ops:
        act = f" +{op.fused_activation}" if op.fused_activation not in (None, "NONE") else ""
        lines.append(f"  {op.index:3d} {op.name}{act}  {list(op.inputs)} -> {list(op.outputs)}")
    _, layout = memory_mod.plan_tensors(tflite, bits=bits)
    lines += tensor_table(layout)
    if meta:
        budget = meta.get("budget_bytes")
        lines.append(f"Bits per tensor: from the file's aa_tflite metadata "
                     f"({meta.get('producer', '?')}, plan of "
                     f"{len(meta.get('plan', {}).get('sites', {}))} sites, "
                     f"{meta.get('memory_mode')} budget {'-' if budget is None else f'{budget:,}'}"
                     " B).")
    else:
        lines.append("Bits per tensor: no aa_tflite metadata; derived from each tensor's producer "
                     "clamp and quantization parameters.")
    placed = offline_plan.read_offline_plan(tflite)
    lines.append("TFLM offline memory plan: " + (
        "none (TFLM plans the arena itself)" if placed is None else
        f"yes, {len(placed):,} tensors placed (TFLM uses it; "
        "LiteRT and tflite-runtime ignore it)"))
    lines += memory_lines(memory_mod.memory_report(tflite, bits=bits, measure_tflm=measure_tflm))
    return [*lines, MEMORY_NOTE]


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


@dataclasses.dataclass(frozen=True)
class SiteRow:
    """One site of the final plan, as the report shows it."""

    site: str
    tensor: int | None
    bits: int
    threshold: float
    clip: float | None
    sparsity: float | None  # share of zeros in the site tensor, final model, representative data
    packed_bytes: int | None
    sparse_bytes: int | None  # worst case over the representative data
    loss: float  # single-site measured loss of this config, points
    lowering: str  # what was written, in words


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``convert`` did and what it measured. ``to_markdown`` is the human version."""

    model: str
    memory_mode: str
    budget_bytes: int | None
    metric: str
    float_score: float
    int8_score: float
    planned_score: float
    predicted_loss: float
    verified_loss: float
    eval_samples: int
    int8_memory: MemoryReport
    planned_memory: MemoryReport
    int8_sparse_peak: int
    planned_sparse_peak: int
    sites: tuple[SiteRow, ...]
    options_measured: int
    repairs: tuple[str, ...]
    seconds: Mapping[str, float]
    curve: tuple[CurveSample, ...]  # the greedy path down to the smallest plan
    sensitivity: Mapping[str, tuple[tuple[str, float, int], ...]]  # site -> (option, loss, bytes)
    notes: tuple[str, ...]
    # Tensor index -> bits, for every tensor the plan counts below 8 bits (the packed figure's
    # input; such a tensor holds at most 2^bits levels).
    tensor_bits: Mapping[int, int] = dataclasses.field(default_factory=dict)
    kernels: str = "builtin"  # the kernels every loss was measured on
    # Options not measured: their tensors are never alive while the int8 model holds more than
    # half the budget, so a plan that meets it does not need them (``search.measure``).
    options_skipped: int = 0
    target: str | None = None  # the deployment target named to convert, which chose kernels
    # The graph as written: "as converted", or the TFLM firmware rewrites (memory="tflm").
    layout: str = "as converted"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)

    def to_markdown(self) -> str:
        m = self.planned_memory
        if self.budget_bytes is None:
            budget = "Budget: none (a given plan was written)."
        else:
            met = "yes" if self.budget_figure() <= self.budget_bytes else "NO"
            what = ("TFLite Micro arena (head plus tail)" if self.memory_mode == "tflm" else
                    f"`{self.memory_mode}` activation memory")
            budget = (f"Budget: {self.budget_bytes / 1024:.2f} KiB ({self.budget_bytes:,} B) of "
                      f"{what}. Met: {met}.")
        lines = [
            f"# aa_tflite report: {self.model}", "", budget, "",
            "| | float | int8 | planned |", "|---|---|---|---|",
            f"| {self.metric} | {self.float_score:.4f} | {self.int8_score:.4f} | "
            f"{self.planned_score:.4f} |",
            f"| packed activation peak (B) | - | {self.int8_memory.packed_peak:,} | "
            f"{m.packed_peak:,} |",
            f"| packed+sparse peak (B, worst sample) | - | {self.int8_sparse_peak:,} | "
            f"{self.planned_sparse_peak:,} |",
            f"| TFLM arena, real (B) | - | {_arena(self.int8_memory)} | {_arena(m)} |",
            f"| weights (B) | - | {self.int8_memory.weights:,} | {m.weights:,} |", "",
            f"Loss against int8: predicted {self.predicted_loss:.2f} points (sum of single-site "
            f"losses), verified {self.verified_loss:.2f} points on {self.eval_samples} samples, "
            f"measured on {_KERNEL_WORDS.get(self.kernels, self.kernels)}"
            + (f" (the kernels target {self.target!r} runs)." if self.target else "."),
            "", MEMORY_NOTE, "", "## Sites", "",
            "| site | bits | threshold | clip | sparsity | packed B | sparse B | loss | lowering |",
            "|---|---|---|---|---|---|---|---|---|"]
        for r in self.sites:
            clip = f"{r.clip:.4g}" if r.clip is not None else "data" if r.bits < 8 else "-"
            sp = "-" if r.sparsity is None else f"{r.sparsity:.1%}"
            lines.append(f"| {r.site} | {r.bits} | {r.threshold:.4g} | {clip} | {sp} | "
                         f"{'-' if r.packed_bytes is None else f'{r.packed_bytes:,}'} | "
                         f"{'-' if r.sparse_bytes is None else f'{r.sparse_bytes:,}'} | "
                         f"{r.loss:.2f} | {r.lowering} |")
        t = self.seconds
        lines += ["", "## Time", "", " · ".join(f"{k} {v:.1f} s" for k, v in t.items()),
                  f"({self.options_measured} options measured in the interpreter"
                  + (f"; {self.options_skipped} skipped: their tensors are never alive while "
                     "the int8 model holds more than half the budget"
                     if self.options_skipped else "") + ")"]
        if self.repairs:
            lines += ["", "## Repairs", "", *[f"- {r}" for r in self.repairs]]
        if self.notes:
            lines += ["", "## Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def budget_figure(self) -> int:
        """The planned model's figure in the sense of ``memory_mode``."""
        m = self.planned_memory
        return memory_model(self.memory_mode).pick(
            m.packed_peak, self.planned_sparse_peak, None if m.tflm is None else m.tflm.total)

    def int8_budget_figure(self) -> int:
        """The int8 baseline's figure in the sense of ``memory_mode``."""
        m = self.int8_memory
        return memory_model(self.memory_mode).pick(
            m.packed_peak, self.int8_sparse_peak, None if m.tflm is None else m.tflm.total)


_KERNEL_WORDS = {"builtin": "LiteRT's builtin kernels",
                 "xnnpack": "LiteRT with its default XNNPACK delegate",
                 "tflm": "TensorFlow Lite Micro's kernels"}


def _arena(m: MemoryReport) -> str:
    return "-" if m.tflm is None else f"{m.tflm.total:,} (head {m.tflm.head:,})"


def zero_points(tflite: bytes, tensors) -> dict[int, tuple[float, int]]:
    """``(scale, zero point)`` of each of ``tensors`` in ``tflite``."""
    _, infos = flatbuffer.describe(flatbuffer.read(tflite))
    return {t: (infos[t].scale[0], infos[t].zero_point[0]) for t in tensors
            if infos[t].scale and infos[t].zero_point}


def lowering_words(c: SiteConfig, g: SiteGraph, q: tuple[float, int] | None) -> str:
    """How a site's config was written into the ``.tflite``, in words for the report: its
    lowering's ``describe`` (``q`` is the site tensor's written scale and zero point)."""
    return lowering_of(g).describe(c, g, q)


def build_report(*, model_name: str, data: Data, base: Baseline, measured: Measured,
                 verified: Verified, curve: Sequence[CurveSample], cfg: ConvertConfig,
                 budget: Budget | None) -> Report:
    """Measures the final model's memory on every definition and writes the report (its
    ``seconds`` and ``target`` are filled in by the caller, who times the stages)."""
    bench, tflite = base.bench, verified.tflite
    bits = base.tensor_bits(verified.configs)
    planned_mem = memory_mod.memory_report(tflite, bits=bits, measure_tflm=cfg.measure_tflm)
    int8_mem = memory_mod.memory_report(base.tflite, measure_tflm=cfg.measure_tflm)
    site_t = {s: g.tensor for s, g in base.graphs.items()}
    # memory "tflm" writes the int8 model with exact rewrites (patches, splits) that retire some
    # of its tensors: the activations, and so the sparsity, are the int8 model's
    rewritten = cfg.memory is MemoryMode.TFLM
    nz, zeros = bench.zero_stats(base.tflite if rewritten else tflite,
                                 [*base.group_tensors, *site_t.values()])
    nz = {t: nz[t] for t in base.group_tensors}
    planned_sparse = sparse_layout(base.buffers, base.elements, nz, bits)
    scorer = bench.scorer
    words = {"top1": "top-1 accuracy", "agreement": "top-1 agreement with float"}
    metric = words.get(scorer.describe(), scorer.describe())
    float_score = scorer.score(bench.references or [], bench.references, bench.labels)
    return Report(
        model=model_name, memory_mode=cfg.memory.value,
        budget_bytes=None if budget is None else budget.nbytes, metric=metric,
        float_score=float_score, int8_score=score(bench.baseline),
        planned_score=score(verified.metrics), predicted_loss=float(verified.predicted),
        verified_loss=bench.loss(verified.metrics), eval_samples=len(data.x_eval),
        int8_memory=int8_mem, planned_memory=planned_mem,
        int8_sparse_peak=planner.peak(base.sparse_buffers),
        planned_sparse_peak=planner.peak(planned_sparse),
        sites=_site_rows(base, measured, verified, zeros, nz),
        options_measured=measured.count, options_skipped=measured.skipped,
        repairs=verified.repairs, seconds={}, curve=tuple(curve),
        sensitivity=dict(measured.sensitivity),
        notes=(*base.notes, *measured.notes, *verified.notes,
               *runtime_notes(base.tflite, tflite)),
        tensor_bits=dict(sorted(bits.items())), kernels=cfg.measure_kernels.value,
        layout=verified.layout)


def _site_rows(base: Baseline, measured: Measured, verified: Verified,
               zeros: Mapping[int, float], nz: Mapping[int, int]) -> tuple[SiteRow, ...]:
    """One row per site of the final plan, in execution order, then the sites not found."""
    plan = Plan(verified.configs)
    zps = zero_points(verified.tflite, [g.tensor for g in base.graphs.values()])
    rows = []
    for s in base.bench.order(base.graphs):
        c, g = plan.get(s), base.graphs[s]
        t = g.tensor
        n = base.elements.get(t)
        rows.append(SiteRow(
            site=s, tensor=t, bits=int(c.bits), threshold=c.threshold, clip=c.clip,
            sparsity=zeros.get(t),
            packed_bytes=None if n is None else precision(c.bits).nbytes(n),
            sparse_bytes=sparse_bytes(n, nz[t], int(c.bits)) if t in nz else None,
            loss=measured.single_site_loss.get((base.unit_of(s), c), 0.0),
            lowering=lowering_words(c, g, zps.get(t))))
    for s, tensor in sorted(base.site_tensors.items()):
        if s not in base.graphs:
            rows.append(SiteRow(site=s, tensor=tensor, bits=8, threshold=0.0, clip=None,
                                sparsity=None, packed_bytes=None, sparse_bytes=None, loss=0.0,
                                lowering="plain int8 (tensor not found)"))
    return tuple(rows)


def point_doc(key: str, budget_kb, input_size, doc: dict) -> dict:
    """One point's entry in the metadata's ``points`` list."""
    return {"signature": key, "budget_kb": budget_kb, "input_size": input_size,
            **{a: doc[a] for a in ("plan", "tensor_bits", "budget_bytes", "memory", "scores",
                                   "layout")}}


def file_metadata(report: Report, plan: Plan) -> dict:
    """What the ``.tflite`` carries about itself (``aa_tflite.read_metadata``). Only figures that
    the same inputs reproduce exactly: no times, no file size (the document is inside the file)."""
    m, i8 = report.planned_memory, report.int8_memory
    return {
        "producer": f"aa_tflite {_version()}",
        "model": report.model,
        "plan": json.loads(plan.to_json()),
        "tensor_bits": {str(t): b for t, b in sorted(report.tensor_bits.items())},
        "memory_mode": report.memory_mode,
        "budget_bytes": report.budget_bytes,
        "memory": {"packed_peak": m.packed_peak, "int8_peak": m.int8_peak,
                   "packed_sparse_peak": report.planned_sparse_peak,
                   "tflm_arena": None if m.tflm is None else m.tflm.total,
                   "tflm_head": None if m.tflm is None else m.tflm.head,
                   "weights": m.weights,
                   "int8_baseline": {"packed_peak": i8.packed_peak,
                                     "packed_sparse_peak": report.int8_sparse_peak,
                                     "tflm_arena": None if i8.tflm is None else i8.tflm.total}},
        "scores": {"metric": report.metric, "float": report.float_score,
                   "int8": report.int8_score, "planned": report.planned_score,
                   "eval_samples": report.eval_samples},
        "kernels": report.kernels,
        "target": report.target,
        "layout": report.layout,
    }


def _version() -> str:
    from aa_tflite import __version__

    return __version__
