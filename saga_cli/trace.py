"""`saga trace ID`: one saga's timeline, read from the topics (the ground truth).

Only the key's partition of each topic is read, from the order's creation time
(asked of order_svc; the beginning of the partition when it cannot tell) up to
the end offsets seen at start, so a trace stays fast as topics grow and never hangs.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from saga_cli.errors import CliError
from saga_cli.kafka import (
    SAGA_TOPICS,
    BootstrapOption,
    KafkaEvent,
    iso_time,
    kafka_consumer,
    partitions_by_topic,
    read_key,
)
from saga_cli.orders import fetch_order
from saga_cli.output import cell, console, one_line, print_json
from saga_cli.parsing import parse_required_text, parse_since
from saga_cli.timeline import Step, build_timeline, outcome, waiting_for

# Records may carry a timestamp a little before the order row's created_at (clocks, rounding).
START_MARGIN_MS = 5_000

EVENT_CHARS = 60
"""The most characters of the event column's type and of the failure detail under it (the
longest event type has 25): a record holds whatever anyone wrote, the table stays readable."""


def trace(
    order_id: Annotated[str, typer.Argument(metavar="ID", help="The order id (= saga id).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Read from this time: ISO-8601 (local time if no offset) or epoch ms. "
            "Default: the order's creation time, or the beginning.",
        ),
    ] = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """One saga's timeline across all topics: each event, its service, time, hop latency; compensations marked."""
    order_id = parse_required_text(order_id, "ID")
    since_ms = parse_since(since) if since is not None else order_created_ms(order_id)
    events = asyncio.run(read_saga(order_id, since_ms, bootstrap=bootstrap))
    if not events:
        where = f" since {iso_time(since_ms)}" if since_ms is not None else ""
        raise CliError(f"no events for order {order_id} on {', '.join(SAGA_TOPICS)}{where}")
    steps = build_timeline(events)
    waits = waiting_for(steps)
    if as_json:
        print_json({"order_id": order_id, "outcome": outcome(steps), "events": [step.as_json() for step in steps],
                    "waiting_for": [wait.as_json() for wait in waits]})
    else:
        _print_timeline(order_id, steps)
        now_ms = int(time.time() * 1000)
        for wait in waits:
            console().print(Text(f"waiting for {wait.describe(now_ms)}", style="yellow"))


def order_created_ms(order_id: str) -> int | None:
    """When order_svc says the order was created, minus a margin; None when it cannot say."""
    try:
        order = fetch_order(order_id)
    except CliError:
        return None
    created = order.get("created_at") or min(
        (step.get("at") for step in order.get("history") or [] if isinstance(step, dict) and step.get("at")),
        default=None,
    )
    if not created:
        return None
    try:
        moment = datetime.fromisoformat(str(created))
    except ValueError:
        return None
    return max(int(moment.astimezone().timestamp() * 1000) - START_MARGIN_MS, 0)


async def read_saga(order_id: str, since_ms: int | None, bootstrap: str | None = None) -> list[KafkaEvent]:
    """The saga's records on every topic since `since_ms` (epoch ms; None: the beginning), read from
    Kafka at `bootstrap` (None: the default); CliError when Kafka cannot be read."""
    async with kafka_consumer(auto_offset_reset="earliest", bootstrap=bootstrap) as consumer:
        return await read_key(consumer, order_id, await partitions_by_topic(consumer), since_ms=since_ms)


async def read_sagas(
    since_ms_by_order: dict[str, int | None], bootstrap: str | None = None
) -> dict[str, list[KafkaEvent]]:
    """Each saga's records (as `read_saga`), read one after another with one consumer."""
    async with kafka_consumer(auto_offset_reset="earliest", bootstrap=bootstrap) as consumer:
        topics = await partitions_by_topic(consumer)
        return {order_id: await read_key(consumer, order_id, topics, since_ms=since_ms)
                for order_id, since_ms in since_ms_by_order.items()}


# Below this console width the table drops the Kafka coordinates (the JSON always has them).
WIDE_CONSOLE = 100


def _print_timeline(order_id: str, steps: list[Step]) -> None:
    out = console()
    wide = out.width >= WIDE_CONSOLE
    duration_ms = steps[-1].since_start_ms
    heading = Text(f"saga {order_id}: ", style="bold")
    heading.append(outcome(steps), style=EVENT_STYLES.get(f"ORDER_{outcome(steps)}", ""))
    heading.append(f", {len(steps)} event{'s' if len(steps) != 1 else ''} in {_duration(duration_ms)}")
    heading.append(f" from {steps[0].event.at}")
    table = Table(show_edge=False)
    table.add_column("+time", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("hop", justify="right", no_wrap=True)
    if wide:
        table.add_column(Text("topic[partition]@offset"), no_wrap=True)
        table.add_column("event id", no_wrap=True)
    for step in steps:
        event = step.event
        row = [
            cell(_duration(step.since_start_ms)),
            _event_cell(step),
            cell(event.service),
            cell(None if step.hop_ms is None else _duration(step.hop_ms)),
        ]
        if wide:
            row += [cell(f"{event.topic}[{event.partition}]@{event.offset}"), cell(one_line((event.event_id or "")[:8], 8))]
        table.add_row(*row)
    out.print(heading)
    out.print(table)
    legend = "hop: time since the event that caused it"
    if any(step.compensation for step in steps):
        legend += " · ↺ compensation"
    if any(step.event.event_type == "DEAD_LETTER" for step in steps):
        legend += " · DEAD_LETTER: a consumer refused an event of this saga (its error below it)"
    out.print(Text(legend, style="dim"))


EVENT_STYLES = {"ORDER_CONFIRMED": "bold green", "ORDER_CANCELLED": "bold red", "DEAD_LETTER": "bold red"}
SIGNED_TOPICS = frozenset(topic for topic in SAGA_TOPICS if topic != "events.deadletter")
"""Topics whose events the services sign; one without a signature was published by someone else."""


def _event_cell(step: Step) -> Text:
    """The event type (↺ for a compensation), and what its payload says went wrong on a second
    line; each cut to EVENT_CHARS, unprintable characters escaped."""
    name = step.event.event_type or "?"
    text = Text("↺ " if step.compensation else "  ")
    text.append(one_line(name, EVENT_CHARS), style=EVENT_STYLES.get(name, "yellow" if step.compensation else ""))
    if step.duplicate:
        text.append(" (duplicate)", style="dim")
    if not step.event.signed and step.event.topic in SIGNED_TOPICS:
        text.append(" (unsigned: from outside)", style="magenta")
    detail = _detail(step.event.value)
    if detail:
        text.append(f"\n  {detail}", style="dim")
    return text


def _detail(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    parts = [str(payload["reason"])] if payload.get("reason") else []
    skus = payload.get("skus")
    if skus:
        parts.append(", ".join(str(sku) for sku in skus) if isinstance(skus, list) else str(skus))
    if payload.get("error"):
        by = f"{payload['consumer']}: " if isinstance(payload.get("consumer"), str) else ""
        parts.append(one_line(by + str(payload["error"]), 60))
    return one_line(" ".join(parts), EVENT_CHARS)


def _duration(ms: int) -> str:
    if abs(ms) < 1000:
        return f"{ms} ms"
    return f"{ms / 1000:.3f} s"
