"""The saga's invariants (docs/contract/invariants.md) for one test's sagas: a thin wrapper over
saga_cli.benchmark.invariants.

    violations = await check_invariants(settings, order_ids, seeded, since_ms=started_ms)
    assert violations == []

Each test owns its SKUs and customers (random names), so their seeded levels are known
(`Seeded`). The checker (saga_cli/benchmark/invariants.py, shared with `saga bench`)
polls the three databases and the topics until I1–I6 hold or `timeout` passes; this
wrapper prints its counts and returns the violations that remain: [] is the only pass.
"""
from __future__ import annotations

from collections.abc import Collection

from saga_cli.benchmark.invariants import (
    SAGA_TOPICS,
    TERMINAL,
    TOPIC_OF,
    Message,
    Report,
    Seeded,
    Snapshot,
    check,
    database_report,
    read_databases,
    read_topics,
    topic_report,
)
from saga_cli.stack.config import StackSettings

__all__ = [
    "SAGA_TOPICS", "TERMINAL", "TOPIC_OF", "Message", "Report", "Seeded", "Snapshot", "check_invariants",
    "database_report", "read_databases", "read_topics", "topic_report",
]


async def check_invariants(
    settings: StackSettings,
    order_ids: Collection[str],
    seeded: Seeded,
    *,
    since_ms: int,
    extra_keys: Collection[str] = (),
    timeout: float = 90.0,
) -> list[str]:
    """Poll until I1–I6 hold for `order_ids` or `timeout` passes; print the counts; return the violations."""
    report = await check(settings, order_ids, seeded, since_ms=since_ms, extra_keys=extra_keys, timeout=timeout)
    report.print()
    return report.violations
