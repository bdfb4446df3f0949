"""Wiring for inventory_svc: settings in, handlers with their dependencies out."""
from __future__ import annotations

from collections.abc import Mapping

from inventory_svc.handlers import HANDLERS
from shared.settings import InventorySettings
from shared.uow import Handler


def bind_handlers(settings: InventorySettings) -> Mapping[type, Handler]:
    """event class → handler(event, tx)."""
    return dict(HANDLERS)
