"""Bounded outbox, inbox and heartbeat tables: a periodic purge of old rows, in batches.

    purged = await purge(uow, RetentionPolicy.from_settings(settings))   # {"outbox": 120, ...}

Invariants:
  * Outbox rows older than `outbox` are deleted. Delivery never needs them after their
    transaction committed: Debezium decodes the INSERT from the WAL (which the slot keeps
    until the connector confirmed it), so even a row purged before Connect read it is still
    published. The publication carries INSERTs only: the DELETEs never stream.
  * Inbox rows older than `inbox` (the dedupe window) are deleted; from then on a
    redelivery of their event is no longer a duplicate for the inbox, and only the business
    rows stop it (every handler checks the order's own row first: a decided order ignores
    it). The window must still outlast the longest a message can stay in its topic:
    shared/settings.py refuses one shorter than the topics' retention + segment roll + a
    margin (see the README's operating notes).
  * Heartbeat rows (Debezium's `heartbeat.action.query`) go with the outbox's retention.
  * Each batch is its own short transaction; rows another purger has locked are skipped
    (SKIP LOCKED), so several instances of a service may purge at once.
  * A purge reads only the rows it deletes: the cutoff is `now()` (the transaction's start,
    stable) less the retention, an index condition on created_at / processed_at / beat_at.
    With `clock_timestamp()` (volatile) it was only a filter, and each purge walked the whole
    index — 311,750 inbox rows in 64 ms with nothing to delete, growing with the dedupe window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from shared import metrics
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork

__all__ = ["RetentionPolicy", "purge"]

log = logging.getLogger(__name__)

_PURGES = {
    "outbox": """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE created_at < now() - $1::interval
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
""",
    "inbox": """
DELETE FROM inbox WHERE (consumer, event_id) IN (
    SELECT consumer, event_id FROM inbox WHERE processed_at < now() - $1::interval
    ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
""",
    "debezium_heartbeat": """
DELETE FROM debezium_heartbeat WHERE beat_at IN (
    SELECT beat_at FROM debezium_heartbeat WHERE beat_at < now() - $1::interval
    ORDER BY beat_at LIMIT $2 FOR UPDATE SKIP LOCKED)
""",
}


@dataclass(frozen=True)
class RetentionPolicy:
    """How long outbox (and debezium_heartbeat) and inbox rows are kept, and rows deleted per transaction."""

    outbox: timedelta
    inbox: timedelta
    batch: int = 1000

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "RetentionPolicy":
        """From SAGA_OUTBOX_RETENTION, SAGA_INBOX_RETENTION and SAGA_RETENTION_BATCH."""
        return cls(settings.outbox_retention, settings.inbox_retention, settings.retention_batch)

    def age(self, table: str) -> timedelta:
        """How old a row of `table` may get: `inbox` for the inbox, `outbox` for every other table."""
        return self.inbox if table == "inbox" else self.outbox


async def purge(uow: UnitOfWork, policy: RetentionPolicy) -> dict[str, int]:
    """Delete every row past its table's retention, `policy.batch` rows per transaction.
    Returns the rows deleted per table. Transient failures pass as TransientError (the next
    run carries on where this one stopped)."""
    deleted: dict[str, int] = {}
    for table, statement in _PURGES.items():
        deleted[table] = 0
        while True:
            async with uow.bare_transaction() as connection:
                status = await connection.execute(statement, policy.age(table), policy.batch)
            count = int(status.split()[-1])
            deleted[table] += count
            if count < policy.batch:
                break
        if deleted[table]:
            metrics.RETENTION_PURGED.labels(uow.consumer, table).inc(deleted[table])
    if any(deleted.values()):
        log.info("retention purge deleted %s", ", ".join(f"{n} {t} rows" for t, n in deleted.items() if n))
    return deleted
