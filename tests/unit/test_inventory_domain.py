"""inventory_svc's rules without a database."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from inventory_svc.domain import OutOfStock, SetStock, UnknownSku, check_availability
from shared.events import OrderItem

pytestmark = pytest.mark.unit


def items(**quantities: int) -> list[OrderItem]:
    return [OrderItem(sku=sku, quantity=quantity) for sku, quantity in quantities.items()]


def test_enough_of_everything_passes():
    check_availability(items(A=2, B=3), {"A": 2, "B": 5})


def test_short_items_are_named_in_sku_order():
    with pytest.raises(OutOfStock) as caught:
        check_availability(items(C=2, A=9, B=1), {"A": 1, "B": 1, "C": 1})
    assert (caught.value.reason, caught.value.skus) == ("out_of_stock", ("A", "C"))


def test_unknown_skus_win_over_short_ones():
    with pytest.raises(UnknownSku) as caught:
        check_availability(items(A=9, Z=1, Y=1), {"A": 1})
    assert (caught.value.reason, caught.value.skus) == ("unknown_sku", ("Y", "Z"))


def test_zero_available_is_short():
    with pytest.raises(OutOfStock):
        check_availability(items(A=1), {"A": 0})


@pytest.mark.parametrize("available", [0, 5, 1_000_000_000])
def test_set_stock_accepts_counts(available):
    assert SetStock(available=available).available == available


@pytest.mark.parametrize("available", [-1, "5", 1.5, True, None, 1_000_000_001])
def test_set_stock_refuses_non_counts(available):
    with pytest.raises(ValidationError):
        SetStock(available=available)
