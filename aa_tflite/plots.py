"""The PNG plots: sensitivity per site, accuracy against memory, the operating points, and the
per-op memory timeline."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from aa_tflite.files import atomic_write_all

__all__ = ["points_plot", "render_plots", "save_plots", "timeline_plot"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def save_plots(report, prefix: str) -> list[str]:
    """Writes ``prefix.sensitivity.png`` and ``prefix.memory.png`` atomically; returns the paths.

    Example:
        >>> save_plots(result.report, "out/digits")  # doctest: +SKIP
    """
    return atomic_write_all({prefix + ext: png for ext, png in render_plots(report).items()})


def render_plots(report) -> dict[str, bytes]:
    """The two plots as PNG bytes, keyed by file suffix (``.sensitivity.png``, ``.memory.png``).

    Example:
        >>> sorted(render_plots(result.report))  # doctest: +SKIP
        ['.memory.png', '.sensitivity.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = {}
    sites = list(report.sensitivity)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(sites) + 2), 4))
    labels = list(dict.fromkeys(lab for v in report.sensitivity.values() for lab, _, _ in v))
    width = 0.8 / max(len(labels), 1)
    for k, lab in enumerate(labels):
        xs, ys = [], []
        for i, s in enumerate(sites):
            for name, loss, _ in report.sensitivity[s]:
                if name == lab:
                    xs.append(i + (k - (len(labels) - 1) / 2) * width)
                    ys.append(loss)
        ax.bar(xs, ys, width=width, label=lab)
    ax.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel(f"loss, points of {report.metric}")
    ax.set_title(f"{report.model}: single-site sensitivity (TFLite interpreter)")
    if labels:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    written[".sensitivity.png"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    base_mem, planned_mem = report.int8_budget_figure(), report.budget_figure()
    if report.curve:
        xs = [base_mem] + [c.peak for c in report.curve]
        ys = [report.int8_score] + [c.predicted for c in report.curve]
        ax.plot(xs, ys, "-", color="tab:blue", alpha=0.6,
                label="greedy path (predicted: int8 minus summed single-site losses)")
        ver = [(c.peak, c.verified) for c in report.curve if c.verified is not None]
        if ver:
            ax.plot(*zip(*ver), "o", color="tab:blue", label="greedy path (verified plans)")
    ax.plot([base_mem], [report.int8_score], "s", color="gray", label="int8 baseline")
    ax.plot([planned_mem], [report.planned_score], "*", ms=14, color="red",
            label="chosen plan (verified)")
    if report.budget_bytes is not None:
        ax.axvline(report.budget_bytes, color="red", ls="--", lw=1, label="budget")
    ax.set_xlabel(f"{report.memory_mode} activation peak (bytes)")
    ax.set_ylabel(report.metric)
    ax.set_title(f"{report.model}: {report.metric} against memory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written[".memory.png"] = _png(fig)
    plt.close(fig)
    return written


def points_plot(points, metric: str) -> bytes:
    """One PNG: each operating point's score against what a device pays for it. Left: the real
    TFLite Micro arena (the packed peak, labelled so, where no point has an arena). Right: the
    LiteRT latency, median with its 10th-90th percentile spread. Both memory and time axes start
    at zero, so timing noise is not drawn as a trade-off.

    Example:
        >>> png = points_plot(result.points, result.report.metric)  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    real = all(p.tflm_arena is not None for p in points)
    memory = ([p.tflm_arena for p in points], "TFLite Micro arena (bytes, real)") if real else (
        [p.packed for p in points], "packed activation peak (bytes; real only where packed)")
    ys = [p.score for p in points]
    spread = [p.latency_range_ms or (p.latency_ms, p.latency_ms) for p in points]
    lat = [p.latency_ms for p in points]
    err = [[m - lo for m, (lo, _) in zip(lat, spread)], [hi - m for m, (_, hi) in zip(lat, spread)]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    left.plot(memory[0], ys, "o", color="tab:blue")
    right.errorbar(lat, ys, xerr=err, fmt="o", color="tab:orange", capsize=3)
    for ax, xs, top in ((left, memory[0], max(memory[0])),
                        (right, lat, max(hi for _, hi in spread))):
        for p, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(p.key, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlim(0, max(top, 1e-9) * 1.3)
    left.set_xlabel(memory[1])
    right.set_xlabel("LiteRT latency (ms, 1 thread; median, 10th-90th percentile)")
    low = min(ys)
    left.set_ylim(max(0.0, low - max(0.05, 0.5 * (max(ys) - low))), min(1.0, max(ys)) + 0.02)
    left.set_ylabel(metric)
    fig.suptitle(f"{points[0].report.model}: {len(points)} operating points in one file")
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def timeline_plot(series: Mapping[str, Sequence[int]], op_names: Sequence[str], title: str
                  ) -> bytes:
    """One PNG: activation bytes alive while each op runs, one line per series (e.g. the stock
    int8 model and each plan), with the op that holds each series' peak marked.

    Example:
        >>> png = timeline_plot({"int8": [3072, 2048]}, ["CONV_2D"], "digits")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(op_names) + 3), 4))
    for label, live in series.items():
        xs = list(range(len(live)))
        ax.step(xs, live, where="mid", label=f"{label} (peak {max(live):,} B)")
        top = max(range(len(live)), key=live.__getitem__)
        if 0 < top <= len(op_names):
            ax.annotate(f"op {top - 1} {op_names[top - 1]}", (top, live[top]),
                        textcoords="offset points",
                        xytext=(3, 3), fontsize=7)
    ax.set_xlabel("allocation scope (0: before the first op; k + 1: while op k runs)")
    ax.set_ylabel("live activation bytes (B)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png
