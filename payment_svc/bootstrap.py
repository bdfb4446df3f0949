"""Wiring for payment_svc: settings in, handlers with their dependencies out."""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from payment_svc.handlers import HANDLERS, charge_payment
from shared.events import InventoryReserved
from shared.settings import PaymentSettings
from shared.uow import Handler


def bind_handlers(settings: PaymentSettings) -> Mapping[type, Handler]:
    """event class → handler(event, tx), the charge bound to the configured per-order limit."""
    return {**HANDLERS, InventoryReserved: partial(charge_payment, per_order_limit=settings.per_order_limit)}
