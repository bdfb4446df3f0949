"""Poison and malformed messages are dead-lettered, never block their partition, and dead letters replay.

The test plays a bad producer: it writes straight to the event topics (no service
ever does) messages that cannot be handled — not JSON, an unknown eventType, a known
eventType whose payload breaks the schema, an unsupported schema_version, no `id`
header — into every partition of events.order, events.inventory and events.payment.
Each consumer whose business the message claims to be (a consumer skips another
service's known event types by their eventType header; without one, every consumer of
the topic looks) dead-letters it with the error, stays healthy, and goes on: sagas
placed right after, behind the poison in every partition, still finish.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from inventory_svc.handlers import HANDLERS as INVENTORY_HANDLERS
from order_svc.handlers import HANDLERS as ORDER_HANDLERS
from payment_svc.handlers import HANDLERS as PAYMENT_HANDLERS
from saga_cli.kafka import partition_for_key
from shared.testing import with_database
from shared.events import EVENT_TYPES
from tests.support.invariants import check_invariants
from tests.support.load import (
    Catalog, Placed, health, metric, order_statuses, place_orders, saga, saga_json, unexpected, wait_terminal,
)

pytestmark = pytest.mark.faults

PARTITIONS = 3
CONSUMERS = {
    "events.order": ("order_svc", "inventory_svc", "payment_svc"),
    "events.inventory": ("order_svc", "payment_svc"),
    "events.payment": ("order_svc", "inventory_svc"),
}
"""topic → the services that consume it (their app.py; order_svc reads events.order for the
ORDER_CREATED events anyone may publish, which it adopts)."""
HANDLED = {
    name: {cls.model_fields["event_type"].default for cls in handlers} | ({"ORDER_CREATED"} if name == "order_svc" else set())
    for name, handlers in (("order_svc", ORDER_HANDLERS), ("inventory_svc", INVENTORY_HANDLERS),
                           ("payment_svc", PAYMENT_HANDLERS))
}


@dataclass
class Poison:
    kind: str
    topic: str
    partition: int
    key: str
    value: bytes
    headers: dict[str, str]
    error: str
    """A fragment of the error the dead letter must carry."""
    offset: int = -1

    @property
    def expected_consumers(self) -> set[str]:
        header_type = self.headers.get("eventType", "")
        return {consumer for consumer in CONSUMERS[self.topic]
                if header_type not in EVENT_TYPES or header_type in HANDLED[consumer]}

    @property
    def where(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


def key_in_partition(partition: int) -> str:
    while True:
        key = str(uuid.uuid4())
        if partition_for_key(key.encode(), PARTITIONS) == partition:
            return key


def now() -> str:
    return datetime.now(UTC).isoformat()


def valid_event(event_type: str, order_id: str, catalog: Catalog) -> dict:
    common = {"event_type": event_type, "schema_version": 1, "order_id": order_id, "occurred_at": now()}
    fields = {
        "ORDER_CREATED": {"customer_id": catalog.rich, "items": [{"sku": catalog.plenty, "quantity": 1}],
                          "amount": "10.00", "currency": "EUR"},
        "INVENTORY_REJECTED": {"reason": "out_of_stock", "skus": [catalog.plenty]},
        "PAYMENT_FAILED": {"reason": "insufficient_funds"},
        "ORDER_CONFIRMATION_FAILED": {"reason": "cancelled_by_customer"},
        "INVENTORY_RELEASED": {"reservation_id": str(uuid.uuid4())},
        "PAYMENT_REFUNDED": {"payment_id": str(uuid.uuid4()), "amount": "10.00", "currency": "EUR"},
    }[event_type]
    return {**common, **fields}


# topic → (event type with a schema-breaking payload, how it breaks), (type sent as schema_version 2),
#          (valid event sent without an id header or signature)
PER_TOPIC = {
    "events.order": (("ORDER_CREATED", {"items": [], "amount": 12.5}), "ORDER_CONFIRMATION_FAILED",
                     "ORDER_CONFIRMATION_FAILED"),
    "events.inventory": (("INVENTORY_RESERVED", {"amount": "-3.00"}), "INVENTORY_RELEASED", "INVENTORY_REJECTED"),
    "events.payment": (("PAYMENT_FAILED", {"reason": "bad_luck"}), "PAYMENT_REFUNDED", "PAYMENT_FAILED"),
}


def poison_for(topic: str, partition: int, catalog: Catalog) -> list[Poison]:
    (invalid_type, breakage), old_version_type, unidentified_type = PER_TOPIC[topic]
    poison = []

    def add(kind: str, value: bytes, error: str, event_type: str | None = None, with_id: bool = True) -> None:
        key = key_in_partition(partition)
        headers = {"id": str(uuid.uuid4())} if with_id else {}
        if event_type:
            headers["eventType"] = event_type
        poison.append(Poison(kind, topic, partition, key, value, headers, error))

    add("not JSON", b'{"event_type": "ORDER_CREATED", oops', "not JSON")
    teleported = {"event_type": "ORDER_TELEPORTED", "schema_version": 1, "order_id": str(uuid.uuid4()), "occurred_at": now()}
    add("unknown eventType", json.dumps(teleported).encode(), "unknown event_type 'ORDER_TELEPORTED'", "ORDER_TELEPORTED")
    broken = {**valid_event("ORDER_CREATED", str(uuid.uuid4()), catalog), "event_type": invalid_type, **breakage}
    add(f"schema-invalid {invalid_type}", json.dumps(broken).encode(), f"invalid {invalid_type}", invalid_type)
    future = {**valid_event(old_version_type, str(uuid.uuid4()), catalog), "schema_version": 2}
    add(f"{old_version_type} schema_version 2", json.dumps(future).encode(), "unsupported schema_version 2", old_version_type)
    unidentified = valid_event(unidentified_type, str(uuid.uuid4()), catalog)
    # A valid event without an id header (and so without its owner's signature): refused. (An
    # ORDER_CREATED without one is what anyone may publish to start a saga: order_svc adopts it.)
    add(f"{unidentified_type} without id header", json.dumps(unidentified).encode(), "unauthenticated: no signature",
        unidentified_type, with_id=False)
    for item in poison:  # the payload's order id is the key, as a real producer would do
        try:
            payload = json.loads(item.value)
            payload["order_id"] = item.key
            item.value = json.dumps(payload).encode()
        except ValueError:
            pass
    return poison


async def produce(bootstrap: str, poison: list[Poison]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for item in poison:
            sent = await producer.send_and_wait(
                item.topic, item.value, key=item.key.encode(), partition=item.partition,
                headers=[(name, value.encode()) for name, value in item.headers.items()],
            )
            item.offset = sent.offset
    finally:
        await producer.stop()


async def dead_letters_by_record() -> dict[tuple[str, int, int], list[dict]]:
    found: dict[tuple[str, int, int], list[dict]] = {}
    for letter in await saga_json("dlq", "list"):
        found.setdefault((letter["topic"], letter["partition"], letter["offset"]), []).append(letter)
    return found


async def until_dead_lettered(poison: list[Poison], timeout: float) -> dict[tuple[str, int, int], list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await dead_letters_by_record()
        missing = [p for p in poison if {l["consumer"] for l in found.get(p.where, [])} < p.expected_consumers]
        if not missing:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} poison messages not dead-lettered by all their consumers within "
                                 f"{timeout:.0f}s, e.g. {missing[0].kind} at {missing[0].where}")
        await asyncio.sleep(1.0)


async def test_poison_messages_are_dead_lettered_and_their_partitions_keep_flowing(services) -> None:
    settings = services.settings
    catalog = Catalog.new()
    await catalog.seed()
    started_ms = int(time.time() * 1000)

    poison = [item for topic in CONSUMERS for partition in range(PARTITIONS)
              for item in poison_for(topic, partition, catalog)]
    await produce(settings.kafka_bootstrap, poison)
    print(f"injected {len(poison)} poison messages, in every partition of {', '.join(CONSUMERS)}:")
    for kind in dict.fromkeys(p.kind for p in poison):
        offsets = [f"{p.topic}[{p.partition}]@{p.offset}" for p in poison if p.kind == kind]
        print(f"  {kind}: {len(offsets)} ({offsets[0]} …)")

    # Sagas placed right after the poison: in every partition they sit behind it.
    placed = await place_orders(catalog, ["happy", "out_of_stock", "declined"] * 3)
    while {partition_for_key(p.order_id.encode(), PARTITIONS) for p in placed} != set(range(PARTITIONS)):
        placed += await place_orders(catalog, ["happy"])
    statuses = await wait_terminal(settings, [p.order_id for p in placed], timeout=60)
    print(f"{len(placed)} sagas placed behind the poison: all terminal")
    assert unexpected(placed, statuses) == []

    found = await until_dead_lettered(poison, timeout=60)
    for item in poison:
        letters = found[item.where]
        consumers = sorted(letter["consumer"] for letter in letters)
        assert set(consumers) == item.expected_consumers, (item.kind, item.where, consumers)
        assert len(consumers) == len(set(consumers)), f"{item.where} dead-lettered twice by one consumer: {consumers}"
        for letter in letters:
            assert item.error in letter["error"], (item.kind, letter["error"])
            assert letter["key"] == item.key
    dead_lettered = sum(len(found[p.where]) for p in poison)
    print(f"dead letters: {dead_lettered} for {len(poison)} poison messages "
          f"(each by every consumer whose business it claims to be)")

    for service in HANDLED:
        assert await health(service) == 200, f"{service} is not healthy after the poison"

    # A replay of a message that still cannot be decoded fails again, in one line.
    not_json = next(p for p in poison if p.kind == "not JSON" and p.topic == "events.order")
    letter = found[not_json.where][0]
    failed = await asyncio.to_thread(saga, "dlq", "replay", letter["id"])
    print(f"replay of {letter['id']} (not JSON, {letter['consumer']}): exit {failed.returncode}: {failed.stderr.strip()}")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1
    assert "failed again: not JSON" in failed.stderr

    violations = await check_invariants(settings, [p.order_id for p in placed], catalog.seeded, since_ms=started_ms,
                                        extra_keys=[p.key for p in poison])
    assert violations == []


# --- transient failures never become dead letters; a dead letter whose cause is gone replays --

async def payments_refuse_connections(superuser_dsn: str, refuse: bool) -> None:
    """payment_svc's database turns its role away (connection limit 0, its sessions ended), or takes it back."""
    admin = await asyncpg.connect(superuser_dsn)
    try:
        await admin.execute(f"ALTER DATABASE payments CONNECTION LIMIT {0 if refuse else -1}")
        if refuse:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = 'payments' AND usename = 'payment_svc'")
    finally:
        await admin.close()


REFUSED_SECONDS = 20.0
"""Longer than a handler's retries used to last (8–16 s) before they made a dead letter."""


async def test_a_database_that_turns_its_service_away_for_a_while_parks_nothing(services, pg_superuser_dsn) -> None:
    settings = services.settings
    catalog = Catalog.new()
    await catalog.seed()
    started_ms = int(time.time() * 1000)
    retries_before = await metric("payment_svc", "saga_retries_total", event_type="INVENTORY_RESERVED")

    await payments_refuse_connections(pg_superuser_dsn, refuse=True)
    try:
        print(f"injected: the payments database refuses payment_svc for {REFUSED_SECONDS:.0f}s")
        [order] = await place_orders(catalog, ["happy"])
        refused_until = time.monotonic() + REFUSED_SECONDS
        while time.monotonic() < refused_until:
            assert not [l for l in await saga_json("dlq", "list") if l["key"] == order.order_id], \
                "a transient failure became a dead letter"
            await asyncio.sleep(2.0)
        retried = await metric("payment_svc", "saga_retries_total", event_type="INVENTORY_RESERVED") - retries_before
        assert retried >= 5, f"payment_svc retried INVENTORY_RESERVED only {retried} times in {REFUSED_SECONDS:.0f}s"
    finally:
        await payments_refuse_connections(pg_superuser_dsn, refuse=False)
    print(f"order {order.order_id}: payment_svc retried INVENTORY_RESERVED {retried:.0f} times; database back")

    statuses = await wait_terminal(settings, [order.order_id], timeout=60)
    # Confirmed, or — when the retries' backoff carried the charge past the 30 s deadline — given
    # up by order_svc and compensated (§4.5): either way terminal with no manual step.
    assert statuses[order.order_id] in {("CONFIRMED", None), ("CANCELLED", "deadline_exceeded")}
    assert not [l for l in await saga_json("dlq", "list") if l["key"] == order.order_id]
    assert await health("payment_svc") == 200
    print(f"order {order.order_id}: {statuses[order.order_id][0]} with no manual step, no dead letter")
    assert await check_invariants(settings, [order.order_id], catalog.seeded, since_ms=started_ms) == []


async def payments_refuse_charges(superuser_dsn: str, refuse: bool) -> None:
    """A constraint every new payment row breaks: charging fails deterministically (a stand-in for
    a bug or a bad migration), until it is dropped."""
    admin = await asyncpg.connect(with_database(superuser_dsn, "payments"))
    try:
        if refuse:
            await admin.execute("ALTER TABLE payments ADD CONSTRAINT refuse_charges CHECK (amount < 0) NOT VALID")
        else:
            await admin.execute("ALTER TABLE payments DROP CONSTRAINT IF EXISTS refuse_charges")
    finally:
        await admin.close()


async def test_a_dead_letter_whose_cause_is_gone_replays_once(services, pg_superuser_dsn) -> None:
    settings = services.settings
    catalog = Catalog.new()
    await catalog.seed()
    started_ms = int(time.time() * 1000)

    await payments_refuse_charges(pg_superuser_dsn, refuse=True)
    try:
        print("injected: every new payment row breaks a constraint")
        [order] = await place_orders(catalog, ["happy"])
        deadline = time.monotonic() + 30
        while True:
            letters = [l for l in await saga_json("dlq", "list") if l["key"] == order.order_id]
            if letters:
                break
            assert time.monotonic() < deadline, "the charge that cannot succeed was not dead-lettered"
            await asyncio.sleep(0.5)
    finally:
        await payments_refuse_charges(pg_superuser_dsn, refuse=False)
    [letter] = letters
    print(f"dead letter {letter['id']}: {letter['consumer']} {letter['event_type']} {letter['error']}")
    assert (letter["consumer"], letter["event_type"], letter["topic"]) == ("payment_svc", "INVENTORY_RESERVED", "events.inventory")
    assert "CheckViolationError" in letter["error"]
    assert await health("payment_svc") == 200

    replayed = await asyncio.to_thread(saga, "dlq", "replay", letter["id"])
    print(f"replay: exit {replayed.returncode}: {replayed.stdout.strip()}{replayed.stderr.strip()}")
    assert replayed.returncode == 0
    assert "replayed by payment_svc: handled" in replayed.stdout
    statuses = await wait_terminal(settings, [order.order_id], timeout=30)
    print(f"order {order.order_id} after the replay: {statuses[order.order_id]}")
    assert statuses[order.order_id] == ("CONFIRMED", None)

    before = await payment_state(settings, order, catalog)
    again = await asyncio.to_thread(saga, "dlq", "replay", letter["id"], "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcome"] == "duplicate"
    await asyncio.sleep(1.0)  # anything a second charge would emit has time to be written
    assert await payment_state(settings, order, catalog) == before
    print(f"second replay: duplicate; payment, balance and outbox unchanged ({before})")

    assert await check_invariants(settings, [order.order_id], catalog.seeded, since_ms=started_ms) == []


async def payment_state(settings, order: Placed, catalog: Catalog) -> tuple:
    connection = await asyncpg.connect(settings.service_dsn("payments"))
    try:
        return (
            tuple(await connection.fetchrow("SELECT payment_id, status, amount FROM payments WHERE order_id = $1",
                                            uuid.UUID(order.order_id))),
            await connection.fetchval("SELECT balance FROM accounts WHERE customer_id = $1", catalog.rich),
            await connection.fetchval("SELECT count(*) FROM outbox WHERE saga_id = $1", order.order_id),
            await connection.fetchval("SELECT count(*) FROM inbox WHERE saga_id = $1", order.order_id),
        )
    finally:
        await connection.close()
