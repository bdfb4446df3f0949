"""Percentiles and summaries of latency samples (milliseconds)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) of an ascending sequence, linearly interpolated; None when empty."""
    if not ordered:
        return None
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Iterable[float], quantiles: Sequence[float] = (50, 95, 99)) -> dict[str, float | int | None]:
    """{"count", "p50", "p95", "p99", "max", "mean"} of `values`, rounded to 0.1 ms (None when empty)."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    for q in quantiles:
        out[f"p{q:g}"] = _round(percentile(ordered, q))
    out["max"] = _round(ordered[-1] if ordered else None)
    out["mean"] = _round(sum(ordered) / len(ordered) if ordered else None)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
