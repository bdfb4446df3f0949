"""The unit of work against a real PostgreSQL: inbox, business rows and outbox commit
or roll back together, duplicates are no-ops, outbox rows carry the saga's metadata."""
from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from shared.events import InventoryReleased, OrderConfirmed, OrderCreated, encode_event, utc_now
from shared.testing import scratch_database
from shared.tracing import new_traceparent, parse_traceparent
from shared.uow import Envelope, Transaction, TransientError, UnitOfWork

pytestmark = pytest.mark.integration

CONSUMER = "test_consumer"


@pytest.fixture(scope="module")
async def dsn(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:
        connection = await asyncpg.connect(dsn)
        await connection.execute("CREATE TABLE widgets (order_id uuid NOT NULL, note text NOT NULL)")
        await connection.close()
        yield dsn


@pytest.fixture(scope="module")
async def uow(dsn):
    uow = await UnitOfWork.connect(dsn, CONSUMER, max_size=20)
    yield uow
    await uow.close()


@pytest.fixture
async def db(dsn):
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def order_created(order_id: uuid.UUID | None = None) -> OrderCreated:
    return OrderCreated(
        order_id=order_id or uuid.uuid4(),
        occurred_at=utc_now(),
        customer_id="alice",
        items=[{"sku": "WIDGET-1", "quantity": 2}],
        amount="40.00",
        currency="EUR",
    )


def delivery(event, traceparent: str | None = None, event_id: uuid.UUID | None = None) -> Envelope:
    return Envelope(event_id=event_id or uuid.uuid4(), event=event, traceparent=traceparent or new_traceparent())


async def add_widget_and_confirm(event, tx: Transaction) -> None:
    await tx.connection.execute("INSERT INTO widgets (order_id, note) VALUES ($1, 'handled')", event.order_id)
    await tx.emit(OrderConfirmed(order_id=event.order_id, occurred_at=utc_now()))


async def rows(db, table: str, order_id: uuid.UUID) -> list[asyncpg.Record]:
    column = {"widgets": "order_id", "inbox": "saga_id", "outbox": "saga_id"}[table]
    return await db.fetch(f"SELECT * FROM {table} WHERE {column}::text = $1", str(order_id))


async def test_handler_inbox_and_outbox_rows_commit_together(uow, db):
    incoming = delivery(order_created())
    async with uow.processing(incoming) as tx:
        assert not tx.duplicate
        await add_widget_and_confirm(incoming.event, tx)

    order_id = incoming.event.order_id
    assert len(await rows(db, "widgets", order_id)) == 1
    [inbox] = await rows(db, "inbox", order_id)
    assert (inbox["consumer"], inbox["event_id"], inbox["event_type"]) == (CONSUMER, incoming.event_id, "ORDER_CREATED")
    [outbox] = await rows(db, "outbox", order_id)
    [(emitted_id, emitted)] = tx.emitted
    assert outbox["id"] == emitted_id
    assert outbox["aggregate_type"] == "order"
    assert outbox["aggregate_id"] == outbox["saga_id"] == str(order_id)
    assert outbox["event_type"] == "ORDER_CONFIRMED"
    assert outbox["causation_id"] == str(incoming.event_id)
    assert json.loads(outbox["payload"]) == encode_event(emitted)


async def test_emitted_traceparent_is_a_child_in_the_same_trace(uow, db):
    incoming = delivery(order_created(), traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    async with uow.processing(incoming) as tx:
        await add_widget_and_confirm(incoming.event, tx)

    [outbox] = await rows(db, "outbox", incoming.event.order_id)
    child = parse_traceparent(outbox["traceparent"])
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.span_id != "00f067aa0ba902b7"
    assert child.flags == "01"


async def test_a_malformed_incoming_traceparent_starts_a_new_trace(uow, db):
    incoming = delivery(order_created(), traceparent="not-a-traceparent")
    async with uow.processing(incoming) as tx:
        await add_widget_and_confirm(incoming.event, tx)

    [outbox] = await rows(db, "outbox", incoming.event.order_id)
    assert parse_traceparent(outbox["traceparent"]) is not None


async def test_money_reaches_the_payload_as_a_two_place_string(uow, db):
    event = order_created()
    async with uow.starting(event.order_id) as tx:
        await tx.emit(event)

    [outbox] = await rows(db, "outbox", event.order_id)
    payload = json.loads(outbox["payload"])
    assert payload["amount"] == "40.00"
    assert payload["currency"] == "EUR"


async def test_a_raising_handler_leaves_no_rows_at_all(uow, db):
    incoming = delivery(order_created())
    with pytest.raises(RuntimeError, match="boom"):
        async with uow.processing(incoming) as tx:
            await add_widget_and_confirm(incoming.event, tx)
            raise RuntimeError("boom")

    for table in ("widgets", "inbox", "outbox"):
        assert await rows(db, table, incoming.event.order_id) == []


async def test_a_failed_event_can_be_handled_again(uow, db):
    incoming = delivery(order_created())
    with pytest.raises(RuntimeError):
        async with uow.processing(incoming) as tx:
            raise RuntimeError("first attempt fails")

    async with uow.processing(incoming) as tx:
        assert not tx.duplicate
        await add_widget_and_confirm(incoming.event, tx)
    assert len(await rows(db, "outbox", incoming.event.order_id)) == 1


async def test_a_duplicate_event_id_is_a_clean_no_op(uow, db):
    incoming = delivery(order_created())
    async with uow.processing(incoming) as tx:
        await add_widget_and_confirm(incoming.event, tx)

    async with uow.processing(incoming) as again:
        assert again.duplicate
        with pytest.raises(RuntimeError):
            await again.emit(OrderConfirmed(order_id=incoming.event.order_id, occurred_at=utc_now()))

    order_id = incoming.event.order_id
    assert len(await rows(db, "widgets", order_id)) == 1
    assert len(await rows(db, "inbox", order_id)) == 1
    assert len(await rows(db, "outbox", order_id)) == 1


async def test_the_same_event_id_is_new_to_another_consumer(uow, db):
    incoming = delivery(order_created())
    async with uow.processing(incoming) as tx:
        assert not tx.duplicate
    other = UnitOfWork(uow.pool, "another_consumer")
    async with other.processing(incoming) as tx:
        assert not tx.duplicate
    assert len(await rows(db, "inbox", incoming.event.order_id)) == 2


async def test_concurrent_redeliveries_have_one_effect(uow, db):
    incoming = delivery(order_created())
    results = await asyncio.gather(*(uow.handle(incoming, {OrderCreated: add_widget_and_confirm}) for _ in range(8)))

    assert sorted(tx.duplicate for tx in results) == [False] + [True] * 7
    assert len(await rows(db, "widgets", incoming.event.order_id)) == 1
    assert len(await rows(db, "outbox", incoming.event.order_id)) == 1


async def test_handle_records_nothing_for_an_event_without_handler(uow, db):
    incoming = delivery(order_created())
    assert await uow.handle(incoming, {InventoryReleased: add_widget_and_confirm}) is None
    assert await rows(db, "inbox", incoming.event.order_id) == []


async def test_starting_writes_no_inbox_row_and_starts_a_trace(uow, db):
    event = order_created()
    async with uow.starting(event.order_id) as tx:
        await tx.emit(event)

    assert await rows(db, "inbox", event.order_id) == []
    [outbox] = await rows(db, "outbox", event.order_id)
    assert outbox["causation_id"] == ""
    assert outbox["event_type"] == "ORDER_CREATED"
    assert parse_traceparent(outbox["traceparent"]) is not None


async def test_starting_continues_a_callers_trace(uow, db):
    event = order_created()
    async with uow.starting(event.order_id, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") as tx:
        await tx.emit(event)

    [outbox] = await rows(db, "outbox", event.order_id)
    assert parse_traceparent(outbox["traceparent"]).trace_id == "0af7651916cd43dd8448eb211c80319c"


async def test_an_event_of_another_saga_is_refused_and_nothing_commits(uow, db):
    incoming = delivery(order_created())
    with pytest.raises(ValueError, match="emitted in saga"):
        async with uow.processing(incoming) as tx:
            await tx.emit(OrderConfirmed(order_id=uuid.uuid4(), occurred_at=utc_now()))
    assert await rows(db, "inbox", incoming.event.order_id) == []


async def test_a_deadlock_surfaces_as_a_transient_error_and_rolls_back(uow, db):
    first, second = uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO widgets (order_id, note) VALUES ($1, 'a'), ($2, 'b')", first, second)
    both_hold_one_lock = asyncio.Barrier(2)

    async def lock_in_order(a: uuid.UUID, b: uuid.UUID) -> None:
        incoming = delivery(order_created(a))
        async with uow.processing(incoming) as tx:
            await tx.connection.execute("UPDATE widgets SET note = 'x' WHERE order_id = $1", a)
            await both_hold_one_lock.wait()
            await tx.connection.execute("UPDATE widgets SET note = 'x' WHERE order_id = $1", b)

    outcomes = await asyncio.gather(lock_in_order(first, second), lock_in_order(second, first), return_exceptions=True)

    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], TransientError)
    assert isinstance(failures[0].__cause__, asyncpg.exceptions.DeadlockDetectedError)


async def test_an_unreachable_database_is_a_transient_error():
    with pytest.raises(TransientError):
        await UnitOfWork.connect("postgresql://nobody@127.0.0.1:9/nothing", CONSUMER)
