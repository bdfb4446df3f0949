"""Each service subscribes to the topics its handler tables need, no more, no fewer."""
from __future__ import annotations

import pytest

from inventory_svc.bootstrap import bind_handlers as inventory_handlers
from order_svc.bootstrap import bind_foreign_handlers, bind_handlers as order_handlers
from payment_svc.bootstrap import bind_handlers as payment_handlers
from shared.events import EVENT_CLASSES, EVENT_TYPES, OrderCreated, PaymentFailed, event_type_of, topics_carrying
from shared.settings import InventorySettings, OrderSettings, PaymentSettings

pytestmark = pytest.mark.unit


def test_the_lookup_table_follows_from_the_union():
    assert tuple(EVENT_TYPES.values()) == EVENT_CLASSES
    assert all(EVENT_TYPES[event_type_of(cls)] is cls for cls in EVENT_CLASSES)


def test_topics_follow_from_aggregate_types_each_once_in_catalog_order():
    assert topics_carrying([PaymentFailed, OrderCreated, PaymentFailed]) == ["events.order", "events.payment"]
    assert topics_carrying([]) == []


def test_each_service_subscribes_to_what_its_handlers_need():
    order = OrderSettings()
    assert topics_carrying([*order_handlers(order), *bind_foreign_handlers(order)]) == [
        "events.order", "events.inventory", "events.payment"]  # events.order: foreign ORDER_CREATED
    assert topics_carrying(inventory_handlers(InventorySettings())) == ["events.order", "events.payment"]
    assert topics_carrying(payment_handlers(PaymentSettings())) == ["events.order", "events.inventory"]
