"""`saga order place|show|cancel`: a client of order_svc's HTTP API.

`order place` always sends an Idempotency-Key (`--idempotency-key`, or a new uuid4), so
a request whose outcome is unknown (a timeout, a dropped connection: the order may or may
not be placed) can be retried without placing the order twice: the command then exits 75
with one line saying so and the command that retries it, the same command line with
`--idempotency-key KEY`.
"""
from __future__ import annotations

import shlex
import shutil
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from saga_cli.endpoints import ORDER_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import Conflict, NotFound, OutcomeUnknown, ServiceClient, Unavailable
from saga_cli.output import cell, console, print_json, text_or_dash
from saga_cli.parsing import parse_currency, parse_idempotency_key, parse_items, parse_money, parse_required_text

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
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Retrying with the same key returns the same order (default: a new uuid4). Up to 255 printable ASCII characters.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Place an order; prints its id. When the outcome is unknown, or order_svc is unavailable (503), says so and prints the command that retries safely (exit 75)."""
    body = {
        "customer_id": parse_required_text(customer, "--customer"),
        "items": [item.as_json() for item in parse_items(items or [])],
        "amount": parse_money(parse_required_text(amount, "--amount"), "--amount"),
        "currency": parse_currency(currency),
    }
    key = parse_idempotency_key(idempotency_key) if idempotency_key is not None else str(uuid.uuid4())
    try:
        answer = ServiceClient(ORDER_SVC).post("/orders", body, headers={"Idempotency-Key": key})
    except OutcomeUnknown as unknown:
        retry = retry_command(key, key_given=idempotency_key is not None)
        if as_json:
            print_json({"order_id": None, "status": "unknown", "idempotency_key": key, "retry": retry, "error": str(unknown)})
        raise OutcomeUnknown(
            f"outcome unknown: {unknown}, so the order may or may not have been placed; retry safely with: {retry}"
        ) from None
    except Unavailable as unavailable:  # the same key again: safe even if a lost COMMIT answer caused the 503
        retry = retry_command(key, key_given=idempotency_key is not None)
        if as_json:
            print_json({"order_id": None, "status": "unavailable", "idempotency_key": key, "retry": retry,
                        "retry_after": unavailable.retry_after, "error": str(unavailable)})
        raise Unavailable(f"{unavailable} with: {retry}", unavailable.detail, unavailable.retry_after) from None
    if not isinstance(answer, dict) or not answer.get("order_id"):
        raise CliError("order_svc accepted the order but did not answer with its order_id")
    if as_json:
        print_json({"order_id": answer["order_id"], "status": answer.get("status"), **answer, "idempotency_key": key})
    else:
        print(answer["order_id"])


def retry_command(key: str, key_given: bool) -> str:
    """The command line this `saga` was started with, shell-quoted (shlex), with
    `--idempotency-key KEY` appended unless it already carried one (`key_given`): run
    again, it places the order at most once."""
    args = sys.argv[1:]
    if not key_given:
        args = [*args, "--idempotency-key", key]
    return shlex.join([_program(), *args])


def _program() -> str:
    """How to run this same `saga` again: "saga" when that is what PATH finds (or when it was
    not started as a `saga` script, e.g. `python -m saga_cli.main`), else the path it was started by."""
    invoked = sys.argv[0] if sys.argv else ""
    if Path(invoked).name != "saga":
        return "saga"
    found = shutil.which("saga")
    if found is not None and Path(found).resolve() == Path(invoked).resolve():
        return "saga"
    return invoked


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
