"""Where events go: outbox aggregate types, their Kafka topics, and the message headers.

Debezium's EventRouter routes each outbox row to ``events.<aggregate_type>``; the
header names are the outbox columns it places as headers (see connect/ and
shared/sql/outbox.sql). Every message's key is the order id (= saga id).
"""
from __future__ import annotations

from typing import Final, Literal

from shared import descriptors

AggregateType = Literal["order", "inventory", "payment", "deadletter"]

ORDER: Final = "order"
INVENTORY: Final = "inventory"
PAYMENT: Final = "payment"
DEADLETTER: Final = "deadletter"

TOPICS: Final[dict[str, str]] = {
    ORDER: "events.order",
    INVENTORY: "events.inventory",
    PAYMENT: "events.payment",
    DEADLETTER: "events.deadletter",
}
"""aggregate_type → topic."""

SERVICES: Final[dict[str, str]] = {service.name: service.aggregate_type for service in descriptors.SERVICES}
"""service name → the aggregate_type of the events it emits (shared/descriptors.py)."""


def topic_for(aggregate_type: str) -> str:
    """The topic EventRouter publishes rows of `aggregate_type` to; KeyError if unknown."""
    return TOPICS[aggregate_type]


class Header:
    """Names of the headers on every message (from outbox columns, never set by a producer)."""

    ID: Final = "id"  # the outbox row id = event id, the inbox dedupe key
    EVENT_TYPE: Final = "eventType"
    SAGA_ID: Final = "sagaId"  # = order id
    CAUSATION_ID: Final = "causationId"  # id of the event that caused this one; "" for ORDER_CREATED
    TRACEPARENT: Final = "traceparent"  # W3C trace context
    TRACESTATE: Final = "tracestate"  # W3C trace context: vendor entries that go with traceparent
    SIGNATURE: Final = "signature"  # the emitter's signature (shared/auth.py)
