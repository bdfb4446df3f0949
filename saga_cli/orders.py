"""`saga order place|show|cancel`: a client of order_svc's HTTP API."""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from saga_cli.endpoints import ORDER_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import Conflict, NotFound, ServiceClient
from saga_cli.output import cell, console, print_json, text_or_dash
from saga_cli.parsing import parse_currency, parse_items, parse_money, parse_required_text

order_app = typer.Typer(no_args_is_help=True, help="Place, show and cancel orders (order_svc).")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
OrderId = Annotated[str, typer.Argument(metavar="ID", help="The order id (= saga id).", show_default=False)]


@order_app.command("place")
def place(
    customer: Annotated[str | None, typer.Option("--customer", metavar="CUSTOMER", help="Customer id (required).")] = None,
    items: Annotated[
        list[str] | None, typer.Option("--item", metavar="SKU:QTY", help="An item to order; repeat for more (required).")
    ] = None,
    amount: Annotated[str | None, typer.Option("--amount", metavar="AMOUNT", help="Order total, e.g. 40.00 (required).")] = None,
    currency: Annotated[str, typer.Option("--currency", metavar="CODE", help="ISO-4217 code.")] = "EUR",
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", metavar="KEY", help="Retrying with the same key returns the same order.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Place an order; prints its id."""
    body = {
        "customer_id": parse_required_text(customer, "--customer"),
        "items": [item.as_json() for item in parse_items(items or [])],
        "amount": parse_money(parse_required_text(amount, "--amount"), "--amount"),
        "currency": parse_currency(currency),
    }
    headers = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = parse_required_text(idempotency_key, "--idempotency-key")
    answer = ServiceClient(ORDER_SVC).post("/orders", body, headers=headers)
    if not isinstance(answer, dict) or not answer.get("order_id"):
        raise CliError("order_svc accepted the order but did not answer with its order_id")
    if as_json:
        print_json({"order_id": answer["order_id"], "status": answer.get("status"), **answer})
    else:
        print(answer["order_id"])


@order_app.command("show")
def show(order_id: OrderId, as_json: JsonFlag = False) -> None:
    """An order's state, amount, items and status history."""
    order = fetch_order(order_id)
    if as_json:
        print_json(order)
    else:
        _print_order(order)


@order_app.command("cancel")
def cancel(order_id: OrderId, as_json: JsonFlag = False) -> None:
    """Ask to cancel an order (a customer cancellation; compensations follow if it was in flight)."""
    order_id = parse_required_text(order_id, "ID")
    try:
        answer = ServiceClient(ORDER_SVC).post(f"/orders/{quote(order_id, safe='')}/cancel")
    except NotFound:
        raise CliError(f"order {order_id} not found") from None
    except Conflict as conflict:
        raise CliError(f"order {order_id} cannot be cancelled" + (f": {conflict.detail}" if conflict.detail else "")) from None
    answer = answer if isinstance(answer, dict) else {}
    if as_json:
        print_json({"order_id": order_id, **answer})
    else:
        status = answer.get("status")
        print(f"order {order_id}: cancellation requested" + (f" (status {status})" if status else ""))


def fetch_order(order_id: str) -> dict[str, Any]:
    """GET /orders/{id}; "order X not found" on 404."""
    order_id = parse_required_text(order_id, "ID")
    try:
        order = ServiceClient(ORDER_SVC).get(f"/orders/{quote(order_id, safe='')}")
    except NotFound:
        raise CliError(f"order {order_id} not found") from None
    if not isinstance(order, dict):
        raise CliError(f"order_svc answered GET /orders/{order_id} with something that is not an order")
    return order


def _print_order(order: dict[str, Any]) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("order", cell(order.get("order_id")))
    summary.add_row("status", _status_cell(order.get("status")))
    if order.get("reason"):
        summary.add_row("reason", cell(order["reason"]))
    summary.add_row("customer", cell(order.get("customer_id")))
    summary.add_row("amount", cell(f"{text_or_dash(order.get('amount'))} {order.get('currency') or ''}".rstrip()))
    summary.add_row("items", cell(_items_text(order.get("items"))))
    out = console()
    out.print(summary)

    history = order.get("history") or []
    if history:
        table = Table(title="history", title_justify="left", show_edge=False)
        table.add_column("status")
        table.add_column("at")
        table.add_column("event id", overflow="fold")
        for step in history:
            table.add_row(_status_cell(step.get("status")), cell(step.get("at")), cell(step.get("event_id")))
        out.print()
        out.print(table)


def _items_text(items: Any) -> str:
    if not isinstance(items, list) or not items:
        return "—"
    return ", ".join(f"{item.get('sku')} × {item.get('quantity')}" for item in items if isinstance(item, dict))


STATUS_STYLES = {"CONFIRMED": "green", "CANCELLED": "red"}


def _status_cell(status: Any) -> Text:
    return cell(status, STATUS_STYLES.get(str(status), ""))
