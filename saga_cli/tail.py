"""`saga tail [TOPIC…]`: live events, one line each with key and headers, until Ctrl-C.

`--json` writes one JSON object per line instead (JSON Lines, for `jq`), flushed as each event
arrives: {"topic", "partition", "offset", "timestamp" (UTC ISO-8601), "timestamp_ms", "key",
"event_type", "event_id", "headers": {name: last value}, "value"}. "value" is the record's JSON,
or its text when it is not JSON (saga_cli/kafka.py); nothing is cut.
"""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.text import Text

from saga_cli.errors import CliError
from saga_cli.kafka import (
    SAGA_TOPICS,
    BootstrapOption,
    KafkaEvent,
    decode_record,
    fetch,
    kafka_consumer,
    partition_for_key,
    partitions_by_topic,
)
from saga_cli.output import TEXT_CHARS, console, one_line
from saga_cli.timeline import COMPENSATIONS

POLL_MS = 1000
# Debezium's own diagnostic headers (connector name, task, run id): noise next to the saga's headers.
DEBEZIUM_CONTEXT = "__debezium.context."

PAYLOAD_CHARS = 2000
"""The most characters of a JSON payload on a line (a saga event's takes a few hundred)."""
MAX_HEADERS_SHOWN = 20
"""Headers shown per line; more are summed up as "(+N headers)"."""
EMPTY_NAME = '""'


def tail(
    topics: Annotated[
        list[str] | None,
        typer.Argument(metavar="[TOPIC]...", help=f"Topics to follow (default: {', '.join(SAGA_TOPICS)}).", show_default=False),
    ] = None,
    saga: Annotated[str | None, typer.Option("--saga", metavar="ID", help="Only this saga's events (key = order id).")] = None,
    event_type: Annotated[str | None, typer.Option("--type", metavar="EVENT_TYPE", help="Only events of this type.")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest retained event.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event and line (JSON Lines, for jq).")] = False,
    bootstrap: BootstrapOption = None,
) -> None:
    """Follow events live, one line each with key and headers; Ctrl-C stops."""
    wanted_type = event_type.strip().upper() if event_type else None
    saga_id = saga.strip() if saga is not None else None
    if saga is not None and not saga_id:
        raise CliError("--saga needs an order id")
    try:
        asyncio.run(_follow(list(topics or []), saga_id, wanted_type, from_beginning, as_json, bootstrap))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how tail ends


async def _follow(topics: list[str], saga_id: str | None, event_type: str | None, from_beginning: bool,
                  as_json: bool, bootstrap: str | None) -> None:
    offset_reset = "earliest" if from_beginning else "latest"
    async with kafka_consumer(auto_offset_reset=offset_reset, bootstrap=bootstrap) as consumer:
        partitions = _partitions_to_follow(await partitions_by_topic(consumer), topics, saga_id)
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        await _print_forever(consumer, _write_json_line if as_json else _line_printer(), saga_id, event_type)


def _partitions_to_follow(
    existing: dict[str, list[int]], topics: list[str], saga_id: str | None
) -> list[TopicPartition]:
    if topics:
        missing = [topic for topic in topics if topic not in existing]
        if missing:
            raise CliError(f"no such topic: {', '.join(missing)} (event topics here: {_known(existing)})")
    else:
        topics = [topic for topic in SAGA_TOPICS if existing.get(topic)]
        if not topics:
            raise CliError(f"none of {', '.join(SAGA_TOPICS)} exists yet (is the stack up? try `saga up`)")
    partitions = []
    for topic in topics:
        numbers = existing[topic]
        if saga_id is not None:  # one saga lives in one partition per topic
            numbers = [numbers[partition_for_key(saga_id.encode(), len(numbers))]]
        partitions.extend(TopicPartition(topic, number) for number in numbers)
    return partitions


async def _print_forever(
    consumer: AIOKafkaConsumer, write: Callable[[KafkaEvent], None], saga_id: str | None, event_type: str | None
) -> None:
    while True:
        batches = await fetch(consumer, sorted(consumer.assignment()), timeout_ms=POLL_MS)
        records = sorted((record for batch in batches.values() for record in batch), key=lambda r: r.timestamp)
        for record in records:
            event = decode_record(record)
            if is_wanted(event, saga_id, event_type):
                write(event)


def is_wanted(event: KafkaEvent, saga_id: str | None, event_type: str | None) -> bool:
    """Whether `event` passes the filters: its key is `saga_id` (None: any) and its type, upper-cased,
    is `event_type` (given upper-case; None: any)."""
    if saga_id is not None and event.key != saga_id:
        return False
    return event_type is None or (event.event_type or "").upper() == event_type


def format_line(event: KafkaEvent) -> Text:
    """time topic[partition]@offset EVENT_TYPE key=… header=… payload, on one line whatever
    the record holds: every header as it came (duplicates too; an empty name shows as ""),
    each part cut and escaped (TEXT_CHARS, PAYLOAD_CHARS, MAX_HEADERS_SHOWN)."""
    line = Text(f"{_clock(event.timestamp_ms)} {event.topic}[{event.partition}]@{event.offset} ", style="dim")
    event_type = one_line(event.event_type or "?", TEXT_CHARS)
    line.append(f"{event_type} ", style="yellow" if event.event_type in COMPENSATIONS else "bold")
    line.append(f"key={one_line(event.key or '', TEXT_CHARS) if event.key is not None else None}")
    shown = [(name, value) for name, value in event.all_headers if name != "eventType" and not name.startswith(DEBEZIUM_CONTEXT)]
    for name, value in shown[:MAX_HEADERS_SHOWN]:
        line.append(f" {one_line(name, TEXT_CHARS) or EMPTY_NAME}={one_line(value or '', TEXT_CHARS)}")
    if len(shown) > MAX_HEADERS_SHOWN:
        line.append(f" (+{len(shown) - MAX_HEADERS_SHOWN} headers)")
    line.append(f" {_payload(event.value)}", style="dim")
    return line


def json_line(event: KafkaEvent) -> str:
    """`event` as one line of JSON (module doc): no newline inside, whatever the record holds; a
    lone surrogate from a record's JSON is escaped rather than fail the write."""
    document = {
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "timestamp": event.at,
        "timestamp_ms": event.timestamp_ms,
        "key": event.key,
        "event_type": event.event_type,
        "event_id": event.event_id,
        "headers": event.headers,
        "value": event.value,
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(document, separators=(",", ":"), default=str)
    return text


def _line_printer() -> Callable[[KafkaEvent], None]:
    out = console()
    out.soft_wrap = True

    def print_line(event: KafkaEvent) -> None:
        """Print `event` as one `format_line` line."""
        out.print(format_line(event))

    return print_line


def _write_json_line(event: KafkaEvent) -> None:
    sys.stdout.write(json_line(event) + "\n")
    sys.stdout.flush()  # a pipe into jq sees each event as it arrives


def _payload(value: object) -> str:
    if isinstance(value, str):  # text that is not JSON (kafka.decode_record)
        return one_line(value, TEXT_CHARS)
    return one_line(json.dumps(value, separators=(",", ":")), PAYLOAD_CHARS)


def _clock(epoch_ms: int) -> str:
    """Local time of day with milliseconds; a timestamp no clock can show is given in ms."""
    try:
        return datetime.fromtimestamp(epoch_ms / 1000).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return f"@{epoch_ms}ms"


def _known(existing: dict[str, list[int]]) -> str:
    names = sorted(topic for topic in existing if not topic.startswith(("_", "connect-")))
    return ", ".join(names) or "none"
