"""Signed events: what a service signs verifies after Connect's re-serialization; anything
forged, altered, signed by another service or with an unknown key is refused with its reason;
keys rotate without refusing what was signed before."""
from __future__ import annotations

import json
import stat
import uuid

import pytest

from order_svc.handlers import HANDLERS as ORDER_HANDLERS
from payment_svc.handlers import HANDLERS as PAYMENT_HANDLERS
from shared import auth
from shared.auth import KeyRing, Unauthenticated
from shared.consumer import EventProcessor, IncomingMessage
from shared.errors import EventDecodeError
from shared.events import OrderCreated, PaymentCompleted, encode_event, utc_now

pytestmark = pytest.mark.unit


@pytest.fixture
def keys_dir(tmp_path):
    auth.ensure_keys(tmp_path)
    return tmp_path


def ring(keys_dir, service: str | None) -> KeyRing:
    return KeyRing.load(keys_dir, service)


def payment_completed(order_id: uuid.UUID) -> PaymentCompleted:
    return PaymentCompleted(order_id=order_id, occurred_at=utc_now(), payment_id=uuid.uuid4(), amount="20.00",
                            currency="EUR")


def published(event, signer: KeyRing | None, *, event_id=None, causation="", key=None, reserialize=True,
              **header_changes) -> IncomingMessage:
    """The record Debezium would publish for an outbox row signed by `signer`: payload keys in
    another order and other spacing (as jsonb and the JsonConverter write it)."""
    event_id = event_id or uuid.uuid4()
    payload = encode_event(event)
    saga = str(event.order_id)
    signature = signer.sign(event_id=str(event_id), event_type=event.event_type, saga_id=saga,
                            causation_id=causation, payload=payload) if signer else ""
    if reserialize:
        payload = dict(reversed(list(payload.items())))
    value = json.dumps(payload, indent=1, ensure_ascii=True).encode()
    headers = {"id": str(event_id), "eventType": event.event_type, "sagaId": saga, "causationId": causation,
               "signature": signature, **header_changes}
    return IncomingMessage("events.payment", 0, 1, (key or saga).encode(), value,
                           tuple((name, v.encode()) for name, v in headers.items() if v is not None))


def order_consumer(keys_dir) -> EventProcessor:
    return EventProcessor(uow=None, handlers=ORDER_HANDLERS, keys=ring(keys_dir, "order_svc"),
                         foreign_handlers={OrderCreated: object()})


def test_a_signed_event_verifies_after_reserialization(keys_dir) -> None:
    message = published(payment_completed(uuid.uuid4()), ring(keys_dir, "payment_svc"), causation=str(uuid.uuid4()))
    envelope, handlers = order_consumer(keys_dir).admit(message)
    assert envelope.event.event_type == "PAYMENT_COMPLETED" and handlers is ORDER_HANDLERS


@pytest.mark.parametrize("tamper, reason", [
    (lambda m, k: published(payment_completed(uuid.uuid4()), None), "no signature"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("payment_svc"), signature="ed25519:abc"),
     "malformed signature"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("order_svc")),
     "signed by order_svc, but only payment_svc may emit this event"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), KeyRing.load(m, "payment_svc")),
     "none of payment_svc's keys"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("payment_svc"), causationId=str(uuid.uuid4())),
     "does not verify"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("payment_svc"), id=str(uuid.uuid4())),
     "does not verify"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("payment_svc"), key=str(uuid.uuid4())),
     "is not its saga"),
    (lambda m, k: published(payment_completed(uuid.uuid4()), k("payment_svc"), sagaId=str(uuid.uuid4())),
     "is not its saga"),
])
def test_what_its_owner_did_not_sign_is_refused_with_the_reason(keys_dir, tmp_path_factory, tamper, reason) -> None:
    other = tmp_path_factory.mktemp("other-keys")
    auth.ensure_keys(other)
    message = tamper(other, lambda service: ring(keys_dir, service))
    with pytest.raises(Unauthenticated, match=reason):
        order_consumer(keys_dir).admit(message)


def test_an_altered_payload_is_refused(keys_dir) -> None:
    message = published(payment_completed(uuid.uuid4()), ring(keys_dir, "payment_svc"))
    altered = json.loads(message.value)
    altered["amount"] = "0.01"
    forged = IncomingMessage(message.topic, 0, 1, message.key, json.dumps(altered).encode(), message.header_pairs)
    with pytest.raises(Unauthenticated, match="does not verify"):
        order_consumer(keys_dir).admit(forged)


def test_a_foreign_order_created_is_adopted_by_order_svc_and_skipped_by_the_others(keys_dir) -> None:
    created = OrderCreated(order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="c", amount="1.00",
                           currency="EUR", items=[{"sku": "S", "quantity": 1}])
    foreign = published(created, None, signature=None)
    envelope, handlers = order_consumer(keys_dir).admit(foreign)
    assert envelope.event == created and OrderCreated in handlers
    payment = EventProcessor(uow=None, handlers=PAYMENT_HANDLERS, keys=ring(keys_dir, "payment_svc"))
    assert payment.admit(foreign) == "foreign"
    own = published(created, ring(keys_dir, "order_svc"))
    assert order_consumer(keys_dir).admit(own) == "ignored"  # its own ORDER_CREATED: nothing to adopt


def test_a_foreign_order_created_without_an_id_header_gets_the_same_id_at_every_redelivery(keys_dir) -> None:
    created = OrderCreated(order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="c", amount="1.00",
                           currency="EUR", items=[{"sku": "S", "quantity": 1}])
    foreign = published(created, None, signature=None, id=None)
    first, _ = order_consumer(keys_dir).admit(foreign)
    again, _ = order_consumer(keys_dir).admit(foreign)
    assert first.event_id == again.event_id


def test_a_malformed_id_header_is_still_undecodable(keys_dir) -> None:
    with pytest.raises(EventDecodeError):
        order_consumer(keys_dir).admit(published(payment_completed(uuid.uuid4()), None, id="not-a-uuid"))


def test_rotation_keeps_what_was_signed_before_and_retire_stops_it(keys_dir) -> None:
    before = published(payment_completed(uuid.uuid4()), ring(keys_dir, "payment_svc"))
    old_id = ring(keys_dir, "payment_svc").signing_key.key_id
    new_id = auth.rotate(keys_dir, "payment_svc")
    assert new_id != old_id and ring(keys_dir, "payment_svc").signing_key.key_id == new_id
    after = published(payment_completed(uuid.uuid4()), ring(keys_dir, "payment_svc"))
    consumer = order_consumer(keys_dir)
    consumer.admit(before)
    consumer.admit(after)
    with pytest.raises(ValueError, match="current signing key"):
        auth.retire(keys_dir, "payment_svc", new_id)
    auth.retire(keys_dir, "payment_svc", old_id)
    with pytest.raises(Unauthenticated, match="none of payment_svc's keys"):
        order_consumer(keys_dir).admit(before)


def test_keys_are_made_once_and_private(tmp_path) -> None:
    assert auth.ensure_keys(tmp_path) == ["order_svc", "inventory_svc", "payment_svc"]
    assert auth.ensure_keys(tmp_path) == []
    private = auth.signing_key_path(tmp_path, "order_svc")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_a_ring_without_keys_accepts_nothing(keys_dir) -> None:
    message = published(payment_completed(uuid.uuid4()), ring(keys_dir, "payment_svc"))
    consumer = EventProcessor(uow=None, handlers=ORDER_HANDLERS, keys=KeyRing(None, {}))
    with pytest.raises(Unauthenticated, match="none of payment_svc's keys"):
        consumer.admit(message)
    assert KeyRing(None, {}).sign(event_id="x", event_type="t", saga_id="s", causation_id="", payload={}) == ""


def test_a_foreign_order_created_under_another_key_is_refused_not_adopted(keys_dir) -> None:
    """Its records would land in another partition than the saga's: refused, never adopted."""
    created = OrderCreated(order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="c", amount="1.00",
                           currency="EUR", items=[{"sku": "S", "quantity": 1}])
    with pytest.raises(Unauthenticated, match="is not its saga"):
        order_consumer(keys_dir).admit(published(created, None, signature=None, key=str(uuid.uuid4())))
