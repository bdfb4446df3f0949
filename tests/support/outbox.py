"""Writing outbox rows directly, as a service would, for tests of the CDC path itself.

These rows carry the aggregate type `probe`, so EventRouter routes them to
events.probe, a topic no service consumes: the CDC tests never feed the saga.
"""
from __future__ import annotations

import json
import uuid

import asyncpg

from saga_cli.stack.config import SERVICE_DATABASES, StackSettings

PROBE_AGGREGATE = "probe"
PROBE_TOPIC = f"events.{PROBE_AGGREGATE}"

INSERT_OUTBOX = """
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, saga_id, causation_id, traceparent)
VALUES ($1, $2, $3, $4, $5::jsonb, $3, $6, $7)
"""

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def connect_service(settings: StackSettings, database: str) -> asyncpg.Connection:
    assert database in SERVICE_DATABASES, database
    return await asyncpg.connect(settings.service_dsn(database))


async def insert_outbox(
    conn: asyncpg.Connection,
    database: str,
    *,
    saga_id: str | None = None,
    event_type: str = "TEST_EVENT",
    payload: dict | None = None,
    causation_id: str = "",
) -> str:
    event_id = str(uuid.uuid4())
    saga_id = saga_id or str(uuid.uuid4())
    await conn.execute(
        INSERT_OUTBOX,
        uuid.UUID(event_id),
        PROBE_AGGREGATE,
        saga_id,
        event_type,
        json.dumps(payload if payload is not None else {"order_id": saga_id, "n": 1}),
        causation_id,
        TRACEPARENT,
    )
    return event_id
