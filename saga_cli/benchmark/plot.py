"""The latency figure: the CDF of end-to-end saga latency per run (left) and a histogram of one of them (right)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def latency_png(path: Path, series: Sequence[tuple[str, Sequence[float]]], title: str,
                histogram: str | None = None) -> Path:
    """Write the figure for `series` [(label, e2e latencies in ms)…] to `path` (a small PNG); the
    histogram shows the series labelled `histogram` (the first with values by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (cdf, histogram) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=90)
    for label, values in series:
        ordered = sorted(values)
        if not ordered:
            continue
        n = len(ordered)
        cdf.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{label} (n={n})", linewidth=1.4)
    cdf.set_xscale("log")
    cdf.set_xlabel("end-to-end latency (ms, log)")
    cdf.set_ylabel("fraction of sagas")
    cdf.grid(True, which="both", alpha=0.3)
    for q in (0.5, 0.99):
        cdf.axhline(q, color="grey", linewidth=0.6, linestyle=":")
    cdf.legend(fontsize=7, loc="lower right")
    label, values = next(((l, v) for l, v in series if v and (histogram is None or l == histogram)),
                         next(((l, v) for l, v in series if v), ("", [])))
    if values:
        top = sorted(values)[int(len(values) * 0.995) - 1 if len(values) > 1 else 0]
        histogram.hist([v for v in values if v <= top], bins=60, color="#4c72b0")
        histogram.set_xlabel(f"end-to-end latency (ms), {label}, up to p99.5")
        histogram.set_ylabel("sagas")
        histogram.grid(True, alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
