"""`saga account set|show`: a client of payment_svc's HTTP API (seed and view balances)."""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from saga_cli.endpoints import PAYMENT_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import NotFound, ServiceClient
from saga_cli.output import cell, console, print_json
from saga_cli.parsing import parse_currency, parse_money, parse_required_text

account_app = typer.Typer(no_args_is_help=True, help="Seed and view customer accounts (payment_svc).")


@account_app.command("set")
def set_account(
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", show_default=False)],
    balance: Annotated[str, typer.Argument(metavar="BALANCE", help="e.g. 100.00", show_default=False)],
    currency: Annotated[str, typer.Option("--currency", metavar="CODE", help="ISO-4217 code.")] = "EUR",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Set a customer's balance (creates the account if new)."""
    customer = parse_required_text(customer, "CUSTOMER")
    body = {"balance": parse_money(balance, "BALANCE"), "currency": parse_currency(currency)}
    answer = ServiceClient(PAYMENT_SVC).put(_path(customer), body)
    row = answer if isinstance(answer, dict) else {"customer": customer, **body}
    if as_json:
        print_json(row)
    else:
        print(f"{row.get('customer', customer)}: balance {row.get('balance')} {row.get('currency', '')}".rstrip())


@account_app.command("show")
def show_account(
    customer: Annotated[
        str | None, typer.Argument(metavar="[CUSTOMER]", help="One customer; all when left out.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Balance per customer."""
    client = ServiceClient(PAYMENT_SVC)
    if customer is None:
        rows = _as_rows(client.get("/accounts"))
    else:
        customer = parse_required_text(customer, "CUSTOMER")
        try:
            rows = [client.get(_path(customer))]
        except NotFound:
            raise CliError(f"account {customer} not found") from None
    if as_json:
        print_json(rows if customer is None else rows[0])
    else:
        _print_table(rows)


def _path(customer: str) -> str:
    return f"/accounts/{quote(customer, safe='')}"


def _as_rows(answer: Any) -> list[dict[str, Any]]:
    """GET /accounts answers a list; tolerate an {"accounts": [...]} wrapper too."""
    if isinstance(answer, dict) and isinstance(answer.get("accounts"), list):
        answer = answer["accounts"]
    if not isinstance(answer, list):
        raise CliError("payment_svc answered GET /accounts with something that is not a list of accounts")
    return answer


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no accounts yet (seed one with `saga account set CUSTOMER BALANCE`)")
        return
    table = Table(show_edge=False)
    table.add_column("customer")
    table.add_column("balance", justify="right")
    table.add_column("currency")
    for row in rows:
        table.add_row(cell(row.get("customer")), cell(row.get("balance")), cell(row.get("currency")))
    console().print(table)
