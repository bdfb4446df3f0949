"""How far behind Debezium is, read from PostgreSQL's replication slots.

Each connector streams its database's outbox through one logical replication slot.
Two figures per slot say whether that is healthy:

  lag_bytes           WAL written since the position the connector last confirmed
                      (confirmed_flush_lsn): what it still has to read and publish.
  retained_wal_bytes  WAL PostgreSQL keeps on disk for the slot (from restart_lsn). It
                      grows while the connector is down or behind and falls back once it
                      confirms again; an inactive slot retains WAL without bound.

`pg_replication_slots`, `pg_current_wal_lsn()` and `pg_wal_lsn_diff()` are readable by
every role, so a service reads the slots of its own database (`own_database_only`)
with its own role, and the CLI reads all of them as the stack's superuser.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import asyncpg

from shared import metrics

__all__ = ["SlotFigures", "read_slots", "record_slots", "clear_slots"]

_SLOTS = """
SELECT slot_name, database, active,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_wal_bytes,
       wal_status
FROM pg_replication_slots
WHERE slot_type = 'logical' AND (NOT $1 OR database = current_database())
ORDER BY slot_name
"""


@dataclass(frozen=True)
class SlotFigures:
    """One logical replication slot as /metrics shows it; sizes in bytes."""

    slot: str
    database: str
    active: bool
    lag_bytes: int | None
    """None until the slot has confirmed anything."""
    retained_wal_bytes: int | None
    wal_status: str | None
    """reserved / extended / unreserved / lost (PostgreSQL's own words)."""

    def as_json(self) -> dict:
        """The figures as a JSON-ready dict of the fields."""
        return asdict(self)


async def read_slots(connection: asyncpg.Connection, *, own_database_only: bool) -> list[SlotFigures]:
    """The logical slots of the connected database (or of every database), by name."""
    rows = await connection.fetch(_SLOTS, own_database_only)
    return [
        SlotFigures(r["slot_name"], r["database"], r["active"], r["lag_bytes"], r["retained_wal_bytes"], r["wal_status"])
        for r in rows
    ]


def record_slots(slots: list[SlotFigures]) -> None:
    """Set the slot gauges to `slots` (a slot that is gone disappears from /metrics)."""
    clear_slots()
    for slot in slots:
        metrics.REPLICATION_SLOT_ACTIVE.labels(slot.slot).set(1 if slot.active else 0)
        if slot.lag_bytes is not None:
            metrics.REPLICATION_SLOT_LAG_BYTES.labels(slot.slot).set(slot.lag_bytes)
        if slot.retained_wal_bytes is not None:
            metrics.REPLICATION_SLOT_RETAINED_WAL_BYTES.labels(slot.slot).set(slot.retained_wal_bytes)


def clear_slots() -> None:
    """No figures rather than stale ones (the database cannot be read)."""
    for gauge in (metrics.REPLICATION_SLOT_ACTIVE, metrics.REPLICATION_SLOT_LAG_BYTES,
                  metrics.REPLICATION_SLOT_RETAINED_WAL_BYTES):
        gauge.clear()
