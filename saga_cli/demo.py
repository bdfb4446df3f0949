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
    title: str
    customer: str
    items: list[tuple[str, int]]
    amount: str
    expected_status: str
    expected_reason: str | None
    last_event: str
    cancel_at_once: bool = False


def flows(run: str) -> list[Flow]:
    """One order per flow of the saga; the run suffix keeps every demo run's customers and SKUs apart."""
    return [
        Flow("1. happy path", f"alice-{run}", [(f"WIDGET-{run}", 2)], "40.00", "CONFIRMED", None, "INVENTORY_COMMITTED"),
        Flow("2. stock short (C1)", f"alice-{run}", [(f"GADGET-{run}", 5)], "25.00", "CANCELLED", "out_of_stock", "ORDER_CANCELLED"),
        Flow("3. payment declined (C2, C1)", f"bob-{run}", [(f"WIDGET-{run}", 1)], "30.00", "CANCELLED", "insufficient_funds", "ORDER_CANCELLED"),
        Flow("4. cancelled in flight (C3, C2, C1)", f"carol-{run}", [(f"WIDGET-{run}", 1)], "25.00", "CANCELLED",
             "cancelled_by_customer", "ORDER_CANCELLED", cancel_at_once=True),
    ]


def main() -> int:
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
        placed = [(flow, place(flow, run)) for flow in plan]

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


def place(flow: Flow, run: str, attempts: int = 3) -> str:
    """Place the flow's order; for the in-flight flow, the customer cancels right after placing.

    The saga settles in a few tens of milliseconds, so the cancel shares one open
    connection with the placement; should the saga still win the race (the order is
    CONFIRMED already), the customer simply tries again with a new order."""
    body = {
        "customer_id": flow.customer,
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in flow.items],
        "amount": flow.amount,
        "currency": "EUR",
    }
    with httpx.Client(base_url=ORDER_SVC.url, timeout=10) as client:
        for attempt in range(1, attempts + 1):
            response = client.post("/orders", json=body, headers={"Idempotency-Key": f"demo-{run}-{flow.title}-{attempt}"})
            response.raise_for_status()
            order_id = response.json()["order_id"]
            if not flow.cancel_at_once:
                console.print(f"{flow.title:<38} order {order_id}")
                return order_id
            cancelled = client.post(f"/orders/{order_id}/cancel")
            if cancelled.status_code == 200:
                console.print(f"{flow.title:<38} order {order_id} (cancelled by the customer at once)")
                return order_id
            console.print(f"{flow.title:<38} order {order_id} settled before the cancel arrived; placing another")
    raise CliError(f"could not cancel an order of flow {flow.title!r} in flight in {attempts} attempts")


def seed(run: str) -> None:
    inventory, payment = ServiceClient(INVENTORY_SVC), ServiceClient(PAYMENT_SVC)
    for sku, available in ((f"WIDGET-{run}", 10), (f"GADGET-{run}", 1)):
        inventory.put(f"/stock/{sku}", {"available": available})
        console.print(f"stock    {sku:<16} {available} available")
    for customer, balance in ((f"alice-{run}", "100.00"), (f"bob-{run}", "5.00"), (f"carol-{run}", "100.00")):
        payment.put(f"/accounts/{customer}", {"balance": balance, "currency": "EUR"})
        console.print(f"account  {customer:<16} {balance} EUR")


def wait_terminal(orders: ServiceClient, order_id: str, timeout: float = 60.0) -> dict:
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
