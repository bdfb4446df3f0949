"""The saga's invariants (docs/contract/invariants.md), checked over the three databases and the
topics for a set of sagas.

    report = await check(settings, order_ids, seeded, since_ms=started_ms)
    assert report.violations == []

Used by `saga bench` after every run and, through the thin wrapper
tests/support/invariants.py, by the integration and fault tests. The sagas' owner
(a test, a benchmark run) seeds its own SKUs and customers (random names), so their
seeded levels are known: `Seeded.stock` (SKU → units on hand when seeded, none reserved
or sold) and `Seeded.balances` (customer → balance when seeded). The checker only
reads: the databases as the service roles (read-only transactions), the topics with a
consumer of no group. It checks:

  I1  every saga is terminal (CONFIRMED or CANCELLED);
  I2  per SKU: seeded = available + reserved + sold, no count negative; reserved and
      sold equal the sagas' RESERVED and COMMITTED reservations (so 0 reserved at the end);
  I3  per customer: seeded = balance + captured − refunded, balance not negative;
  I4  an event changed state once: each order's history repeats no status; per saga at
      most one event id of each type in the outboxes and on the topics (exactly one
      ORDER_CREATED), duplicates on a topic being redeliveries of one id;
  I5  every outbox row of the sagas (and of `extra_keys`, e.g. dead letters of
      messages a test produced) reached its topic: its id is an `id` header there;
  I6  CONFIRMED ⇔ payment CAPTURED ⇔ reservation COMMITTED; CANCELLED ⇔ no payment
      CAPTURED and no reservation RESERVED or COMMITTED.

A saga finishes a little after its order turns terminal (INVENTORY_COMMITTED follows
ORDER_CONFIRMED), so `check` polls until every invariant holds or `timeout` passes,
and returns the report: its violations that remain ([] is the only pass) and one
line of counts per invariant.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from saga_cli.stack.config import StackSettings
from saga_cli.kafka import fetch
from shared.auth import OWNERS, KeyRing, Unauthenticated

__all__ = ["Seeded", "Snapshot", "Report", "Message", "check", "read_databases", "read_topics", "connect_read_only",
           "database_report", "topic_report", "TERMINAL", "TOPIC_OF", "SAGA_TOPICS"]

TERMINAL = ("CONFIRMED", "CANCELLED")
TOPIC_OF = {"order": "events.order", "inventory": "events.inventory", "payment": "events.payment",
            "deadletter": "events.deadletter"}
SAGA_TOPICS = ("events.order", "events.inventory", "events.payment")
TOPIC_AGGREGATE = {"events.order": "order", "events.inventory": "inventory", "events.payment": "payment"}


def _ring(settings: StackSettings) -> KeyRing | None:
    """The stack's public keys, or None when it has none (then every message counts as signed)."""
    try:
        ring = KeyRing.load(settings.keys_dir, None)
    except (OSError, ValueError):
        return None
    return ring if ring.public_keys else None
TIME_MARGIN_MS = 5_000


@dataclass(frozen=True)
class Seeded:
    """What the sagas' owner seeded: SKU → units (all available), customer → balance."""

    stock: Mapping[str, int] = field(default_factory=dict)
    balances: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass
class Snapshot:
    """The sagas' rows in the three databases at one moment."""

    orders: dict[str, tuple[str, str | None]]  # order id → (status, reason)
    history: dict[str, list[str]]  # order id → statuses in order
    stock: dict[str, tuple[int, int, int]]  # sku → (available, reserved, sold)
    reservations: dict[str, tuple[str, list[dict]]]  # order id → (status, items)
    accounts: dict[str, Decimal]  # customer → balance
    payments: dict[str, tuple[str, str, Decimal]]  # order id → (status, customer, amount)
    customer_payments: list[tuple[str, str, Decimal]]  # (customer, status, amount) of every payment of the customers
    outbox: list[tuple[str, str, str, str]]  # (id, aggregate_type, event_type, saga_id) over the three databases


@dataclass
class Report:
    """The outcome of the checks: what does not hold, a line of counts per invariant, the records read."""

    violations: list[str]
    """What does not hold, one line each: [] is the only pass."""
    lines: list[str]
    """One line of counts per invariant."""
    messages: list[Message] = field(default_factory=list)
    """The sagas' records read from the topics for I4/I5 (with their timestamps)."""

    def print(self) -> None:
        """Print the lines of counts, the number of violations and the first 30 of them to stdout."""
        for line in self.lines:
            print(f"  {line}")
        print(f"invariants: {len(self.violations)} violation{'s' if len(self.violations) != 1 else ''}")
        for violation in self.violations[:30]:
            print(f"  ✗ {violation}")
        if len(self.violations) > 30:
            print(f"  … and {len(self.violations) - 30} more")


async def check(
    settings: StackSettings,
    order_ids: Collection[str],
    seeded: Seeded,
    *,
    since_ms: int,
    extra_keys: Collection[str] = (),
    timeout: float = 90.0,
) -> Report:
    """Poll until I1–I6 hold for `order_ids` or `timeout` passes; the report of the last look."""
    order_ids = sorted({str(uuid.UUID(str(o))) for o in order_ids})
    keys = set(order_ids) | {str(k) for k in extra_keys}
    deadline = time.monotonic() + timeout
    while True:
        snapshot = await read_databases(settings, order_ids, keys, seeded)
        report = database_report(snapshot, order_ids, seeded)
        if not report.violations or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    while True:  # the last outbox rows may still be on their way to Kafka
        messages = await read_topics(settings.kafka_bootstrap, keys, since_ms - TIME_MARGIN_MS, ring=_ring(settings))
        topics = topic_report(snapshot, messages, order_ids)
        if not topics.violations or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
        snapshot = await read_databases(settings, order_ids, keys, seeded)
        report = database_report(snapshot, order_ids, seeded)
    return Report(report.violations + topics.violations, report.lines + topics.lines, messages)


# --- reading ------------------------------------------------------------------------------

async def connect_read_only(settings: StackSettings, database: str) -> asyncpg.Connection:
    """A connection to a service database as its role, in which every transaction is read-only."""
    return await asyncpg.connect(settings.service_dsn(database),
                                 server_settings={"default_transaction_read_only": "on"})


async def read_databases(settings: StackSettings, order_ids: list[str], keys: Iterable[str], seeded: Seeded) -> Snapshot:
    """The Snapshot of the sagas `order_ids`: their orders, history, reservations and payments, the seeded
    SKUs' stock and customers' accounts and payments, and the outbox rows whose saga id is one of
    `keys`, over the three databases (read-only, as the service roles)."""
    ids = [uuid.UUID(o) for o in order_ids]
    keys = sorted(keys)
    orders_db, inventory_db, payments_db = await asyncio.gather(
        *(connect_read_only(settings, database) for database in ("orders", "inventory", "payments")))
    try:
        orders = {str(r["order_id"]): (r["status"], r["reason"]) for r in await orders_db.fetch(
            "SELECT order_id, status, reason FROM orders WHERE order_id = ANY($1::uuid[])", ids)}
        history: dict[str, list[str]] = defaultdict(list)
        for r in await orders_db.fetch(
                "SELECT order_id, status FROM order_history WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, id", ids):
            history[str(r["order_id"])].append(r["status"])
        stock = {r["sku"]: (r["available"], r["reserved"], r["sold"]) for r in await inventory_db.fetch(
            "SELECT sku, available, reserved, sold FROM stock WHERE sku = ANY($1::text[])", list(seeded.stock))}
        reservations = {str(r["order_id"]): (r["status"], json.loads(r["items"])) for r in await inventory_db.fetch(
            "SELECT order_id, status, items FROM reservations WHERE order_id = ANY($1::uuid[])", ids)}
        accounts = {r["customer_id"]: r["balance"] for r in await payments_db.fetch(
            "SELECT customer_id, balance FROM accounts WHERE customer_id = ANY($1::text[])", list(seeded.balances))}
        payments = {str(r["order_id"]): (r["status"], r["customer_id"], r["amount"]) for r in await payments_db.fetch(
            "SELECT order_id, status, customer_id, amount FROM payments WHERE order_id = ANY($1::uuid[])", ids)}
        customer_payments = [(r["customer_id"], r["status"], r["amount"]) for r in await payments_db.fetch(
            "SELECT customer_id, status, amount FROM payments WHERE customer_id = ANY($1::text[])", list(seeded.balances))]
        outbox = []
        for db in (orders_db, inventory_db, payments_db):
            outbox += [(str(r["id"]), r["aggregate_type"], r["event_type"], r["saga_id"]) for r in await db.fetch(
                "SELECT id, aggregate_type, event_type, saga_id FROM outbox WHERE saga_id = ANY($1::text[])", keys)]
    finally:
        await asyncio.gather(orders_db.close(), inventory_db.close(), payments_db.close())
    return Snapshot(orders, dict(history), stock, reservations, accounts, payments, customer_payments, outbox)


@dataclass(frozen=True)
class Message:
    """One record read from a topic: its key, `id` and `eventType` headers ("" when missing)."""

    topic: str
    key: str | None
    event_id: str
    event_type: str
    timestamp_ms: int = 0
    """The record's timestamp (CreateTime: set by the producer, for Debezium the time it read the change)."""
    authentic: bool = True
    """Signed by the service that owns its type (shared/auth.py); False for what anyone else
    published (a foreign ORDER_CREATED, a forged event), which the services do not act on."""


async def read_topics(bootstrap: str, keys: Collection[str], since_ms: int, timeout: float = 60.0,
                      ring: KeyRing | None = None) -> list[Message]:
    """The messages with one of `keys` on the four topics, from `since_ms` up to the ends seen at
    start. Records anyone produced are read too (keys and headers decoded with replacement, a
    record the client cannot parse skipped): the checks decide what they mean."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for topic in TOPIC_OF.values()
                      for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: max(since_ms, 0) for tp in partitions})
        pending = set()
        for tp in partitions:
            start = starts[tp].offset if starts.get(tp) is not None else end[tp]
            consumer.seek(tp, start)
            if start < end[tp]:
                pending.add(tp)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"topics not read to their end within {timeout:.0f}s: {sorted(pending)}")
            batches = await fetch(consumer, sorted(pending), timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:  # anyone may have produced them: decode nothing strictly
                    key = record.key.decode("utf-8", "replace") if record.key is not None else None
                    if record.offset < end[tp] and key in keys:
                        headers = {name: value.decode("utf-8", "replace")
                                   for name, value in record.headers or () if value is not None}
                        messages.append(Message(tp.topic, key, headers.get("id", ""), headers.get("eventType", ""),
                                                record.timestamp, _authentic(ring, record, headers)))
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        return messages
    finally:
        await consumer.stop()


def _authentic(ring: KeyRing | None, record, headers: Mapping[str, str]) -> bool:
    """Whether `record` is its owner's signed event (True for everything when there is no ring,
    and for the dead-letter topic, whose records the checks only count)."""
    if ring is None or record.topic not in SAGA_TOPICS:
        return True
    try:
        payload = json.loads(record.value)
        if record.key is None or record.key.decode("utf-8", "replace") != str(payload["order_id"]):
            return False  # another saga's event under this key: the services refuse it too
        ring.authenticate(OWNERS[TOPIC_AGGREGATE[record.topic]], headers.get("signature"),
                          event_id=headers.get("id", ""), event_type=headers.get("eventType", ""),
                          saga_id=str(payload["order_id"]), causation_id=headers.get("causationId", ""),
                          payload=payload)
    except (Unauthenticated, ValueError, TypeError, KeyError, RecursionError):
        return False
    return True


# --- checking -----------------------------------------------------------------------------

def database_report(s: Snapshot, order_ids: list[str], seeded: Seeded) -> Report:
    """I1, I2, I3, I4 (databases) and I6 over `s` for `order_ids` (docs/contract/invariants.md): the
    violations and one line of counts each."""
    violations: list[str] = []
    lines: list[str] = []

    # I1
    statuses = Counter(s.orders.get(o, ("MISSING", None))[0] for o in order_ids)
    reasons = Counter(s.orders[o][1] for o in order_ids if o in s.orders and s.orders[o][0] == "CANCELLED")
    open_sagas = [o for o in order_ids if s.orders.get(o, ("MISSING",))[0] not in TERMINAL]
    violations += [f"I1 order {o} is {s.orders.get(o, ('MISSING',))[0]}" for o in open_sagas]
    lines.append(f"I1 terminal: {len(order_ids) - len(open_sagas)}/{len(order_ids)} "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}; "
                 f"cancelled for {', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or 'nothing'})")

    # I2
    held: dict[str, Counter] = {"RESERVED": Counter(), "COMMITTED": Counter()}
    for status, items in s.reservations.values():
        if status in held:
            for item in items:
                held[status][item["sku"]] += item["quantity"]
    for sku, initial in sorted(seeded.stock.items()):
        if sku not in s.stock:
            violations.append(f"I2 sku {sku} is missing")
            continue
        available, reserved, sold = s.stock[sku]
        if min(available, reserved, sold) < 0:
            violations.append(f"I2 sku {sku} has a negative count {s.stock[sku]}")
        if available + reserved + sold != initial:
            violations.append(f"I2 sku {sku}: seeded {initial} != available {available} + reserved {reserved} + sold {sold}")
        if reserved != held["RESERVED"][sku] or sold != held["COMMITTED"][sku]:
            violations.append(f"I2 sku {sku}: reserved {reserved}/sold {sold} but reservations hold "
                              f"{held['RESERVED'][sku]} RESERVED/{held['COMMITTED'][sku]} COMMITTED")
        if reserved and not open_sagas:
            violations.append(f"I2 sku {sku} still has {reserved} reserved with every saga terminal")
    totals = [sum(v[i] for v in s.stock.values()) for i in range(3)]
    lines.append(f"I2 stock: {len(seeded.stock)} SKUs, available {totals[0]}, reserved {totals[1]}, sold {totals[2]}, "
                 f"seeded {sum(seeded.stock.values())}")

    # I3
    captured: Counter = Counter()
    refunded: Counter = Counter()
    for customer, status, amount in s.customer_payments:
        if status in ("CAPTURED", "REFUNDED"):
            captured[customer] += amount
        if status == "REFUNDED":
            refunded[customer] += amount
    for customer, initial in sorted(seeded.balances.items()):
        if customer not in s.accounts:
            violations.append(f"I3 customer {customer} has no account")
            continue
        balance = s.accounts[customer]
        if balance < 0:
            violations.append(f"I3 customer {customer} has a negative balance {balance}")
        if balance + captured[customer] - refunded[customer] != initial:
            violations.append(f"I3 customer {customer}: seeded {initial} != balance {balance} + captured "
                              f"{captured[customer]} - refunded {refunded[customer]}")
    payment_counts = Counter(status for status, _, _ in s.payments.values())
    lines.append(f"I3 money: {len(seeded.balances)} customers, captured {sum(captured.values())}, refunded "
                 f"{sum(refunded.values())}; payments {dict(sorted(payment_counts.items()))}")

    # I4 (databases)
    repeated = {o: h for o, h in s.history.items() if len(h) != len(set(h))}
    violations += [f"I4 order {o} history repeats a status: {' → '.join(h)}" for o, h in sorted(repeated.items())]
    per_type: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event_id, _, event_type, saga_id in s.outbox:
        if event_type != "DEAD_LETTER":
            per_type[(saga_id, event_type)].add(event_id)
    violations += [f"I4 saga {saga} emitted {event_type} {len(ids)} times" for (saga, event_type), ids in
                   sorted(per_type.items()) if len(ids) > 1]
    created = {saga for (saga, event_type) in per_type if event_type == "ORDER_CREATED"}
    violations += [f"I4 saga {o} has no ORDER_CREATED in the outbox" for o in order_ids if o not in created]
    for o in order_ids:
        history = s.history.get(o, [])
        if o in s.orders and (not history or history[-1] != s.orders[o][0]):
            violations.append(f"I4 order {o} is {s.orders[o][0]} but its history ends with {history[-1:] or 'nothing'}")
    lines.append(f"I4 once: {sum(len(h) for h in s.history.values())} history rows, {len(repeated)} repeating; "
                 f"{len(s.outbox)} outbox rows, {sum(len(ids) > 1 for ids in per_type.values())} (saga, type) emitted twice")

    # I6
    mismatched = 0
    for o in order_ids:
        status = s.orders.get(o, ("MISSING",))[0]
        payment = s.payments.get(o, ("NONE",))[0]
        reservation = s.reservations.get(o, ("NONE",))[0]
        if status == "CONFIRMED":
            ok = payment == "CAPTURED" and reservation == "COMMITTED"
        elif status == "CANCELLED":
            ok = payment != "CAPTURED" and reservation not in ("RESERVED", "COMMITTED")
        else:
            ok = True  # I1 reports it
        if not ok:
            mismatched += 1
            violations.append(f"I6 order {o} is {status} with payment {payment} and reservation {reservation}")
    lines.append(f"I6 consistent: {len(order_ids) - mismatched}/{len(order_ids)} orders agree with their payment and reservation")
    return Report(violations, lines)


def topic_report(s: Snapshot, messages: list[Message], order_ids: list[str]) -> Report:
    """I4 (topics: one event id per saga and type, authentic records only) and I5 (every outbox row
    of `s` on its topic) over `messages` (docs/contract/invariants.md)."""
    violations: list[str] = []
    seen: dict[str, set[str]] = defaultdict(set)  # topic → ids
    per_type: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in messages:
        seen[m.topic].add(m.event_id)
        if m.topic in SAGA_TOPICS and m.authentic:  # what others published changes nothing (I9)
            per_type[(m.key, m.event_type)].add(m.event_id)

    # I4 (topics): one id per (saga, type), redeliveries repeat that id
    violations += [f"I4 saga {saga} has {len(ids)} distinct {event_type} events on the topics"
                   for (saga, event_type), ids in sorted(per_type.items()) if len(ids) > 1]
    violations += [f"I4 saga {o} has no ORDER_CREATED on events.order" for o in order_ids
                   if not per_type.get((o, "ORDER_CREATED"))]

    # I5
    missing = [(event_id, aggregate, event_type, saga) for event_id, aggregate, event_type, saga in s.outbox
               if event_id not in seen.get(TOPIC_OF.get(aggregate, f"events.{aggregate}"), set())]
    violations += [f"I5 outbox row {event_id} ({event_type} of {saga}) is not on {TOPIC_OF.get(aggregate, aggregate)}"
                   for event_id, aggregate, event_type, saga in missing]
    ids = [m.event_id for m in messages if m.event_id]  # a message without an id header is no redelivery
    lines = [
        f"I4 topics: {len(per_type)} (saga, type) pairs, {sum(len(v) > 1 for v in per_type.values())} with two ids",
        f"I5 outbox → topics: {len(s.outbox) - len(missing)}/{len(s.outbox)} rows arrived; "
        f"{len(ids)} messages, {len(ids) - len(set(ids))} redelivered duplicates",
    ]
    return Report(violations, lines)
