"""Driving and watching whole sagas on the real stack, for the end-to-end tests.

  ids          `new_sku()`, `new_customer()`: random per test, so tests never meet
  HTTP         seed stock and accounts, place / show / cancel orders, read /metrics
  waiting      `wait_for_status`, `wait_until_healthy`; a consumer has processed a message:
               `wait_until_handled` (committed offset), `wait_for_count_above` (/metrics)
  events       `saga_events(reader, order_id, until=...)`: one saga's records on the
               event topics in causal order; `finished_sagas`, `trace_id`, `types`, `by_type`;
               `assert_causation_chain`, `assert_one_trace`, `assert_cancelled_after_release`;
               `redeliver(record)`: an exact copy of a real event, produced again
  databases    read only: `order_row`, `reservation`, `stock`, `payment`, `balance`, `outbox_rows`…,
               and `saga_state`, everything one saga changed (equal snapshots: no effect between)
  processes    `frozen(service)`: SIGSTOP a service for a few seconds, SIGCONT on exit
  CLI          `run_saga(*args)` / `run_saga_async`: the `saga` console script as a user runs it
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC
from saga_cli.stack.config import REPO_ROOT, StackSettings
from tests.support.kafka import Record, TopicReader

ORDER_TOPIC, INVENTORY_TOPIC, PAYMENT_TOPIC, DEADLETTER_TOPIC = (
    "events.order", "events.inventory", "events.payment", "events.deadletter",
)
SAGA_TOPICS = (ORDER_TOPIC, INVENTORY_TOPIC, PAYMENT_TOPIC)
ALL_TOPICS = (*SAGA_TOPICS, DEADLETTER_TOPIC)

SERVICE_URLS = {"order_svc": ORDER_SVC, "inventory_svc": INVENTORY_SVC, "payment_svc": PAYMENT_SVC}

TERMINAL = ("CONFIRMED", "CANCELLED")
SAGA_TIMEOUT = 60.0
"""How long one saga may take end to end before a test gives up: generous, because other people's
tests share the stack (a service killed with SIGKILL is back in its consumer group only after the
group's session timeout)."""
FREEZE_LIMIT = 5.0
"""The longest a test keeps a service frozen (SIGSTOP) while it waits for something."""

SAGA_CLI = REPO_ROOT / ".venv" / "bin" / "saga"


# --- ids --------------------------------------------------------------------------------

def new_sku() -> str:
    return f"T-{uuid.uuid4().hex[:16]}"


def new_customer() -> str:
    return f"c-{uuid.uuid4().hex[:16]}"


# --- the services' HTTP APIs --------------------------------------------------------------

def _client(service: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10)


async def seed_stock(sku: str, available: int) -> None:
    async with _client("inventory_svc") as http:
        answer = await http.put(f"/stock/{sku}", json={"available": available})
    assert answer.status_code == 200, answer.text


async def seed_account(customer: str, balance: str, currency: str = "EUR") -> None:
    async with _client("payment_svc") as http:
        answer = await http.put(f"/accounts/{customer}", json={"balance": balance, "currency": currency})
    assert answer.status_code == 200, answer.text


async def get_account(customer: str) -> httpx.Response:
    """GET /accounts/{customer} on payment_svc, the answer as it is."""
    async with _client("payment_svc") as http:
        return await http.get(f"/accounts/{customer}")


def order_body(customer: str, items: Mapping[str, int], amount: str, currency: str = "EUR") -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items.items()],
        "amount": amount,
        "currency": currency,
    }


async def post_order(body: Any, headers: Mapping[str, str] | None = None, *, raw: bytes | None = None) -> httpx.Response:
    """POST /orders with `body` as JSON (or `raw` bytes as they are); the answer as it is."""
    async with _client("order_svc") as http:
        if raw is not None:
            return await http.post("/orders", content=raw, headers={"Content-Type": "application/json", **(headers or {})})
        return await http.post("/orders", json=body, headers=dict(headers or {}))


async def place_order(customer: str, items: Mapping[str, int], amount: str, currency: str = "EUR") -> str:
    """Place an order over HTTP; its id."""
    answer = await post_order(order_body(customer, items, amount, currency))
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "PENDING"
    return answer.json()["order_id"]


async def get_order(order_id: str) -> httpx.Response:
    async with _client("order_svc") as http:
        return await http.get(f"/orders/{order_id}")


async def cancel_order(order_id: str) -> httpx.Response:
    async with _client("order_svc") as http:
        return await http.post(f"/orders/{order_id}/cancel")


async def wait_for_status(order_id: str, statuses: Iterable[str] = TERMINAL, timeout: float = SAGA_TIMEOUT) -> dict[str, Any]:
    """GET /orders/{id} until its status is one of `statuses`; the order then."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    async with _client("order_svc") as http:
        while True:
            answer = await http.get(f"/orders/{order_id}")
            assert answer.status_code == 200, answer.text
            order = answer.json()
            if order["status"] in wanted:
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} still {order['status']} after {timeout:.0f}s, wanted {sorted(wanted)}")
            await asyncio.sleep(0.1)


async def handled_count(service: str, event_type: str, outcome: str) -> float:
    """saga_events_handled_total{event_type, outcome} from the service's /metrics (0 if absent)."""
    async with _client(service) as http:
        text = (await http.get("/metrics")).text
    wanted = frozenset({f'event_type="{event_type}"', f'outcome="{outcome}"'})
    for line in text.splitlines():
        if line.startswith("saga_events_handled_total{") and _labels(line) == wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for_count_above(service: str, event_type: str, outcome: str, floor: float, timeout: float = SAGA_TIMEOUT) -> float:
    """Poll the service's /metrics until saga_events_handled_total{event_type, outcome} is above `floor`.

    A count below `floor` means someone restarted the service (it counts from zero again) and what it
    counted is gone: then this gives up waiting, and the consumer group's committed offset
    (`wait_until_handled`) is the witness left."""
    deadline = time.monotonic() + timeout
    while (count := await handled_count(service, event_type, outcome)) == floor:
        if time.monotonic() > deadline:
            raise AssertionError(f"{service}: {event_type} {outcome} still {count} after {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return count


async def wait_until_healthy(*services: str, timeout: float = SAGA_TIMEOUT) -> None:
    """GET /health of each service until it answers 200."""
    deadline = time.monotonic() + timeout
    for service in services:
        async with _client(service) as http:
            while True:
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{service} not healthy within {timeout:.0f}s")
                await asyncio.sleep(0.2)


def _labels(line: str) -> frozenset[str]:
    inside = line[line.index("{") + 1 : line.index("}")]
    return frozenset(part.strip() for part in inside.split(","))


# --- one saga's events on the topics --------------------------------------------------------

def of_saga(records: Iterable[Record], order_id: str, topics: Iterable[str] = SAGA_TOPICS) -> list[Record]:
    """The records keyed by `order_id` on `topics`, in causal order: an event after its cause,
    events at the same depth of the causation chain by Kafka timestamp."""
    wanted = set(topics)
    mine = [r for r in records if r.key == order_id and r.topic in wanted]
    by_id = {r.event_id: r for r in mine}

    def depth(record: Record, seen: frozenset[str] = frozenset()) -> int:
        cause = by_id.get(record.headers.get("causationId", ""))
        if cause is None or cause.event_id in seen:
            return 0
        return 1 + depth(cause, seen | {record.event_id})

    return sorted(mine, key=lambda r: (depth(r), r.timestamp_ms, r.topic, r.offset))


def types(records: Iterable[Record]) -> list[str]:
    return [r.headers["eventType"] for r in records]


def by_type(records: Iterable[Record], event_type: str) -> Record:
    """The one record of `event_type` (fails if there is none or more than one)."""
    found = [r for r in records if r.headers.get("eventType") == event_type]
    assert len(found) == 1, f"expected one {event_type}, got {len(found)}: {types(records)}"
    return found[0]


def arrived(events: list[Record], *last: str) -> bool:
    """An event of one of the `last` types was read, and so was every event it descends from, back to
    ORDER_CREATED. (Each partition is fetched on its own, so an effect may be read before its cause;
    the reader must read the topics of those causes.)"""
    by_id = {r.event_id: r for r in events}

    def whole_chain(record: Record, hops: int = 0) -> bool:
        cause = record.headers.get("causationId", "")
        return cause == "" or (cause in by_id and hops < len(events) and whole_chain(by_id[cause], hops + 1))

    return any(r.headers.get("eventType") in last and whole_chain(r) for r in events)


async def saga_events(
    reader: TopicReader, order_id: str, until: str | Iterable[str], timeout: float = SAGA_TIMEOUT
) -> list[Record]:
    """Read until the saga's `until` event (or each of several) and all its causes arrived; the saga's
    records so far, in causal order."""
    last = [until] if isinstance(until, str) else list(until)
    await reader.read_until(lambda rs: all(arrived(of_saga(rs, order_id), t) for t in last), timeout=timeout)
    return of_saga(reader.records, order_id)


async def finished_sagas(
    reader: TopicReader, order_ids: Iterable[str], sequences: Iterable[Iterable[str]], timeout: float = SAGA_TIMEOUT
) -> dict[str, tuple[str, ...]]:
    """Read until each saga's event types are one of the expected `sequences`, or the deadline passes
    (then the caller's assertions show what was read instead); each saga's event types."""
    order_ids, expected = list(order_ids), {tuple(sequence) for sequence in sequences}

    def read_so_far(records: list[Record]) -> dict[str, tuple[str, ...]]:
        return {o: tuple(types(of_saga(records, o))) for o in order_ids}

    try:
        await reader.read_until(lambda rs: set(read_so_far(rs).values()) <= expected, timeout=timeout)
    except AssertionError:
        pass
    return read_so_far(reader.records)


async def read_for(reader: TopicReader, seconds: float) -> list[Record]:
    """Keep reading for `seconds` (a bounded quiet period); every record read so far."""
    deadline = time.monotonic() + seconds
    await reader.read_until(lambda _: time.monotonic() >= deadline, timeout=seconds + 5)
    return reader.records


def trace_id(record: Record) -> str:
    version, trace, span, flags = record.headers["traceparent"].split("-")
    assert (version, len(trace), len(span), len(flags)) == ("00", 32, 16, 2), record.headers["traceparent"]
    return trace


def span_id(record: Record) -> str:
    return record.headers["traceparent"].split("-")[2]


def assert_causation_chain(events: list[Record]) -> None:
    """ORDER_CREATED starts the chain (empty causationId); each later event was caused by the one before it,
    and no event's Kafka timestamp is before its cause's."""
    assert events[0].headers["eventType"] == "ORDER_CREATED"
    assert events[0].headers["causationId"] == ""
    for cause, effect in zip(events, events[1:]):
        assert effect.headers["causationId"] == cause.event_id, (
            f"{effect.headers['eventType']} names {effect.headers['causationId']} as its cause, "
            f"expected {cause.headers['eventType']} {cause.event_id}"
        )
        assert effect.timestamp_ms >= cause.timestamp_ms


def assert_one_trace(events: list[Record]) -> None:
    """Every event of the saga carries the same W3C trace id, each in a span of its own."""
    assert len({trace_id(r) for r in events}) == 1, [r.headers["traceparent"] for r in events]
    assert len({span_id(r) for r in events}) == len(events)


def assert_headers_match_payloads(events: list[Record], order_id: str) -> None:
    for record in events:
        assert record.headers["sagaId"] == order_id
        assert record.value["order_id"] == order_id
        assert record.value["event_type"] == record.headers["eventType"]
        assert record.value["schema_version"] == 1
        uuid.UUID(record.event_id)


# --- re-delivering an event (what a producer retry or a consumer rewind does) ------------------

async def redeliver(bootstrap: str, record: Record) -> tuple[int, int]:
    """Produce an exact copy of `record` (key, value, every header) to its topic and
    partition; (partition, offset) of the copy."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        value = json.dumps(record.value, separators=(",", ":")).encode() if record.value is not None else None
        sent = await producer.send_and_wait(
            record.topic,
            value=value,
            key=record.key.encode() if record.key is not None else None,
            partition=record.partition,
            headers=[(name, text.encode()) for name, text in record.headers.items()],
        )
    finally:
        await producer.stop()
    return sent.partition, sent.offset


async def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, partition)])
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, partition))
    return found.offset if found is not None else -1


async def wait_until_handled(
    bootstrap: str, service: str, topic: str, partition: int, offset: int, timeout: float = SAGA_TIMEOUT
) -> None:
    """Until `service`'s consumer group has committed past `offset`: it acks only after the
    message's outcome is committed in its database (shared/consumer.py)."""
    deadline = time.monotonic() + timeout
    while await committed_offset(bootstrap, service, topic, partition) <= offset:
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} did not get past {topic}[{partition}]@{offset} within {timeout:.0f}s")
        await asyncio.sleep(0.1)


# --- the databases, read only ----------------------------------------------------------------

@asynccontextmanager
async def database(settings: StackSettings, name: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.service_dsn(name))
    try:
        yield connection
    finally:
        await connection.close()


async def order_row(settings: StackSettings, order_id: str) -> dict[str, Any] | None:
    async with database(settings, "orders") as db:
        row = await db.fetchrow(
            "SELECT status, reason, customer_id, amount, currency, stock_released_at IS NOT NULL AS stock_released"
            " FROM orders WHERE order_id = $1",
            uuid.UUID(order_id),
        )
    return dict(row) if row else None


async def order_history(settings: StackSettings, order_id: str) -> list[tuple[str, str | None, str | None]]:
    """(status, reason, event id) per status change, oldest first."""
    async with database(settings, "orders") as db:
        rows = await db.fetch("SELECT status, reason, event_id FROM order_history WHERE order_id = $1 ORDER BY id", uuid.UUID(order_id))
    return [(r["status"], r["reason"], str(r["event_id"]) if r["event_id"] else None) for r in rows]


async def orders_of_customer(settings: StackSettings, customer: str) -> int:
    async with database(settings, "orders") as db:
        return await db.fetchval("SELECT count(*) FROM orders WHERE customer_id = $1", customer)


async def reservation(settings: StackSettings, order_id: str) -> dict[str, Any] | None:
    async with database(settings, "inventory") as db:
        row = await db.fetchrow("SELECT reservation_id, status, items FROM reservations WHERE order_id = $1", uuid.UUID(order_id))
    if row is None:
        return None
    return {"reservation_id": str(row["reservation_id"]), "status": row["status"], "items": json.loads(row["items"])}


async def stock(settings: StackSettings, sku: str) -> tuple[int, int, int] | None:
    """(available, reserved, sold) of `sku`; None if inventory does not know it."""
    async with database(settings, "inventory") as db:
        row = await db.fetchrow("SELECT available, reserved, sold FROM stock WHERE sku = $1", sku)
    return (row["available"], row["reserved"], row["sold"]) if row else None


async def payment(settings: StackSettings, order_id: str) -> dict[str, Any] | None:
    async with database(settings, "payments") as db:
        row = await db.fetchrow(
            "SELECT payment_id, customer_id, amount, currency, status, reason FROM payments WHERE order_id = $1",
            uuid.UUID(order_id),
        )
    if row is None:
        return None
    return {**dict(row), "payment_id": str(row["payment_id"])}


async def balance(settings: StackSettings, customer: str) -> Decimal | None:
    async with database(settings, "payments") as db:
        return await db.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", customer)


async def outbox_rows(settings: StackSettings, order_id: str) -> dict[str, int]:
    """Per service database: how many events of this saga it has emitted (its outbox rows)."""
    counts = {}
    for name in ("orders", "inventory", "payments"):
        async with database(settings, name) as db:
            counts[name] = await db.fetchval("SELECT count(*) FROM outbox WHERE saga_id = $1", order_id)
    return counts


@dataclass(frozen=True)
class SagaState:
    """Everything a saga changed, in all three databases: equal snapshots mean no effect in between."""

    order: dict[str, Any] | None
    history: list[tuple[str, str | None, str | None]]
    reservation: dict[str, Any] | None
    stock: dict[str, tuple[int, int, int] | None]
    payment: dict[str, Any] | None
    balance: Decimal | None
    outbox: dict[str, int]


async def saga_state(settings: StackSettings, order_id: str, skus: Iterable[str], customer: str) -> SagaState:
    return SagaState(
        order=await order_row(settings, order_id),
        history=await order_history(settings, order_id),
        reservation=await reservation(settings, order_id),
        stock={sku: await stock(settings, sku) for sku in skus},
        payment=await payment(settings, order_id),
        balance=await balance(settings, customer),
        outbox=await outbox_rows(settings, order_id),
    )


# --- processes ---------------------------------------------------------------------------------

def service_pid(service: str) -> int:
    """The pid `saga status --json` reports for a running service."""
    status = json.loads(run_saga("status", "--json").stdout)
    found = {c["name"]: c for c in status["components"]}[service]
    assert found["state"] == "running" and found["pid"], found
    return int(found["pid"])


@asynccontextmanager
async def frozen(service: str) -> AsyncIterator[int]:
    """The service's process stopped (SIGSTOP) inside the block, continued (SIGCONT) on the way out,
    whatever happens. Other people's sagas wait meanwhile: keep the block short (FREEZE_LIMIT).
    Waits first until all three services are healthy, so nothing frozen waits on one that is down."""
    await wait_until_healthy(*SERVICE_URLS)
    pid = service_pid(service)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


# --- the CLI -------------------------------------------------------------------------------------

def run_saga(*args: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`saga ARGS…` as a user runs it (with `env` added to this process's environment); never
    raises on a non-zero exit."""
    return run_command([str(SAGA_CLI), *args], timeout=timeout, env=env)


async def run_saga_async(*args: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`run_saga` without blocking the event loop (tests run several CLIs at once)."""
    return await asyncio.to_thread(run_saga, *args, timeout=timeout, env=env)


def run_command(argv: list[str], timeout: float = 60, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command line as a shell would run it from the checkout (e.g. one the CLI printed, split
    with shlex); never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env={**os.environ, **(env or {})})



def assert_cancelled_after_release(events: list[Record], root_cause: Record, order: Mapping[str, Any]) -> None:
    """Compensation is last-in, first-out: inventory releases the stock in answer to the root
    cause (PAYMENT_FAILED / PAYMENT_REFUNDED), and the order is cancelled only after that.

    ORDER_CANCELLED is caused by INVENTORY_RELEASED, except when order_svc happened to read the
    release before a PAYMENT_FAILED (different topics, so either may come first: order_svc/domain.py);
    then it remembered the release (`stock_released`) and the decline itself cancels the order."""
    released, cancelled = by_type(events, "INVENTORY_RELEASED"), by_type(events, "ORDER_CANCELLED")
    assert released.headers["causationId"] == root_cause.event_id
    assert cancelled.timestamp_ms >= released.timestamp_ms
    if order["stock_released"]:
        assert root_cause.headers["eventType"] == "PAYMENT_FAILED"
        assert cancelled.headers["causationId"] == root_cause.event_id
    else:
        assert cancelled.headers["causationId"] == released.event_id
