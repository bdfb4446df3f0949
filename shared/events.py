"""The event catalog: every payload the saga speaks, as frozen pydantic models.

Common to every event: ``event_type`` (the discriminator), ``schema_version`` (1; any
other version is a decode error), ``order_id`` (a UUID; it is also the saga id and the
Kafka key) and ``occurred_at`` (an aware datetime).

Rules that hold for every decoded or constructed event:
  * money is `shared.money.Amount` (> 0, exactly two places, a string on the wire)
    next to an active ISO-4217 `Currency`;
  * ``items`` is a non-empty tuple of {sku, quantity > 0} with distinct skus;
  * reasons are the closed vocabularies of docs/contract/events.md;
  * unknown extra fields are ignored (tolerant reader); a change that old readers
    would misread bumps ``schema_version`` instead.

`decode_event` is the only way in (one `EventDecodeError`, one line, whatever went
wrong); `encode_event` is the only way out (a JSON-ready dict).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, Union, get_args
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared import topics
from shared.errors import EventDecodeError
from shared.money import Amount, Currency

__all__ = [
    "Event", "EventDecodeError", "EVENT_CLASSES", "EVENT_TYPES", "SUPPORTED_SCHEMA_VERSIONS",
    "decode_event", "encode_event", "utc_now", "event_type_of", "topic_of", "topics_carrying",
    "OrderItem", "Items", "Sku", "Quantity", "CustomerId",
    "InventoryRejectionReason", "PaymentDeclineReason", "PaymentFailureReason", "ConfirmationFailureReason",
    "CancellationReason",
    "OrderCreated", "InventoryReserved", "InventoryRejected", "PaymentCompleted", "PaymentFailed",
    "OrderConfirmed", "OrderConfirmationFailed", "PaymentRefunded", "InventoryReleased",
    "InventoryCommitted", "OrderCancelled",
]

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
"""1-64 characters: letters, digits, '.', '_', '-'; starts with a letter or digit."""

CustomerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
"""1-64 characters: letters, digits, '.', '_', '@', '-'; starts with a letter or digit."""

Quantity = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]

InventoryRejectionReason = Literal["out_of_stock", "unknown_sku"]
PaymentDeclineReason = Literal["insufficient_funds", "limit_exceeded", "unknown_customer"]
"""Why a charge was refused by the account's rules (payment_svc/domain.py)."""
ConfirmationFailureReason = Literal["cancelled_by_customer", "deadline_exceeded"]
"""Why order_svc gave an order up: the customer cancelled it, or its deadline passed
(docs/contract/flows.md, Cancellation and the deadline)."""
PaymentFailureReason = Literal[PaymentDeclineReason, ConfirmationFailureReason]
"""A PAYMENT_FAILED's reason: a decline, or the reason of a void — the order was given up
before it was charged, and payment_svc declines its reservation with that reason."""
CancellationReason = Literal[InventoryRejectionReason, PaymentDeclineReason, ConfirmationFailureReason]
"""An ORDER_CANCELLED's reason: the saga's root cause."""


class OrderItem(BaseModel):
    """One line of an order: `quantity` (1 to 1,000,000 units) of `sku`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


def _distinct_skus(items: tuple[OrderItem, ...]) -> tuple[OrderItem, ...]:
    skus = [item.sku for item in items]
    if len(set(skus)) != len(skus):
        raise ValueError("each sku may appear only once")
    return items


Items = Annotated[tuple[OrderItem, ...], Field(min_length=1, max_length=100), AfterValidator(_distinct_skus)]

Skus = Annotated[tuple[Sku, ...], Field(min_length=1, max_length=100)]


def utc_now() -> datetime:
    """The `occurred_at` of an event created now."""
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    aggregate_type: ClassVar[str]
    """The emitting service's outbox aggregate type (decides the topic)."""

    event_type: str
    schema_version: Literal[1] = 1
    order_id: UUID
    occurred_at: AwareDatetime


# --- order_svc ------------------------------------------------------------------

class OrderCreated(_Event):
    """An order was placed; starts the saga."""

    aggregate_type: ClassVar[str] = topics.ORDER
    event_type: Literal["ORDER_CREATED"] = "ORDER_CREATED"
    customer_id: CustomerId
    items: Items
    amount: Amount
    currency: Currency


class OrderConfirmed(_Event):
    """Payment completed and the order is still wanted: the order is CONFIRMED."""

    aggregate_type: ClassVar[str] = topics.ORDER
    event_type: Literal["ORDER_CONFIRMED"] = "ORDER_CONFIRMED"


class OrderConfirmationFailed(_Event):
    """Payment completed but the order may no longer be confirmed; starts C3 (refund)."""

    aggregate_type: ClassVar[str] = topics.ORDER
    event_type: Literal["ORDER_CONFIRMATION_FAILED"] = "ORDER_CONFIRMATION_FAILED"
    reason: ConfirmationFailureReason


class OrderCancelled(_Event):
    """The saga ended without an order; `reason` is the root cause."""

    aggregate_type: ClassVar[str] = topics.ORDER
    event_type: Literal["ORDER_CANCELLED"] = "ORDER_CANCELLED"
    reason: CancellationReason


# --- inventory_svc --------------------------------------------------------------

class InventoryReserved(_Event):
    """All items are reserved; carries the order's payment data on to payment_svc."""

    aggregate_type: ClassVar[str] = topics.INVENTORY
    event_type: Literal["INVENTORY_RESERVED"] = "INVENTORY_RESERVED"
    reservation_id: UUID
    items: Items
    customer_id: CustomerId
    amount: Amount
    currency: Currency


class InventoryRejected(_Event):
    """Nothing was reserved: `skus` are unknown or short (per `reason`)."""

    aggregate_type: ClassVar[str] = topics.INVENTORY
    event_type: Literal["INVENTORY_REJECTED"] = "INVENTORY_REJECTED"
    reason: InventoryRejectionReason
    skus: Skus


class InventoryReleased(_Event):
    """A reservation went back to available stock (C2, docs/contract/flows.md)."""

    aggregate_type: ClassVar[str] = topics.INVENTORY
    event_type: Literal["INVENTORY_RELEASED"] = "INVENTORY_RELEASED"
    reservation_id: UUID


class InventoryCommitted(_Event):
    """A reservation became sold stock."""

    aggregate_type: ClassVar[str] = topics.INVENTORY
    event_type: Literal["INVENTORY_COMMITTED"] = "INVENTORY_COMMITTED"
    reservation_id: UUID


# --- payment_svc ----------------------------------------------------------------

class PaymentCompleted(_Event):
    """The customer's account was charged `amount`."""

    aggregate_type: ClassVar[str] = topics.PAYMENT
    event_type: Literal["PAYMENT_COMPLETED"] = "PAYMENT_COMPLETED"
    payment_id: UUID
    amount: Amount
    currency: Currency


class PaymentFailed(_Event):
    """The charge was declined, or refused because the order was given up first (a void:
    `reason` is then the order's cancellation reason); nothing was taken. Starts C2 (release)."""

    aggregate_type: ClassVar[str] = topics.PAYMENT
    event_type: Literal["PAYMENT_FAILED"] = "PAYMENT_FAILED"
    reason: PaymentFailureReason


class PaymentRefunded(_Event):
    """A captured payment was credited back in full (C3)."""

    aggregate_type: ClassVar[str] = topics.PAYMENT
    event_type: Literal["PAYMENT_REFUNDED"] = "PAYMENT_REFUNDED"
    payment_id: UUID
    amount: Amount
    currency: Currency


Event: TypeAlias = Annotated[
    Union[
        OrderCreated, OrderConfirmed, OrderConfirmationFailed, OrderCancelled,
        InventoryReserved, InventoryRejected, InventoryReleased, InventoryCommitted,
        PaymentCompleted, PaymentFailed, PaymentRefunded,
    ],
    Field(discriminator="event_type"),
]
"""Any event of the catalog, discriminated by `event_type`. This union is the one list of the
events: a new event class is added here, and `EVENT_TYPES`, the decoder and every service's
subscriptions (`topics_carrying`) follow from it."""

_EVENT = TypeAdapter(Event)

def event_type_of(cls: type[_Event]) -> str:
    """The `event_type` string of an event class, e.g. "ORDER_CREATED"."""
    return cls.model_fields["event_type"].default


EVENT_CLASSES: tuple[type[_Event], ...] = get_args(get_args(Event)[0])
"""Every event class, in the union's order."""

EVENT_TYPES: dict[str, type[_Event]] = {event_type_of(cls): cls for cls in EVENT_CLASSES}
"""event_type → model class."""


def topic_of(cls: type[_Event]) -> str:
    """The Kafka topic that carries events of class `cls` (from its aggregate type, e.g.
    OrderCreated → "events.order"). KeyError for a class whose aggregate type has no topic."""
    return topics.topic_for(cls.aggregate_type)


def topics_carrying(event_classes: Iterable[type[_Event]]) -> list[str]:
    """The topics a consumer must subscribe to in order to receive every one of `event_classes`
    (e.g. the keys of its handler tables): each topic once, in `shared.topics.TOPICS` order."""
    wanted = {topic_of(cls) for cls in event_classes}
    return [topic for topic in topics.TOPICS.values() if topic in wanted]


def decode_event(raw: bytes | bytearray | str | Mapping[str, Any]) -> Event:
    """The event in `raw` (JSON text or bytes, or an already parsed mapping).

    Raises EventDecodeError, with a one-line message, when `raw` is not JSON, not an
    object, has an unknown `event_type`, an unsupported `schema_version`, or any field
    that breaks the schema. JSON numbers with a fraction are refused as money.
    """
    if isinstance(raw, (bytes, bytearray, str)):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise EventDecodeError(f"not JSON: {_cut(str(error))}") from None
        except RecursionError:
            raise EventDecodeError("not JSON: nested too deeply") from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise EventDecodeError(f"an event is a JSON object, got {type(data).__name__}")
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise EventDecodeError(f"unknown event_type {event_type!r}")
    version = data.get("schema_version")
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise EventDecodeError(f"unsupported schema_version {version!r} for {event_type}")
    try:
        return _EVENT.validate_python(dict(data))
    except ValidationError as error:
        raise EventDecodeError(_one_line(event_type, error)) from None
    except (RecursionError, ValueError, TypeError) as error:
        raise EventDecodeError(f"{event_type}: {type(error).__name__}") from None


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode_event(event: Event) -> dict[str, Any]:
    """`event` as a JSON-ready dict: UUIDs and datetimes as strings, money as "40.00"."""
    return event.model_dump(mode="json")


def _one_line(event_type: str, error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    first = problems[0]
    loc = first["loc"][1:] if first["loc"][:1] == (event_type,) else first["loc"]  # drop the union tag
    where = ".".join(str(part) for part in loc) or "payload"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = " ".join(str(first["msg"]).split())
    return _cut(f"invalid {event_type}: {where}: {message}{more}")
