"""`saga stock set|show`: a client of inventory_svc's HTTP API (seed and view stock)."""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from saga_cli.endpoints import INVENTORY_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import NotFound, ServiceClient
from saga_cli.output import cell, console, print_json
from saga_cli.parsing import parse_non_negative_int, parse_required_text

stock_app = typer.Typer(no_args_is_help=True, help="Seed and view stock (inventory_svc).")

COUNTS = ("available", "reserved", "sold")


@stock_app.command("set")
def set_stock(
    sku: Annotated[str, typer.Argument(metavar="SKU", show_default=False)],
    quantity: Annotated[str, typer.Argument(metavar="QTY", help="Units available to order.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Set how many units of SKU are available (creates the SKU if new)."""
    sku = parse_required_text(sku, "SKU")
    available = parse_non_negative_int(quantity, "QTY")
    answer = ServiceClient(INVENTORY_SVC).put(_path(sku), {"available": available})
    row = answer if isinstance(answer, dict) else {"sku": sku, "available": available}
    if as_json:
        print_json(row)
    else:
        print(f"{row.get('sku', sku)}: " + ", ".join(f"{name} {row[name]}" for name in COUNTS if name in row))


@stock_app.command("show")
def show_stock(
    sku: Annotated[str | None, typer.Argument(metavar="[SKU]", help="One SKU; all when left out.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Stock per SKU: available, reserved, sold."""
    client = ServiceClient(INVENTORY_SVC)
    if sku is None:
        rows = _as_rows(client.get("/stock"))
    else:
        sku = parse_required_text(sku, "SKU")
        try:
            rows = [client.get(_path(sku))]
        except NotFound:
            raise CliError(f"sku {sku} not found") from None
    if as_json:
        print_json(rows if sku is None else rows[0])
    else:
        _print_table(rows)


def _path(sku: str) -> str:
    return f"/stock/{quote(sku, safe='')}"


def _as_rows(answer: Any) -> list[dict[str, Any]]:
    """GET /stock answers a list; tolerate a {"stock": [...]} / {"items": [...]} wrapper too."""
    if isinstance(answer, dict):
        answer = next((answer[key] for key in ("stock", "items") if isinstance(answer.get(key), list)), answer)
    if not isinstance(answer, list):
        raise CliError("inventory_svc answered GET /stock with something that is not a list of stock rows")
    return answer


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no stock yet (seed some with `saga stock set SKU QTY`)")
        return
    table = Table(show_edge=False)
    table.add_column("sku")
    for name in COUNTS:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(cell(row.get("sku")), *(cell(row.get(name)) for name in COUNTS))
    console().print(table)
