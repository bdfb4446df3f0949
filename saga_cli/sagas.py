"""`saga sagas [--stuck | --all] [--limit N] [--json]`: the sagas in flight, newest first.

A client of order_svc's `GET /orders?status=in_flight|stuck|all&limit=N`: in flight means
the order is not CONFIRMED or CANCELLED yet; stuck means in flight past its deadline
(ORDER_SVC_ORDER_DEADLINE_SECONDS after it was placed), i.e. a saga that should have
finished by now; for each, `--stuck` reads its records on the topics and says what it waits
for: which service should answer which event, since when, and the dead letter if that service
refused it. Ages and deadlines are shown relative to this machine's clock.
"""
from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from saga_cli.endpoints import ORDER_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import ServiceClient
from saga_cli.kafka import BootstrapOption
from saga_cli.orders import STATUS_STYLES
from saga_cli.output import cell, console, one_line, print_json
from saga_cli.timeline import build_timeline, waiting_for
from saga_cli.trace import read_sagas

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def sagas(
    stuck: Annotated[bool, typer.Option("--stuck", help="Only sagas in flight past their deadline.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Finished sagas too (CONFIRMED, CANCELLED).")] = False,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help=f"At most N sagas, newest first (1–{MAX_LIMIT}).")
    ] = DEFAULT_LIMIT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Sagas in flight (orders not CONFIRMED or CANCELLED yet), newest first; --stuck: past their deadline."""
    if stuck and show_all:
        raise CliError("--stuck and --all do not go together: --stuck shows only sagas in flight")
    if not 1 <= limit <= MAX_LIMIT:
        raise CliError(f"--limit must be from 1 to {MAX_LIMIT}, not {limit}")
    which = "stuck" if stuck else "all" if show_all else "in_flight"
    found = fetch_sagas(which, limit)
    if stuck:
        add_waiting_for(found, bootstrap)
    if as_json:
        print_json(found)
    else:
        _print_table(found, which, limit)


def fetch_sagas(which: str, limit: int) -> list[dict[str, Any]]:
    """GET /orders?status=WHICH&limit=N from order_svc."""
    answer = ServiceClient(ORDER_SVC).get(f"/orders?status={which}&limit={limit}")
    if not isinstance(answer, list) or not all(isinstance(order, dict) and order.get("order_id") for order in answer):
        raise CliError("order_svc answered GET /orders with something that is not a list of orders")
    return answer


def add_waiting_for(found: list[dict[str, Any]], bootstrap: str | None = None) -> None:
    """Give each saga its `waiting_for` (saga_cli/timeline.py), read from its records on the
    topics: which service should answer which event, since when, and a dead letter if it refused.
    When Kafka cannot be read, one line on stderr says so and the sagas are listed without it."""
    if not found:
        return
    since = {str(order["order_id"]): _created_ms(order) for order in found}
    try:
        records = asyncio.run(read_sagas(since, bootstrap))
    except CliError as error:  # the list stands without the topics: say why the waits are missing
        print(f"{error.args[0] if error.args else error} (what each saga waits for is left out)", file=sys.stderr)
        return
    for order in found:
        waits = waiting_for(build_timeline(records.get(str(order["order_id"]), [])))
        order["waiting_for"] = [wait.as_json() for wait in waits]


def _created_ms(order: dict[str, Any]) -> int | None:
    created = _parse(order.get("created_at"))
    return None if created is None else max(int(created.timestamp() * 1000) - 5_000, 0)


_EMPTY = {"in_flight": "no sagas in flight", "stuck": "no stuck sagas", "all": "no sagas yet"}


def _print_table(found: list[dict[str, Any]], which: str, limit: int) -> None:
    out = console()
    if not found:
        out.print(_EMPTY[which])
        return
    now = datetime.now(timezone.utc)
    # four narrow columns so that a full order id still fits 80 columns
    table = Table(show_edge=False)
    table.add_column("order · customer · amount", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    table.add_column("deadline", justify="right", no_wrap=True)
    for order in found:
        ident = Text(str(order.get("order_id")))
        ident.append(f"\n{order.get('customer_id')} · {order.get('amount')} {order.get('currency')}", style="dim")
        status = Text(str(order.get("status")), style=STATUS_STYLES.get(str(order.get("status")), "yellow"))
        if order.get("reason"):
            status.append(f"\n{order['reason']}", style="dim")
        for wait in order.get("waiting_for") or ():
            status.append(f"\nwaits for {wait['service']}: {' or '.join(wait['events'])}", style="yellow")
            if wait.get("dead_letter"):
                status.append(f"\n  dead-lettered: {one_line(str(wait['dead_letter']), 60)}", style="red")
        table.add_row(ident, status, cell(_age(order, now)), _deadline(order, now))
    out.print(table)
    summary = f"{len(found)} saga{'s' if len(found) != 1 else ''}"
    stuck = sum(1 for order in found if order.get("stuck"))
    if stuck and which != "stuck":
        summary += f", {stuck} stuck"
    if len(found) == limit:
        summary += f" (the newest {limit}; --limit shows more)"
    out.print(Text(summary, style="dim"))


def _age(order: dict[str, Any], now: datetime) -> str:
    created = _parse(order.get("created_at"))
    if created is None:
        return "—"
    finished = order.get("status") in STATUS_STYLES
    end = _parse(order.get("updated_at")) if finished else now
    return _seconds(((end or now) - created).total_seconds())


def _deadline(order: dict[str, Any], now: datetime) -> Text:
    """'12s left', or '3.0s over' in red for a stuck saga; '—' once finished."""
    deadline = _parse(order.get("deadline_at"))
    if deadline is None or order.get("status") in STATUS_STYLES:
        return Text("—")
    left = (deadline - now).total_seconds()
    if order.get("stuck") or left < 0:
        return Text(f"{_seconds(-left)} over", style="red")
    return Text(f"{_seconds(left)} left")


def _seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
