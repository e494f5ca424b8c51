"""The metric-vs-support-size figure, drawn the same way for the W&B evaluation table and the published
results (``docs/results_ndcg_vs_k.png``)."""

from __future__ import annotations

from typing import Any

Point = tuple[int, float, float | None, float | None]  # K, mean, interval low and high (None: no interval)


def metric_vs_k_figure(
    curves: dict[str, list[Point]], metric: str = "ndcg@10", title: str | None = None
) -> Any:
    """One line per method (with error bars where every point has an interval) -> a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda p: p[0])
        ks, mean = [p[0] for p in points], [p[1] for p in points]
        if all(p[2] is not None and p[3] is not None for p in points):
            x = [k + (i - len(curves) / 2) * 0.08 for k in ks]  # small offsets so the bars do not overlap
            err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=name)
        else:
            ax.plot(ks, mean, marker="o", label=name)
    ax.set_xlabel("support size K (first K interactions of a held-out user)")
    ax.set_ylabel(f"{metric.upper()} (full ranking)")
    ax.set_xticks(sorted({p[0] for points in curves.values() for p in points}))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
