"""Stock rules. Pure functions.

An order is reserved whole or not at all. Unknown SKUs are reported before short
ones: an order naming an unknown SKU is rejected `unknown_sku` even if another item
is also short. The rejected SKUs are listed in sorted order.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import DomainError
from shared.events import OrderItem


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"


class StockUnavailable(DomainError):
    """The order cannot be reserved; `skus` are the offending SKUs (sorted)."""

    def __init__(self, skus: Iterable[str]) -> None:
        self.skus = tuple(sorted(skus))
        super().__init__(f"{self.reason}: {', '.join(self.skus)}")


class UnknownSku(StockUnavailable):
    reason = "unknown_sku"


class OutOfStock(StockUnavailable):
    reason = "out_of_stock"


class SetStock(BaseModel):
    """The body of PUT /stock/{sku}: the SKU's new available count (a seed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    available: Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]


def check_availability(items: Iterable[OrderItem], available: Mapping[str, int]) -> None:
    """Raise UnknownSku or OutOfStock unless every item can be reserved from `available`
    (SKU → available count, listing only SKUs that exist)."""
    items = list(items)
    unknown = [item.sku for item in items if item.sku not in available]
    if unknown:
        raise UnknownSku(unknown)
    short = [item.sku for item in items if available[item.sku] < item.quantity]
    if short:
        raise OutOfStock(short)
