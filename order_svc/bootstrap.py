"""Wiring for order_svc: settings in, handlers with their dependencies out."""
from __future__ import annotations

from collections.abc import Mapping

from order_svc.handlers import HANDLERS
from shared.settings import OrderSettings
from shared.uow import Handler


def bind_handlers(settings: OrderSettings) -> Mapping[type, Handler]:
    """event class → handler(event, tx). The order deadline is fixed when an order is
    placed (`place_order(..., deadline_seconds=settings.order_deadline_seconds)`), so
    the event handlers need nothing from settings."""
    return dict(HANDLERS)
