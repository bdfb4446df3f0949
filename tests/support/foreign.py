"""Events from outside: records a test publishes to the event topics itself, as anyone with a producer can.

    shop = await Shop.open(units=10, balance="100.00")           # its own SKU and customer, seeded by the CLI
    record = await publish(bootstrap, "events.order", order_id, order_created(order_id, shop, amount="20.00"),
                           {"id": str(uuid.uuid4()), "eventType": "ORDER_CREATED", "sagaId": order_id})
    await until_consumed(bootstrap, record)                      # every consumer of the topic is past it
    [letter] = await until_dead_lettered(record, "order_svc", "unauthenticated")

  publishing     `publish`: what Kafka's console producer does (key = the order id, the default
                 partitioner, headers as given, the value's JSON bytes); `Published` remembers
                 where the record went and `event_id` is the id a consumer gives it (its `id`
                 header, or the name-based one of a record without one); `copy_of` a record
                 read from a topic with its key, headers or payload changed
  the events     `order_created` (a foreign ORDER_CREATED as the catalog defines it),
                 `payment_completed`
  what changed   `saga_effects`: tests/support/saga.saga_state without the dead letters a
                 refused record adds under its key
  witnesses      `until_consumed` (every consumer group of the topic committed past the
                 record), `until_dead_lettered` / `dead_letters_of` (`saga dlq list --json`),
                 `until_traced` (`saga trace ID --json` until it holds some event types),
                 `order_status` (`saga order show ID --json`)
  invariants     `check_invariants_of`: tests/support/invariants.check_invariants for sagas
                 whose keys also carry genuine events of other sagas the test re-published (see there)
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from saga_cli.stack.config import StackSettings
from shared.consumer import IncomingMessage, record_event_id
from tests.support.invariants import (
    TOPIC_OF, Report, Seeded, database_report, read_databases, read_topics, topic_report,
)
from tests.support.kafka import Record
from tests.support.load import saga
from tests.support.saga import SagaState, database, new_customer, new_sku, saga_state, wait_until_handled

CONSUMERS: dict[str, tuple[str, ...]] = {
    "events.order": ("order_svc", "inventory_svc", "payment_svc"),
    "events.inventory": ("order_svc", "payment_svc"),
    "events.payment": ("order_svc", "inventory_svc"),
}
"""topic → the consumer groups that read it (each service's app.py; order_svc reads events.order
for the ORDER_CREATED events anyone may publish)."""


def now() -> str:
    return datetime.now(UTC).isoformat()


# --- a test's own SKU and customer ----------------------------------------------------------

@dataclass(frozen=True)
class Shop:
    """One SKU and one customer of a test's own, seeded with `saga stock set` / `saga account set`
    as a user does first; `seeded` is what the invariants start from."""

    sku: str
    customer: str
    units: int
    balance: Decimal | None
    """None: the customer has no account (payment_svc does not know them)."""

    @classmethod
    async def open(cls, units: int, balance: str | None) -> "Shop":
        shop = cls(new_sku(), new_customer(), units, Decimal(balance) if balance is not None else None)
        await cli("stock", "set", shop.sku, str(units))
        if balance is not None:
            await cli("account", "set", shop.customer, balance)
        return shop

    @property
    def seeded(self) -> Seeded:
        return Seeded(stock={self.sku: self.units},
                      balances={self.customer: self.balance} if self.balance is not None else {})

    async def stock(self) -> dict[str, Any]:
        return json.loads(await cli("stock", "show", self.sku, "--json"))

    async def place(self, quantity: int, amount: str) -> str:
        """`saga order place` for this customer and SKU (with an Idempotency-Key of its own, so a
        retry places it once); the order id."""
        placed = json.loads(await cli("order", "place", "--customer", self.customer, "--item", f"{self.sku}:{quantity}",
                                      "--amount", amount, "--idempotency-key", str(uuid.uuid4()), "--json"))
        assert placed["status"] == "PENDING", placed
        return placed["order_id"]

    async def account(self) -> dict[str, Any] | None:
        """`saga account show C --json`, or None when payment_svc knows no such customer."""
        done = await cli_run("account", "show", self.customer, "--json")
        if done.returncode != 0:
            assert "not found" in done.stderr, done.stderr
            return None
        return json.loads(done.stdout)


OUTAGES = ("is unavailable", "is overloaded", "is not reachable", "did not answer", "outcome unknown")
"""What the CLI says when a service cannot answer now (other tests restart, stop and freeze services
and databases). Every command run through `cli_run` is safe to run again: reads, PUTs, and
`order place` with its own Idempotency-Key."""


async def cli_run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`saga ARGS…` as a process, run again while the service it asks cannot answer, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        done = await asyncio.to_thread(saga, *args)
        if done.returncode == 0 or not any(outage in done.stderr for outage in OUTAGES) or time.monotonic() > deadline:
            return done
        await asyncio.sleep(1.0)


async def cli(*args: str) -> str:
    done = await cli_run(*args)
    assert done.returncode == 0, f"saga {' '.join(args)} failed: {done.stderr}"
    return done.stdout


# --- events as the catalog (docs/contract/events.md) defines them ----------------------------

def order_created(order_id: str, shop: Shop, *, quantity: int = 2, amount: str = "20.00",
                  customer: str | None = None) -> dict[str, Any]:
    return {"event_type": "ORDER_CREATED", "schema_version": 1, "order_id": order_id, "occurred_at": now(),
            "customer_id": customer or shop.customer, "items": [{"sku": shop.sku, "quantity": quantity}],
            "amount": amount, "currency": "EUR"}


def payment_completed(order_id: str, amount: str) -> dict[str, Any]:
    return {"event_type": "PAYMENT_COMPLETED", "schema_version": 1, "order_id": order_id, "occurred_at": now(),
            "payment_id": str(uuid.uuid4()), "amount": amount, "currency": "EUR"}


def headers_for(event: Mapping[str, Any], event_id: str | None = None, **more: str) -> dict[str, str]:
    """The headers a hand-written event carries: a fresh `id` (unless `event_id` is ""), its
    eventType and its sagaId, and `more` (e.g. signature)."""
    headers = {} if event_id == "" else {"id": event_id or str(uuid.uuid4())}
    return {**headers, "eventType": event["event_type"], "sagaId": event["order_id"], **more}


# --- publishing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """A record the test produced, and where it went."""

    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, str], ...]
    partition: int
    offset: int

    @property
    def header(self) -> dict[str, str]:
        return dict(self.headers)

    @property
    def event_id(self) -> str:
        """The event id the consumers give it: its `id` header, or (none) the name-based id of
        its topic, partition and offset (shared/consumer.record_event_id)."""
        if "id" in self.header:
            return self.header["id"]
        return str(record_event_id(IncomingMessage(self.topic, self.partition, self.offset, None, None)))

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


async def publish(bootstrap: str, topic: str, key: str, value: Mapping[str, Any] | bytes,
                  headers: Mapping[str, str]) -> Published:
    """One record, as `kafka-console-producer --property parse.key=true --property parse.headers=true`
    sends it: the key's bytes (Kafka's default partitioner picks the partition), the headers as
    given, the value as JSON bytes (or the bytes given)."""
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, body, key=key.encode(),
                                            headers=[(name, text.encode()) for name, text in headers.items()])
    finally:
        await producer.stop()
    return Published(topic, key, body, tuple(headers.items()), sent.partition, sent.offset)


def copy_of(record: Record, *, key: str | None = None, headers: Mapping[str, str] = {},
            payload: Mapping[str, Any] = {}) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """(topic, key, value, headers) of a record read from a topic, with some of them changed:
    what anyone who can read the topics can publish again."""
    return record.topic, key or record.key, {**record.value, **payload}, {**record.headers, **headers}


# --- what a saga changed ----------------------------------------------------------------------

async def saga_effects(settings: StackSettings, order_id: str, skus: Iterable[str], customer: str) -> SagaState:
    """Everything the saga changed (saga_state), its outbox counts without DEAD_LETTER rows: a
    consumer that refuses a record writes its dead letter under the record's key, which is a
    record of the refusal, not an effect on the saga."""
    state = await saga_state(settings, order_id, skus, customer)
    counts = {}
    for name in ("orders", "inventory", "payments"):
        async with database(settings, name) as db:
            counts[name] = await db.fetchval(
                "SELECT count(*) FROM outbox WHERE saga_id = $1 AND event_type <> 'DEAD_LETTER'", order_id)
    return replace(state, outbox=counts)


# --- witnesses --------------------------------------------------------------------------------

async def until_consumed(bootstrap: str, record: Published, consumers: Iterable[str] | None = None,
                         timeout: float = 60.0) -> None:
    """Until every consumer group that reads the record's topic has committed past it: each acks a
    record only once its outcome (handled, skipped or dead-lettered) is committed."""
    for consumer in consumers or CONSUMERS[record.topic]:
        await wait_until_handled(bootstrap, consumer, record.topic, record.partition, record.offset, timeout=timeout)


async def dead_letters_of(key: str) -> list[dict[str, Any]]:
    """The dead letters (`saga dlq list --json`) of records with this key."""
    return [letter for letter in json.loads(await cli("dlq", "list", "--json")) if letter.get("key") == key]


def letters_for(letters: Iterable[Mapping[str, Any]], record: Published) -> list[Mapping[str, Any]]:
    return [letter for letter in letters
            if (letter["topic"], letter["partition"], letter["offset"])
            == (record.topic, record.partition, record.offset)]


async def until_dead_lettered(record: Published, consumer: str, fragment: str,
                              timeout: float = 60.0) -> list[dict[str, Any]]:
    """Until `consumer` has a dead letter of `record`; every dead letter of it then. Fails
    when the dead letter's error lacks `fragment`."""
    return (await until_all_dead_lettered([(record, consumer, fragment)], timeout))[0]


async def until_all_dead_lettered(expected: Iterable[tuple[Published, str, str]],
                                  timeout: float = 60.0) -> list[list[dict[str, Any]]]:
    """Until each (record, consumer, fragment) has its consumer's dead letter, whose error holds
    the fragment; each record's dead letters (by any consumer) then, in the order given."""
    expected = list(expected)
    deadline = time.monotonic() + timeout
    while True:
        letters = json.loads(await cli("dlq", "list", "--json"))
        found = [letters_for(letters, record) for record, _, _ in expected]
        missing = [(record, consumer) for (record, consumer, _), mine in zip(expected, found)
                   if not any(letter["consumer"] == consumer for letter in mine)]
        if not missing:
            for (record, consumer, fragment), mine in zip(expected, found):
                errors = [letter["error"] for letter in mine if letter["consumer"] == consumer]
                assert all(fragment in error for error in errors), (record.where, consumer, fragment, errors)
            return found
        if time.monotonic() > deadline:
            record, consumer = missing[0]
            raise AssertionError(f"no dead letter of {record.where} by {consumer} within {timeout:.0f}s "
                                 f"({len(missing)} of {len(expected)} missing)")
        await asyncio.sleep(0.5)


async def order_status(order_id: str) -> dict[str, Any] | None:
    """`saga order show ID --json`, or None when order_svc has no such order."""
    done = await cli_run("order", "show", order_id, "--json")
    if done.returncode != 0:
        assert "not found" in done.stderr, done.stderr
        return None
    return json.loads(done.stdout)


async def until_order_status(order_id: str, statuses: Collection[str] = ("CONFIRMED", "CANCELLED"),
                             timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        order = await order_status(order_id)
        if order is not None and order["status"] in statuses:
            return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} is {order and order['status']} after {timeout:.0f}s, "
                                 f"wanted {sorted(statuses)}")
        await asyncio.sleep(0.3)


async def until_traced(order_id: str, event_types: Iterable[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    """`saga trace ID --json` until its events (duplicates left out) include each of `event_types`;
    those events, in the order the trace gives them."""
    wanted = set(event_types)
    deadline = time.monotonic() + timeout
    while True:
        done = await cli_run("trace", order_id, "--json")
        events = [e for e in json.loads(done.stdout)["events"] if not e["duplicate"]] if done.returncode == 0 else []
        if wanted <= {e["event_type"] for e in events}:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"trace of {order_id} lacks {sorted(wanted - {e['event_type'] for e in events})} "
                                 f"after {timeout:.0f}s: {[e['event_type'] for e in events]} {done.stderr.strip()}")
        await asyncio.sleep(0.5)


# --- invariants with records of the test's own on the topics -----------------------------------

async def check_invariants_of(
    settings: StackSettings,
    order_ids: Collection[str],
    seeded: Seeded,
    *,
    since_ms: int,
    published: Collection[Published],
    extra_keys: Collection[str] = (),
    timeout: float = 90.0,
) -> list[str]:
    """check_invariants (I1–I6), with the records the test published itself left out of the topic
    checks unless they repeat an event the services emitted (same id, same key, same topic).

    For a test that re-publishes a genuine event under another saga's key: the checker counts, per
    saga, the events signed by their owner, and such a record is (its signature covers the saga of
    its payload, not the record's key), so it would count as a second event of the saga whose key
    it carries. The services refuse it (shared/consumer.authenticate compares the key); what they
    did is what the databases and the services' own records show."""
    order_ids = sorted({str(uuid.UUID(str(o))) for o in order_ids})
    keys = set(order_ids) | {str(k) for k in extra_keys}
    ours = {(p.topic, p.key, p.header.get("id", "")) for p in published}
    deadline = time.monotonic() + timeout
    while True:
        snapshot = await read_databases(settings, order_ids, keys, seeded)
        report = database_report(snapshot, order_ids, seeded)
        emitted = {(TOPIC_OF.get(aggregate, aggregate), saga_id, event_id)
                   for event_id, aggregate, _, saga_id in snapshot.outbox}
        messages = await read_topics(settings.kafka_bootstrap, keys, since_ms - 5_000)
        kept = [m for m in messages if (m.topic, m.key, m.event_id) not in ours - emitted]
        topics = topic_report(snapshot, kept, order_ids)
        if not (report.violations or topics.violations) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    print(f"  left out of the topic checks: {len(messages) - len(kept)} records the test published")
    final = Report(report.violations + topics.violations, report.lines + topics.lines)
    final.print()
    return final.violations
