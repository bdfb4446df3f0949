"""Events from outside: a published ORDER_CREATED starts a saga; forged, altered or misplaced events change nothing.

docs/contract/interfaces.md, Starting a saga from Kafka: anyone may start a saga by publishing an
ORDER_CREATED to events.order (key = the order id, eventType header, an optional id header, the
event's JSON). order_svc adopts it, emits the saga's own signed ORDER_CREATED caused by it, and the
saga runs as for a placed order; the same record again changes nothing; another order under a taken
id, or one that fails validation, is a dead letter. Every other event is acted on only when the
service that owns its type signed it for the saga its key names (I9): a hand-written
PAYMENT_COMPLETED, a genuine event replayed under another order's key or with a field changed, one
signed with a key no service accepts or by the wrong service are dead letters "unauthenticated: …".

The tests publish as Kafka's console producer would (tests/support/foreign.py) and watch as a
user does: `saga order show`, `saga trace`, `saga stock show`, `saga account show`,
`saga dlq list`, each with --json.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.auth import KeyRing, ensure_keys
from tests.support.foreign import (
    Published, Shop, check_invariants_of, copy_of, dead_letters_of, headers_for, letters_for, order_created,
    order_status, payment_completed, publish, saga_effects, until_all_dead_lettered, until_consumed,
    until_dead_lettered, until_order_status, until_traced,
)
from tests.support.invariants import Seeded, check_invariants
from tests.support.kafka import TopicReader
from tests.support.saga import (
    INVENTORY_TOPIC, ORDER_TOPIC, PAYMENT_TOPIC, frozen, payment, reservation,
)

pytestmark = pytest.mark.faults

HAPPY_CHAIN = ("ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED", "INVENTORY_COMMITTED")
"""What order_svc's own ORDER_CREATED starts for an order that can be served and paid
(docs/contract/flows.md, 1. Happy path)."""
DECLINED_CHAIN = ("ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_FAILED", "INVENTORY_RELEASED", "ORDER_CANCELLED")
FROZEN_AT_MOST = 15.0
"""The longest payment_svc stays frozen (SIGSTOP) while a test watches a forged event be refused."""


def now_ms() -> int:
    return int(time.time() * 1000)


def seeded(*shops: Shop) -> Seeded:
    return Seeded(stock={k: v for s in shops for k, v in s.seeded.stock.items()},
                  balances={k: v for s in shops for k, v in s.seeded.balances.items()})


async def levels(shop: Shop) -> tuple[tuple[int, int, int], str | None]:
    """((available, reserved, sold), balance) as `saga stock show` / `saga account show` print them."""
    stock = await shop.stock()
    account = await shop.account()
    return (stock["available"], stock["reserved"], stock["sold"]), account and account["balance"]


def assert_chain(events: list[dict], first: dict) -> None:
    """Each event after `first` was caused by the one before it."""
    cause = first
    for event in events:
        assert event["causation_id"] == cause["event_id"], (
            f"{event['event_type']} names {event['causation_id']} as its cause, "
            f"not {cause['event_type']} {cause['event_id']}")
        cause = event


# --- 1, 2: a saga started by publishing ORDER_CREATED ----------------------------------------

HEADER_SETS = {
    "id-eventType-sagaId": ("id", "eventType", "sagaId"),
    "eventType-sagaId": ("eventType", "sagaId"),
    "eventType-only": ("eventType",),  # console producer (docs/contract/interfaces.md): the id header is optional
}


@pytest.mark.parametrize("header_set", list(HEADER_SETS))
async def test_a_published_order_created_is_adopted_and_the_saga_confirms(services, header_set: str) -> None:
    settings = services.settings
    started, since_ms = time.monotonic(), now_ms()
    shop = await Shop.open(units=10, balance="100.00")
    order_id = str(uuid.uuid4())
    event = order_created(order_id, shop, quantity=2, amount="20.00")
    headers = {name: value for name, value in headers_for(event).items() if name in HEADER_SETS[header_set]}
    with_id = "id" in headers
    record = await publish(settings.kafka_bootstrap, ORDER_TOPIC, order_id, event, headers)

    order = await until_order_status(order_id)
    confirmed_after = time.monotonic() - started
    assert (order["status"], order["reason"]) == ("CONFIRMED", None), order
    assert (order["customer_id"], order["amount"], order["currency"]) == (shop.customer, "20.00", "EUR")
    assert order["items"] == [{"sku": shop.sku, "quantity": 2}]

    events = await until_traced(order_id, HAPPY_CHAIN)
    assert [e["event_type"] for e in events] == ["ORDER_CREATED", *HAPPY_CHAIN], [e["event_type"] for e in events]
    foreign, own, *chain = events
    assert (foreign["topic"], foreign["partition"], foreign["offset"]) == (ORDER_TOPIC, record.partition, record.offset)
    assert foreign["event_id"] == (record.event_id if with_id else None)
    assert own["event_id"] != record.event_id
    assert own["causation_id"] == record.event_id  # with no id header: the record's name-based id
    assert order["history"][0]["status"] == "PENDING" and order["history"][0]["event_id"] == own["event_id"]
    assert_chain(chain, own)

    assert await levels(shop) == ((8, 0, 2), "80.00")
    await until_consumed(settings.kafka_bootstrap, record)
    assert await dead_letters_of(order_id) == []
    assert await check_invariants(settings, [order_id], shop.seeded, since_ms=since_ms) == []
    print(f"\n[adopted, headers {'+'.join(headers)}] ORDER_CREATED at {record.where} → order "
          f"{order_id} CONFIRMED after {confirmed_after:.2f}s; trace: foreign → own ORDER_CREATED (caused by "
          f"{record.event_id}) → {' → '.join(HAPPY_CHAIN[1:])}; stock 8/0/2, balance 80.00, no dead letters; "
          f"{time.monotonic() - started:.1f}s in all")


async def test_a_published_order_created_for_an_unknown_customer_is_cancelled_with_everything_back(services) -> None:
    settings = services.settings
    started, since_ms = time.monotonic(), now_ms()
    shop = await Shop.open(units=10, balance=None)
    order_id = str(uuid.uuid4())
    event = order_created(order_id, shop, quantity=2, amount="20.00")
    record = await publish(settings.kafka_bootstrap, ORDER_TOPIC, order_id, event, headers_for(event))

    order = await until_order_status(order_id)
    cancelled_after = time.monotonic() - started
    assert (order["status"], order["reason"]) == ("CANCELLED", "unknown_customer"), order
    events = await until_traced(order_id, DECLINED_CHAIN)
    assert [e["event_type"] for e in events] == ["ORDER_CREATED", *DECLINED_CHAIN], [e["event_type"] for e in events]
    assert events[1]["causation_id"] == record.event_id
    assert next(e for e in events if e["event_type"] == "PAYMENT_FAILED")["payload"]["reason"] == "unknown_customer"

    assert await levels(shop) == ((10, 0, 0), None)  # stock back; no account was made, nothing taken
    taken = await payment(settings, order_id)
    assert taken is None or taken["status"] != "CAPTURED", taken
    await until_consumed(settings.kafka_bootstrap, record)
    assert await dead_letters_of(order_id) == []
    assert await check_invariants(settings, [order_id], shop.seeded, since_ms=since_ms) == []
    print(f"\n[adopted, unknown customer] order {order_id} CANCELLED (unknown_customer) after {cancelled_after:.2f}s; "
          f"stock 10/0/0, payment {taken and taken['status']}, no account, no dead letters; "
          f"{time.monotonic() - started:.1f}s in all")


# --- 3: the same record again ---------------------------------------------------------------

async def test_the_same_published_order_created_again_changes_nothing(services) -> None:
    settings = services.settings
    bootstrap = settings.kafka_bootstrap
    started, since_ms = time.monotonic(), now_ms()
    shop = await Shop.open(units=10, balance="100.00")
    order_id = str(uuid.uuid4())
    event = order_created(order_id, shop, quantity=2, amount="20.00")
    first_headers = headers_for(event)
    first = await publish(bootstrap, ORDER_TOPIC, order_id, event, first_headers)

    async def again(headers: dict[str, str]) -> Published:
        """The same record (the same value bytes) with these headers."""
        return await publish(bootstrap, ORDER_TOPIC, order_id, first.value, headers)

    while_running = [first, await again(first_headers), await again(headers_for(event)),
                     await again(headers_for(event, ""))]
    order = await until_order_status(order_id)
    assert (order["status"], order["reason"]) == ("CONFIRMED", None), order
    await until_traced(order_id, HAPPY_CHAIN)
    for record in while_running:
        await until_consumed(bootstrap, record)
    finished_after = time.monotonic() - started
    before = await saga_effects(settings, order_id, [shop.sku], shop.customer)

    after_end = [await again(first_headers), await again(headers_for(event)), await again(headers_for(event, ""))]
    for record in after_end:
        await until_consumed(bootstrap, record)
    assert await saga_effects(settings, order_id, [shop.sku], shop.customer) == before

    events = await until_traced(order_id, HAPPY_CHAIN)
    own_created = [e for e in events if e["event_type"] == "ORDER_CREATED" and e["causation_id"]]
    assert len(own_created) == 1, own_created
    assert own_created[0]["causation_id"] == first.event_id
    assert [e["event_type"] for e in events if e["event_type"] != "ORDER_CREATED"] == list(HAPPY_CHAIN[1:])
    assert before.outbox["orders"] == 2  # its own ORDER_CREATED and ORDER_CONFIRMED, once each
    assert before.reservation["status"] == "COMMITTED" and before.payment["status"] == "CAPTURED"
    assert await levels(shop) == ((8, 0, 2), "80.00")
    assert await dead_letters_of(order_id) == []
    assert await check_invariants(settings, [order_id], shop.seeded, since_ms=since_ms) == []
    print(f"\n[same record again] {len(while_running)} copies while it ran (2 identical, a new id, no id) and "
          f"{len(after_end)} after it ended: one order CONFIRMED after {finished_after:.2f}s, one ORDER_CREATED of "
          f"order_svc, one reservation, one charge (100.00 → 80.00), no dead letters; "
          f"{time.monotonic() - started:.1f}s in all")


# --- 4: a forged PAYMENT_COMPLETED while payment_svc is frozen ---------------------------------

async def test_a_forged_payment_completed_confirms_nothing(services) -> None:
    settings = services.settings
    started, since_ms = time.monotonic(), now_ms()
    shop = await Shop.open(units=10, balance="0.00")

    async with frozen("payment_svc"):
        frozen_at = time.monotonic()
        order_id = await shop.place(1, "50.00")
        forged = payment_completed(order_id, "50.00")
        record = await publish(settings.kafka_bootstrap, PAYMENT_TOPIC, order_id, forged, headers_for(forged))
        letters, seen_pending = await pending_until_dead_lettered(order_id, [record], "order_svc")
        held = time.monotonic() - frozen_at
    print(f"\n  payment_svc frozen {held:.1f}s: order stayed PENDING ({seen_pending} looks), "
          f"dead letter by order_svc: {letters[0]['error']}")

    order = await until_order_status(order_id)
    assert (order["status"], order["reason"]) == ("CANCELLED", "insufficient_funds"), order
    assert "CONFIRMED" not in [h["status"] for h in order["history"]], order["history"]
    assert await levels(shop) == ((10, 0, 0), "0.00")
    assert (await payment(settings, order_id))["status"] != "CAPTURED"
    assert await check_invariants(settings, [order_id], shop.seeded, since_ms=since_ms) == []
    print(f"[forged PAYMENT_COMPLETED] unsigned, at {record.where}: dead-lettered by "
          f"{sorted(l['consumer'] for l in letters)}, "
          f"order {order_id} PENDING while payment_svc was frozen ({held:.1f}s), then CANCELLED (insufficient_funds), "
          f"stock 10/0/0, balance 0.00; {time.monotonic() - started:.1f}s in all")


async def pending_until_dead_lettered(order_id: str, records: list[Published], consumer: str) -> tuple[list[dict], int]:
    """With payment_svc frozen: until `consumer` has dead-lettered each record ("unauthenticated"),
    and for a second after, the order stays PENDING; (the records' dead letters, how many looks)."""
    deadline = time.monotonic() + FROZEN_AT_MOST - 3
    looks, letters, settled_at = 0, [], None
    while True:
        order = await order_status(order_id)
        assert order is not None and order["status"] == "PENDING", f"order {order_id} is {order and order['status']}"
        looks += 1
        if settled_at is None:
            all_letters = await dead_letters_of(order_id)
            found = [letters_for(all_letters, r) for r in records]
            if all(any(l["consumer"] == consumer for l in f) for f in found):
                letters = [l for f in found for l in f]
                assert all("unauthenticated" in l["error"] for l in letters), [l["error"] for l in letters]
                settled_at = time.monotonic()
        elif time.monotonic() - settled_at >= 1.0:
            return letters, looks
        if time.monotonic() > deadline:
            raise AssertionError(f"{consumer} did not dead-letter {[r.where for r in records]} within "
                                 f"{FROZEN_AT_MOST - 3:.0f}s")
        await asyncio.sleep(0.2)


# --- 5: genuine events misused, and events signed with the wrong key ----------------------------

async def test_replayed_altered_and_wrongly_signed_events_are_refused(services, tmp_path) -> None:
    settings = services.settings
    bootstrap = settings.kafka_bootstrap
    started, since_ms = time.monotonic(), now_ms()
    rich, poor = await Shop.open(units=10, balance="100.00"), await Shop.open(units=10, balance="0.00")

    # A: a finished order whose genuine, signed events the test reads from the topics.
    async with TopicReader(bootstrap, INVENTORY_TOPIC, ORDER_TOPIC) as reader:
        a = await rich.place(2, "20.00")
        records = await reader.read_until(lambda rs: {"INVENTORY_RESERVED", "ORDER_CONFIRMED"} <= {
            r.headers.get("eventType") for r in rs if r.key == a}, timeout=60)
    reserved = next(r for r in records if r.key == a and r.headers.get("eventType") == "INVENTORY_RESERVED")
    confirmed = next(r for r in records if r.key == a and r.headers.get("eventType") == "ORDER_CONFIRMED")
    assert all(r.headers["signature"].startswith("ed25519:") for r in (reserved, confirmed))
    await until_traced(a, HAPPY_CHAIN)

    # B: an order waiting for its payment (payment_svc frozen) gets PAYMENT_COMPLETED events
    # signed with a key no service has, and with order_svc's signature.
    assert ensure_keys(tmp_path, ["payment_svc"]) == ["payment_svc"]  # a payment_svc key of nobody's stack
    stranger = KeyRing.load(tmp_path, "payment_svc")
    async with frozen("payment_svc"):
        frozen_at = time.monotonic()
        b = await poor.place(1, "50.00")
        unknown_key = payment_completed(b, "50.00")
        cause = str(uuid.uuid4())
        unknown_headers = headers_for(unknown_key, causationId=cause)
        unknown_headers["signature"] = stranger.sign(event_id=unknown_headers["id"], event_type="PAYMENT_COMPLETED",
                                                     saga_id=b, causation_id=cause, payload=unknown_key)
        topic, _, value, headers = copy_of(confirmed, key=b, headers={"eventType": "PAYMENT_COMPLETED", "sagaId": b},
                                           payload=payment_completed(b, "50.00"))  # order_svc's signature
        with_unknown_key = await publish(bootstrap, PAYMENT_TOPIC, b, unknown_key, unknown_headers)
        signed_by_order_svc = await publish(bootstrap, PAYMENT_TOPIC, b, value, headers)
        await pending_until_dead_lettered(b, [with_unknown_key, signed_by_order_svc], "order_svc")
        held = time.monotonic() - frozen_at
    refused = {"c": (with_unknown_key, "order_svc", "which is none of payment_svc's keys"),
               "d": (signed_by_order_svc, "order_svc", "signed by order_svc, but only payment_svc may emit this event")}
    order_b = await until_order_status(b)
    assert (order_b["status"], order_b["reason"]) == ("CANCELLED", "insufficient_funds"), order_b
    await until_traced(b, DECLINED_CHAIN)

    # Genuine INVENTORY_RESERVED of A, misused against the finished orders.
    state = {o: await saga_effects(settings, o, [s.sku], s.customer) for o, s in ((a, rich), (b, poor))}
    misused = {
        "a": (copy_of(reserved, key=b, headers={"sagaId": b}), "payment_svc", "the record's key"),
        "a'": (copy_of(reserved, key=b, headers={"sagaId": b}, payload={"order_id": b}), "payment_svc",
               "does not verify"),
        "b": (copy_of(reserved, payload={"amount": "0.01"}), "payment_svc", "does not verify"),
        "b'": (copy_of(reserved, headers={"id": str(uuid.uuid4())}, payload={"amount": "0.01"}), "payment_svc",
               "does not verify"),
    }
    for name, ((topic, key, value, headers), consumer, fragment) in misused.items():
        refused[name] = (await publish(bootstrap, topic, key, value, headers), consumer, fragment)
    found = await until_all_dead_lettered((record, consumer, "unauthenticated: ")
                                          for record, consumer, _ in refused.values())
    lines = []
    for (name, (record, consumer, fragment)), letters in zip(refused.items(), found):
        mine = [l for l in letters if l["consumer"] == consumer]
        assert len(mine) == 1 and fragment in mine[0]["error"], (name, letters)
        await until_consumed(bootstrap, record)
        lines.append(f"  ({name}) {record.where} key {record.key[:8]}: {consumer}: {mine[0]['error']}")
    for o, s in ((a, rich), (b, poor)):
        assert await saga_effects(settings, o, [s.sku], s.customer) == state[o], f"order {o} changed"
    assert await levels(rich) == ((8, 0, 2), "80.00") and await levels(poor) == ((10, 0, 0), "0.00")
    assert (await order_status(a))["status"] == "CONFIRMED"

    published = [record for record, _, _ in refused.values()]
    assert await check_invariants_of(settings, [a, b], seeded(rich, poor), since_ms=since_ms, published=published) == []
    print("\n" + "\n".join(lines))
    print(f"[refused events] {len(refused)} records (a fresh key's and order_svc's PAYMENT_COMPLETED while "
          f"payment_svc was frozen {held:.1f}s, A's INVENTORY_RESERVED under B's key and altered) each a dead letter "
          f"'unauthenticated'; A stays CONFIRMED (80.00, 8/0/2), B stayed PENDING then CANCELLED insufficient_funds; "
          f"{time.monotonic() - started:.1f}s in all")


# --- 6: a taken order id, an invalid order --------------------------------------------------

async def test_a_published_order_created_under_a_taken_id_or_invalid_is_a_dead_letter(services) -> None:
    settings = services.settings
    bootstrap = settings.kafka_bootstrap
    started, since_ms = time.monotonic(), now_ms()
    shop = await Shop.open(units=10, balance="100.00")
    placed = await shop.place(2, "20.00")
    assert (await until_order_status(placed))["status"] == "CONFIRMED"
    await until_traced(placed, HAPPY_CHAIN)
    before = await saga_effects(settings, placed, [shop.sku], shop.customer)

    other_content = order_created(placed, shop, quantity=2, amount="99.00")
    taken = await publish(bootstrap, ORDER_TOPIC, placed, other_content, headers_for(other_content))
    letters = await until_dead_lettered(taken, "order_svc", "already exists with other content")
    await until_consumed(bootstrap, taken)
    letters = letters_for(await dead_letters_of(placed), taken)
    assert [l["consumer"] for l in letters] == ["order_svc"], letters  # inventory_svc and payment_svc skip it
    assert await saga_effects(settings, placed, [shop.sku], shop.customer) == before
    print(f"\n  taken id at {taken.where}: {letters[0]['consumer']}: {letters[0]['error']}")

    invalid_id = str(uuid.uuid4())
    negative = order_created(invalid_id, shop, quantity=1, amount="-5.00")
    invalid = await publish(bootstrap, ORDER_TOPIC, invalid_id, negative, headers_for(negative))
    found = await until_dead_lettered(invalid, "order_svc", "undecodable")
    await until_consumed(bootstrap, invalid)
    found = letters_for(await dead_letters_of(invalid_id), invalid)
    assert all("undecodable" in l["error"] for l in found), found
    assert await order_status(invalid_id) is None
    assert await reservation(settings, invalid_id) is None and await payment(settings, invalid_id) is None
    assert await saga_effects(settings, placed, [shop.sku], shop.customer) == before
    assert await levels(shop) == ((8, 0, 2), "80.00")
    print(f"  amount -5.00 at {invalid.where}: " + "; ".join(f"{l['consumer']}: {l['error']}" for l in found))

    assert await check_invariants(settings, [placed], shop.seeded, since_ms=since_ms, extra_keys=[invalid_id]) == []
    print(f"[taken id, invalid] ORDER_CREATED reusing CONFIRMED order {placed[:8]} with 99.00: dead letter by "
          f"order_svc only, nothing changed; amount -5.00: undecodable "
          f"({', '.join(sorted(l['consumer'] for l in found))}), "
          f"no order, reservation or payment; {time.monotonic() - started:.1f}s in all")
