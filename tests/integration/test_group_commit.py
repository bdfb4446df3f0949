"""Group commit against a real PostgreSQL: events handled at the same moment share one
transaction; a poison event in the middle of a batch is dead-lettered on its own while its
neighbours commit; one saga's events stay in order across batches."""
from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from shared.consumer import EventProcessor, IncomingMessage
from shared.errors import DomainError
from shared.events import OrderConfirmed, OrderCreated, encode_event, utc_now
from shared.group_commit import BatchAborted, GroupCommit
from shared.testing import scratch_database
from shared.topics import Header
from shared.tracing import new_traceparent
from shared.uow import Envelope, Transaction, UnitOfWork

pytestmark = pytest.mark.integration

CONSUMER = "batch_consumer"
POISON_CUSTOMER = "poison"


@pytest.fixture(scope="module")
async def dsn(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:
        connection = await asyncpg.connect(dsn)
        await connection.execute(
            "CREATE TABLE handled (order_id uuid NOT NULL, event_id uuid NOT NULL, seq bigserial, backend int)")
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


def created(order_id: uuid.UUID | None = None, customer: str = "alice") -> OrderCreated:
    return OrderCreated(order_id=order_id or uuid.uuid4(), occurred_at=utc_now(), customer_id=customer,
                        items=[{"sku": "WIDGET-1", "quantity": 1}], amount="10.00", currency="EUR")


async def record_and_confirm(event, tx: Transaction) -> None:
    """Remember which backend (transaction's connection) handled the event, refuse the poison."""
    if getattr(event, "customer_id", None) == POISON_CUSTOMER:
        raise DomainError("this customer's orders are refused")
    await tx.connection.execute(
        "INSERT INTO handled (order_id, event_id, backend) VALUES ($1, $2, pg_backend_pid())",
        event.order_id, uuid.UUID(tx.causation_id))
    if isinstance(event, OrderCreated):
        await tx.emit(OrderConfirmed(order_id=event.order_id, occurred_at=utc_now()))


HANDLERS = {OrderCreated: record_and_confirm, OrderConfirmed: record_and_confirm}


def message(event, offset: int, event_id: uuid.UUID | None = None) -> IncomingMessage:
    return IncomingMessage.with_headers(
        "events.order", 0, offset, str(event.order_id).encode(), json.dumps(encode_event(event)).encode(),
        {Header.ID: str(event_id or uuid.uuid4()), Header.EVENT_TYPE: event.event_type,
         Header.TRACEPARENT: new_traceparent()})


async def test_a_batch_writes_each_events_inbox_business_and_outbox_rows_in_one_transaction(uow, db):
    envelopes = [Envelope(uuid.uuid4(), created(), new_traceparent()) for _ in range(5)]
    results = await uow.handle_batch([(envelope, HANDLERS) for envelope in envelopes])

    assert [tx.causation_id for tx in results] == [str(e.event_id) for e in envelopes]
    assert not any(tx.duplicate for tx in results)
    ids = [e.event.order_id for e in envelopes]
    handled = await db.fetch("SELECT order_id, backend FROM handled WHERE order_id = ANY($1) ORDER BY seq", ids)
    assert [row["order_id"] for row in handled] == ids
    assert len({row["backend"] for row in handled}) == 1  # one connection, one transaction
    inbox = await db.fetch("SELECT event_id FROM inbox WHERE consumer = $1 AND saga_id = ANY($2)",
                           CONSUMER, [str(i) for i in ids])
    assert {row["event_id"] for row in inbox} == {e.event_id for e in envelopes}
    outbox = await db.fetch("SELECT id, saga_id, causation_id FROM outbox WHERE saga_id = ANY($1) "
                            "ORDER BY created_at", [str(i) for i in ids])  # created_at: clock_timestamp()
    assert [(row["saga_id"], row["causation_id"]) for row in outbox] == [
        (str(e.event.order_id), str(e.event_id)) for e in envelopes]
    assert [row["id"] for row in outbox] == [tx.emitted[0][0] for tx in results]


async def test_a_redelivered_event_in_a_batch_is_a_duplicate_and_emits_nothing(uow, db):
    first = Envelope(uuid.uuid4(), created(), new_traceparent())
    await uow.handle_batch([(first, HANDLERS)])
    fresh = Envelope(uuid.uuid4(), created(), new_traceparent())

    again, new = await uow.handle_batch([(first, HANDLERS), (fresh, HANDLERS)])

    assert again.duplicate and not again.emitted
    assert not new.duplicate
    assert await db.fetchval("SELECT count(*) FROM handled WHERE order_id = $1", first.event.order_id) == 1
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE saga_id = $1", str(first.event.order_id)) == 1
    same = Envelope(uuid.uuid4(), created(), new_traceparent())
    once, twice = await uow.handle_batch([(same, HANDLERS), (same, HANDLERS)])
    assert not once.duplicate and twice.duplicate


async def test_a_failing_event_rolls_the_whole_batch_back(uow, db):
    good = Envelope(uuid.uuid4(), created(), new_traceparent())
    poison = Envelope(uuid.uuid4(), created(customer=POISON_CUSTOMER), new_traceparent())
    with pytest.raises(DomainError):
        await uow.handle_batch([(good, HANDLERS), (poison, HANDLERS)])
    assert await db.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", good.event_id) == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE saga_id = $1", str(good.event.order_id)) == 0


async def test_events_submitted_together_share_a_batch_and_a_lone_event_does_not_wait(uow):
    group = GroupCommit(uow)
    lone = await group.handle(Envelope(uuid.uuid4(), created(), new_traceparent()), HANDLERS)
    assert lone is not None and (group.batches, group.aborted) == (1, 0)

    results = await asyncio.gather(*(group.handle(Envelope(uuid.uuid4(), created(), new_traceparent()), HANDLERS)
                                     for _ in range(30)))
    assert all(tx is not None and not tx.duplicate for tx in results)
    assert group.batches <= 3  # the first of the 30 starts a batch; the other 29 share the next


async def test_a_poison_event_in_the_middle_of_a_batch_is_dead_lettered_while_its_neighbours_commit(uow, db):
    consumer = EventProcessor(uow, HANDLERS, group_commit=GroupCommit(uow))
    events = [created() for _ in range(9)]
    events[4] = created(customer=POISON_CUSTOMER)
    messages = [message(event, offset) for offset, event in enumerate(events, start=1000)]

    outcomes = await asyncio.gather(*(consumer.handle(m) for m in messages))

    assert outcomes == ["handled"] * 4 + ["dead_lettered"] + ["handled"] * 4
    assert consumer.group_commit.aborted >= 1  # the poison did share a batch, and it rolled back
    good = [e.order_id for i, e in enumerate(events) if i != 4]
    assert await db.fetchval("SELECT count(*) FROM handled WHERE order_id = ANY($1)", good) == 8
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE saga_id = ANY($1) AND event_type = 'ORDER_CONFIRMED'",
                             [str(i) for i in good]) == 8
    dead = await db.fetchrow("SELECT topic, error FROM dead_letters WHERE consumer = $1 AND kafka_offset = $2",
                             CONSUMER, 1004)
    assert dead is not None and "refused" in dead["error"]


async def test_one_sagas_events_commit_in_order_across_batches(uow, db):
    """The dispatcher starts a saga's next event only after the previous finished, so each
    batch holds at most one event of a saga: its events commit in arrival order."""
    from shared.dispatch import KeyedDispatcher

    consumer = EventProcessor(uow, HANDLERS, group_commit=GroupCommit(uow, max_batch=4))
    dispatcher = KeyedDispatcher(16)
    sagas = [uuid.uuid4() for _ in range(6)]
    arrivals: dict[uuid.UUID, list[uuid.UUID]] = {saga: [] for saga in sagas}
    offset = 2000
    for round_ in range(5):
        for saga in sagas:
            event = created(saga) if round_ == 0 else OrderConfirmed(order_id=saga, occurred_at=utc_now())
            event_id = uuid.uuid4()
            arrivals[saga].append(event_id)
            record = message(event, offset, event_id)
            offset += 1
            await dispatcher.submit(str(saga), lambda record=record: consumer.handle(record))
    assert await dispatcher.join(30)

    assert consumer.group_commit.batches > 5  # it did run in several batches
    for saga in sagas:
        order = [row["event_id"] for row in await db.fetch(
            "SELECT event_id FROM handled WHERE order_id = $1 ORDER BY seq", saga)]
        assert order == arrivals[saga]


async def test_batch_aborted_carries_its_cause():
    error = BatchAborted(RuntimeError("boom"))
    assert isinstance(error.cause, RuntimeError) and "boom" in str(error)


async def waiting_on_a_lock(db, timeout: float = 10.0) -> bool:
    """Whether some backend of this database waits on an advisory lock, within `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_sagas_events_decide_one_after_another_under_its_lock_batched_or_not(uow, db):
    """The unit of work locks the saga with the inbox row: a second transaction for the same
    saga (another instance, a batch) waits until the first one ends, then sees its rows."""
    saga = uuid.uuid4()
    first = Envelope(uuid.uuid4(), created(saga), new_traceparent())
    second = Envelope(uuid.uuid4(), OrderConfirmed(order_id=saga, occurred_at=utc_now()), new_traceparent())
    release = asyncio.Event()
    seen_by_second: list[int] = []

    async def count_then_record(event, tx: Transaction) -> None:
        seen_by_second.append(await tx.connection.fetchval("SELECT count(*) FROM handled WHERE order_id = $1", saga))
        await record_and_confirm(event, tx)

    async def hold_first() -> None:
        async with uow.processing(first) as tx:
            await record_and_confirm(first.event, tx)
            await release.wait()

    holder = asyncio.create_task(hold_first())
    waiter = asyncio.create_task(uow.handle_batch([(second, {OrderConfirmed: count_then_record})]))
    assert await waiting_on_a_lock(db), "the batch did not wait for the saga's lock"
    assert not waiter.done()
    release.set()
    await holder
    [tx] = await waiter
    assert not tx.duplicate and seen_by_second == [1]  # it decided after the first committed, seeing its row
