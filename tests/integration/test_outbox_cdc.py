"""The way out: a committed outbox row reaches its topic through Debezium's EventRouter, a rolled-back one never does."""
from __future__ import annotations

import uuid

import pytest

from tests.support.kafka import TopicReader
from saga_cli.stack.config import SERVICE_DATABASES
from tests.support.outbox import PROBE_TOPIC, TRACEPARENT, connect_service, insert_outbox

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("database", sorted(SERVICE_DATABASES))
async def test_committed_outbox_row_is_published_with_key_headers_and_json_payload(stack, database):
    topic = PROBE_TOPIC  # events.<aggregate_type>: the row's aggregate type is "probe"
    saga_id = str(uuid.uuid4())
    causation_id = str(uuid.uuid4())
    payload = {"order_id": saga_id, "amount": "40.00", "items": [{"sku": "A-1", "quantity": 2}]}

    async with TopicReader(stack.settings.kafka_bootstrap, topic) as reader:
        conn = await connect_service(stack.settings, database)
        try:
            async with conn.transaction():
                event_id = await insert_outbox(
                    conn, database, saga_id=saga_id, event_type="SOMETHING_HAPPENED", payload=payload, causation_id=causation_id
                )
        finally:
            await conn.close()
        records = await reader.read_until(lambda rs: any(r.event_id == event_id for r in rs))

    record = next(r for r in records if r.event_id == event_id)
    assert record.key == saga_id
    assert record.value == payload
    assert record.headers["eventType"] == "SOMETHING_HAPPENED"
    assert record.headers["sagaId"] == saga_id
    assert record.headers["causationId"] == causation_id
    assert record.headers["traceparent"] == TRACEPARENT
    assert not any(name.startswith("__debezium") for name in record.headers)


async def test_rolled_back_outbox_row_is_never_published(stack):
    saga_id = str(uuid.uuid4())  # one key, one partition: the marker cannot overtake it
    async with TopicReader(stack.settings.kafka_bootstrap, PROBE_TOPIC) as reader:
        conn = await connect_service(stack.settings, "orders")
        try:
            transaction = conn.transaction()
            await transaction.start()
            rolled_back_id = await insert_outbox(conn, "orders", saga_id=saga_id)
            await transaction.rollback()
            # A committed row after it, same slot and same partition: once it has
            # arrived, the rolled-back one would have arrived before it if it could.
            marker_id = await insert_outbox(conn, "orders", saga_id=saga_id)
        finally:
            await conn.close()
        records = await reader.read_until(lambda rs: any(r.event_id == marker_id for r in rs))

    assert rolled_back_id not in {r.event_id for r in records}
