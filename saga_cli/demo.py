"""`make demo`: the whole real stack, the three services, and the four flows of the saga, start to finish.

It starts what is not running (PostgreSQL, Kafka, Kafka Connect with the outbox
connectors, order_svc, inventory_svc, payment_svc), seeds stock and accounts,
places one order per flow, waits until each saga is terminal, prints each saga's
timeline as read from the topics, and stops what it started. Exit status 0 only
when every order ends as its flow says.
"""
from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from saga_cli import services as service_processes
from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import ServiceClient
from saga_cli.stack import Stack, StackSettings
from saga_cli.trace import read_saga, trace

console = Console(highlight=False, width=110)
TERMINAL = {"CONFIRMED", "CANCELLED"}


@dataclass(frozen=True)
class Flow:
    """One demo order: its customer, items [(sku, quantity)], amount (EUR, two-place text), the status
    and reason it must end in, the last event its saga publishes, whether the customer cancels
    after payment (flow 4)."""

    title: str
    customer: str
    items: list[tuple[str, int]]
    amount: str
    expected_status: str
    expected_reason: str | None
    last_event: str
    cancel_after_payment: bool = False


def flows(run: str) -> list[Flow]:
    """One order per flow of the saga; the run suffix keeps every demo run's customers and SKUs apart."""
    return [
        Flow("1. happy path", f"alice-{run}", [(f"WIDGET-{run}", 2)], "40.00", "CONFIRMED", None, "INVENTORY_COMMITTED"),
        Flow("2. stock short (C1)", f"alice-{run}", [(f"GADGET-{run}", 5)], "25.00", "CANCELLED", "out_of_stock", "ORDER_CANCELLED"),
        Flow("3. payment declined (C2, C1)", f"bob-{run}", [(f"WIDGET-{run}", 1)], "30.00", "CANCELLED", "insufficient_funds", "ORDER_CANCELLED"),
        Flow("4. cancelled after payment (C3, C2, C1)", f"carol-{run}", [(f"WIDGET-{run}", 1)], "25.00", "CANCELLED",
             "cancelled_by_customer", "ORDER_CANCELLED", cancel_after_payment=True),
    ]


def main() -> int:
    """`make demo` (the module's docstring): 0 when every order ended as its flow says, else 1."""
    began = time.monotonic()
    settings = StackSettings()
    stack = Stack(settings)
    started = [c for c in stack.components if c.find() is None]
    started_services = [s for s in service_processes.services(settings) if s.find() is None]
    orders = ServiceClient(ORDER_SVC)
    try:
        console.rule("[bold]starting the stack and the services")
        stack.up(console.print)
        service_processes.up(settings, console.print)

        run = uuid.uuid4().hex[:6]
        plan = flows(run)
        console.rule("[bold]seeding stock and accounts")
        seed(run)

        console.rule("[bold]placing one order per flow")
        placed = [(flow, place(flow, run, stack)) for flow in plan]

        finals = {order_id: wait_terminal(orders, order_id) for _, order_id in placed}
        for flow, order_id in placed:
            wait_for_event(order_id, flow.last_event)
        for flow, order_id in placed:
            console.rule(f"[bold]{flow.title}")
            trace(order_id, as_json=False, since=None)

        ok = summary(placed, finals)
        console.print(f"\ndemo finished in {time.monotonic() - began:.1f}s")
        return 0 if ok else 1
    except (CliError, httpx.HTTPError) as error:
        console.print(f"[red]demo failed:[/red] {error}")
        return 1
    finally:
        console.rule("[bold]stopping what the demo started")
        for service in started_services:
            service.stop()
            console.print(f"{service.name:<14} stopped")
        for component in reversed(started):
            component.stop()
            console.print(f"{component.name:<14} stopped")


PAYMENTS_CONNECTOR = "payments-outbox"
CAROL_BALANCE = "100.00"


def place(flow: Flow, run: str, stack: Stack) -> str:
    """Place the flow's order; for flow 4, the customer cancels once the payment is captured."""
    body = {
        "customer_id": flow.customer,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in flow.items],
        "amount": flow.amount,
        "currency": "EUR",
    }
    if flow.cancel_after_payment:
        return place_and_cancel_after_payment(flow, run, body, stack)
    order_id = ServiceClient(ORDER_SVC).post("/orders", body, headers={"Idempotency-Key": f"demo-{run}-{flow.title}"})["order_id"]
    console.print(f"{flow.title:<42} order {order_id}")
    return order_id


def place_and_cancel_after_payment(flow: Flow, run: str, body: dict, stack: Stack) -> str:
    """Flow 4 of the saga: the customer cancels after the payment was captured, before the order
    is confirmed. A saga settles in tens of milliseconds, so the demo holds payment_svc's events
    back — its connector paused, so PAYMENT_COMPLETED waits in the outbox — while the customer
    cancels: order_svc emits ORDER_CONFIRMATION_FAILED at once, payment_svc refunds (C3), and once
    the connector resumes inventory_svc releases the stock (C2) and order_svc cancels (C1)."""
    payments = ServiceClient(PAYMENT_SVC)
    stack.connect.pause_connector(PAYMENTS_CONNECTOR)
    try:
        order_id = ServiceClient(ORDER_SVC).post("/orders", body, headers={"Idempotency-Key": f"demo-{run}-{flow.title}"})["order_id"]
        charged = f"{float(CAROL_BALANCE) - float(flow.amount):.2f}"
        wait_balance(payments, flow.customer, charged, "the payment to be captured")
        ServiceClient(ORDER_SVC).post(f"/orders/{order_id}/cancel")
        console.print(f"{flow.title:<42} order {order_id} (paid {flow.amount}, then cancelled by the customer)")
        wait_balance(payments, flow.customer, CAROL_BALANCE, "the refund")
    finally:
        stack.connect.resume_connector(PAYMENTS_CONNECTOR)
    return order_id


def wait_balance(payments: ServiceClient, customer: str, balance: str, what: str, timeout: float = 30.0) -> None:
    """Poll (every 0.1 s) until `customer`'s balance reads `balance`; CliError after `timeout` seconds,
    naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while payments.get(f"/accounts/{customer}")["balance"] != balance:
        if time.monotonic() > deadline:
            raise CliError(f"waited {timeout:.0f}s for {what} of {customer}")
        time.sleep(0.1)


def seed(run: str) -> None:
    """Seed the run's SKUs (WIDGET 10, GADGET 1 available) and accounts (alice 100.00, bob 5.00,
    carol CAROL_BALANCE EUR) over HTTP."""
    inventory, payment = ServiceClient(INVENTORY_SVC), ServiceClient(PAYMENT_SVC)
    for sku, available in ((f"WIDGET-{run}", 10), (f"GADGET-{run}", 1)):
        inventory.put(f"/stock/{sku}", {"available": available})
        console.print(f"stock    {sku:<16} {available} available")
    for customer, balance in ((f"alice-{run}", "100.00"), (f"bob-{run}", "5.00"), (f"carol-{run}", CAROL_BALANCE)):
        payment.put(f"/accounts/{customer}", {"balance": balance, "currency": "EUR"})
        console.print(f"account  {customer:<16} {balance} EUR")


def wait_terminal(orders: ServiceClient, order_id: str, timeout: float = 60.0) -> dict:
    """Poll (every 0.2 s) until the order is CONFIRMED or CANCELLED: GET /orders/{id}'s body. CliError
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        order = orders.get(f"/orders/{order_id}")
        if order["status"] in TERMINAL:
            return order
        if time.monotonic() > deadline:
            raise CliError(f"order {order_id} is still {order['status']} after {timeout:.0f}s")
        time.sleep(0.2)


def wait_for_event(order_id: str, event_type: str, timeout: float = 30.0) -> None:
    """Until the saga's last event is on its topic (the order's state commits before its event is published)."""
    deadline = time.monotonic() + timeout
    while not any(event.event_type == event_type for event in asyncio.run(read_saga(order_id, None))):
        if time.monotonic() > deadline:
            raise CliError(f"no {event_type} for order {order_id} on the topics after {timeout:.0f}s")
        time.sleep(0.2)


def summary(placed: list[tuple[Flow, str]], finals: dict[str, dict]) -> bool:
    """Print the outcome table (one row per placed order); True when every order ended in its flow's
    status and reason."""
    table = Table(title="outcome")
    for column in ("flow", "order", "status", "reason", "as expected"):
        table.add_column(column)
    ok = True
    for flow, order_id in placed:
        final = finals[order_id]
        good = final["status"] == flow.expected_status and final["reason"] == flow.expected_reason
        ok &= good
        table.add_row(flow.title, order_id[:8], final["status"], final["reason"] or "—", "[green]yes[/green]" if good else "[red]no[/red]")
    console.print(table)
    return ok


if __name__ == "__main__":
    sys.exit(main())
