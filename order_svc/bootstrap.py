"""Wiring for order_svc: settings in, handlers with their dependencies out."""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from order_svc.handlers import HANDLERS, adopt_order
from shared.events import OrderCreated
from shared.settings import OrderSettings
from shared.uow import Handler


def bind_handlers(settings: OrderSettings) -> Mapping[type, Handler]:
    """event class → handler(event, tx). The order deadline is fixed when an order is
    placed (`place_order(..., deadline_seconds=settings.order_deadline_seconds)`), so
    the event handlers need nothing from settings."""
    return dict(HANDLERS)


def bind_foreign_handlers(settings: OrderSettings) -> Mapping[type, Handler]:
    """event class → handler for events that come from outside, unsigned: an ORDER_CREATED
    anyone published is adopted, with this service's order deadline."""
    return {OrderCreated: partial(adopt_order, deadline_seconds=settings.order_deadline_seconds)}
