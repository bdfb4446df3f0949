"""payment_svc's rules without a database: which decline, in which order."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from pydantic import ValidationError

from payment_svc import domain
from payment_svc.domain import Account, Decline, Payment, PaymentStatus, SetAccount, authorize
from shared.events import InventoryReserved, PaymentCompleted, PaymentFailed, PaymentRefunded, utc_now

pytestmark = pytest.mark.unit

LIMIT = Decimal("100.00")


def account(balance: str, currency: str = "EUR") -> Account:
    return Account("alice", Decimal(balance), currency)


def test_a_charge_returns_the_new_balance_to_the_cent():
    assert authorize(account("50.00"), "alice", Decimal("33.33"), "EUR", LIMIT) == Decimal("16.67")


def test_the_whole_balance_and_the_whole_limit_may_be_used():
    assert authorize(account("100.00"), "alice", Decimal("100.00"), "EUR", LIMIT) == Decimal("0.00")


@pytest.mark.parametrize(
    ("the_account", "amount", "currency", "reason"),
    [
        (None, "1.00", "EUR", "unknown_customer"),
        (None, "1000.00", "USD", "unknown_customer"),  # unknown first
        (account("5000.00"), "100.01", "EUR", "limit_exceeded"),
        (account("0.00"), "100.01", "EUR", "limit_exceeded"),  # limit before funds
        (account("10.00"), "10.01", "EUR", "insufficient_funds"),
        (account("1000.00", "EUR"), "10.00", "USD", "insufficient_funds"),  # no USD held
    ],
)
def test_declines_in_rule_order(the_account, amount, currency, reason):
    decline = authorize(the_account, "alice", Decimal(amount), currency, LIMIT)
    assert isinstance(decline, Decline)
    assert decline.reason == reason


def test_a_currency_mismatch_says_so():
    decline = authorize(account("1000.00"), "alice", Decimal("1.00"), "USD", LIMIT)
    assert decline.reason == "insufficient_funds"
    assert "holds EUR, not USD" in decline.detail


def test_set_account_defaults_to_euro():
    assert SetAccount(balance="12.5") == SetAccount(balance=Decimal("12.50"), currency="EUR")


@pytest.mark.parametrize("body", [{"balance": "-1"}, {"balance": 1.5}, {"balance": "1.005"}, {"balance": "1", "currency": "eur"}, {}])
def test_set_account_refuses_bad_bodies(body):
    with pytest.raises(ValidationError):
        SetAccount.model_validate(body)


# --- the decisions for one order: charge, decline, refund, void ------------------------------

def reserved(amount: str = "40.00", currency: str = "EUR", customer: str = "alice") -> InventoryReserved:
    return InventoryReserved(order_id=uuid.uuid4(), occurred_at=utc_now(), reservation_id=uuid.uuid4(),
                             items=[{"sku": "A", "quantity": 1}], customer_id=customer, amount=amount, currency=currency)


def charged(event: InventoryReserved, status: PaymentStatus = PaymentStatus.CAPTURED, **fields) -> Payment:
    return Payment(event.order_id, uuid.uuid4(), status, event.customer_id, event.amount, event.currency, **fields)


def test_a_new_reservation_is_captured_and_holds_its_amount():
    event, payment_id = reserved("33.33"), uuid.uuid4()
    after, emitted = domain.on_inventory_reserved(None, account("50.00"), event, LIMIT, payment_id)
    assert (after.status, after.payment_id, after.customer_id, after.amount, after.held) == (
        PaymentStatus.CAPTURED, payment_id, "alice", Decimal("33.33"), Decimal("33.33"))
    assert isinstance(emitted, PaymentCompleted)
    assert (emitted.payment_id, emitted.amount, emitted.currency) == (payment_id, Decimal("33.33"), "EUR")


def test_a_declined_reservation_is_recorded_with_its_reason_and_holds_nothing():
    event = reserved("60.00")
    after, emitted = domain.on_inventory_reserved(None, account("50.00"), event, LIMIT, uuid.uuid4())
    assert (after.status, after.reason, after.held) == (PaymentStatus.DECLINED, "insufficient_funds", Decimal(0))
    assert "below" in after.detail
    assert (type(emitted), emitted.reason) == (PaymentFailed, "insufficient_funds")


@pytest.mark.parametrize("reason", ["cancelled_by_customer", "deadline_exceeded"])
def test_an_order_given_up_before_its_reservation_is_voided_then_declined_with_that_reason(reason):
    event, void_id = reserved(), uuid.uuid4()
    voided, nothing = domain.on_order_given_up(None, event.order_id, reason, void_id)
    assert nothing is None
    assert (voided.status, voided.reason, voided.payment_id, voided.customer_id, voided.held) == (
        PaymentStatus.VOIDED, reason, void_id, None, Decimal(0))

    after, emitted = domain.on_inventory_reserved(voided, account("1000.00"), event, LIMIT, uuid.uuid4())

    assert (after.status, after.reason, after.payment_id, after.held) == (PaymentStatus.DECLINED, reason, void_id, Decimal(0))
    assert (after.customer_id, after.amount, after.currency) == ("alice", Decimal("40.00"), "EUR")
    assert (type(emitted), emitted.order_id, emitted.reason) == (PaymentFailed, event.order_id, reason)


def test_a_captured_payment_is_refunded_in_full_once():
    event = reserved("12.34")
    captured = charged(event)
    refunded, emitted = domain.on_order_given_up(captured, event.order_id, "deadline_exceeded", uuid.uuid4())
    assert (refunded.status, refunded.held, refunded.payment_id) == (PaymentStatus.REFUNDED, Decimal(0), captured.payment_id)
    assert isinstance(emitted, PaymentRefunded)
    assert (emitted.payment_id, emitted.amount, emitted.currency) == (captured.payment_id, Decimal("12.34"), "EUR")
    assert domain.on_order_given_up(refunded, event.order_id, "deadline_exceeded", uuid.uuid4()) == (refunded, None)


@pytest.mark.parametrize("status", [PaymentStatus.CAPTURED, PaymentStatus.DECLINED, PaymentStatus.REFUNDED])
def test_a_decided_order_is_never_charged_again(status):
    """A redelivered INVENTORY_RESERVED of any age, even once the customer could pay."""
    event = reserved()
    before = charged(event, status, reason="insufficient_funds" if status == PaymentStatus.DECLINED else None)
    assert domain.on_inventory_reserved(before, account("1000.00"), event, LIMIT, uuid.uuid4()) == (before, None)


@pytest.mark.parametrize("status", [PaymentStatus.DECLINED, PaymentStatus.VOIDED])
def test_nothing_to_refund_or_void_twice(status):
    event = reserved()
    before = Payment(event.order_id, uuid.uuid4(), status, reason="insufficient_funds")
    assert domain.on_order_given_up(before, event.order_id, "cancelled_by_customer", uuid.uuid4()) == (before, None)


@pytest.mark.parametrize("void_first", [True, False])
def test_whichever_event_comes_first_nothing_is_held_at_the_end(void_first):
    """docs/contract/flows.md, Cancellation and the deadline: the charge and the void of one order,
    in either order, leave no money held; exactly one event asks inventory to release
    (PAYMENT_FAILED or PAYMENT_REFUNDED)."""
    event = reserved()
    steps = [
        lambda p: domain.on_order_given_up(p, event.order_id, "cancelled_by_customer", uuid.uuid4()),
        lambda p: domain.on_inventory_reserved(p, account("100.00"), event, LIMIT, uuid.uuid4()),
    ]
    payment, emitted = None, []
    for step in steps if void_first else reversed(steps):
        payment, event_out = step(payment)
        emitted.append(event_out)
    assert payment.held == Decimal(0)
    releasing = [e for e in emitted if isinstance(e, (PaymentFailed, PaymentRefunded))]
    assert len(releasing) == 1
