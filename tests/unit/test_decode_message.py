"""`decode_message`: the envelope of a record, or one EventDecodeError whatever the record holds."""
from __future__ import annotations

import uuid

import pytest

from shared.consumer import IncomingMessage, decode_message
from shared.errors import EventDecodeError
from shared.events import OrderConfirmed, encode_event, utc_now

pytestmark = pytest.mark.unit


def confirmed() -> bytes:
    import json

    return json.dumps(encode_event(OrderConfirmed(order_id=uuid.uuid4(), occurred_at=utc_now()))).encode()


def message(value: bytes | None, headers) -> IncomingMessage:
    return IncomingMessage("events.order", 0, 7, b"k", value, tuple(headers))


def test_a_well_formed_record_decodes() -> None:
    ident = uuid.uuid4()
    envelope = decode_message(message(confirmed(), [("id", str(ident).encode()), ("eventType", b"ORDER_CONFIRMED")]))
    assert envelope.event_id == ident and envelope.event.event_type == "ORDER_CONFIRMED"


@pytest.mark.parametrize("headers, value, fragment", [
    ([("id", str(uuid.uuid4()).encode())] * 2, None, "'id' appears 2 times"),
    ([("id", str(uuid.uuid4()).encode()), ("eventType", b"ORDER_CONFIRMED"), ("eventType", b"ORDER_CONFIRMED")],
     None, "'eventType' appears 2 times"),
    ([("id", b"\xff\xfe")], None, "is not an event id"),
    ([("id", None)], None, "is not an event id"),
    ([("id", b"x" * 100_000)], None, "is not an event id"),
    ([("id", str(uuid.uuid4()).encode())], b"[" * 100_000, "nested too deeply"),
    ([("id", str(uuid.uuid4()).encode()), ("eventType", b"A\x00B")], None, "contradicts"),
])
def test_a_hostile_record_is_one_bounded_decode_error(headers, value, fragment) -> None:
    with pytest.raises(EventDecodeError, match=fragment) as caught:
        decode_message(message(value if value is not None else confirmed(), headers))
    assert len(str(caught.value)) < 400 and "\x00" not in str(caught.value)


def test_headers_keep_every_pair_as_it_came() -> None:
    pairs = (("", b"x"), ("id", b"1"), ("id", b"2"), ("n", None))
    incoming = IncomingMessage("t", 0, 0, None, None, pairs)
    assert incoming.header_pairs == pairs
    assert incoming.headers == {"": "x", "id": "2"} and incoming.header_count("id") == 2
