"""`saga dlq list|replay`: dead letters, read from events.deadletter (the ground truth), replayed by their service.

A service that cannot handle a message records it as a dead letter and publishes a
DEAD_LETTER event (through its outbox) to events.deadletter; its payload says which
consumer gave up on which record (topic, partition, offset), why, and when. `list`
reads every partition of that topic from the beginning up to the end offsets seen at
start, so it always terminates. `replay ID` asks the consumer that recorded the dead
letter to run the stored message through its handlers again
(POST /deadletters/{id}/replay); the inbox keeps a second replay a no-op. `replay --all`
asks each service (or one, --consumer) to replay every dead letter it has not replayed
yet (POST /deadletters/replay), in the order the records arrived.
"""
from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from datetime import datetime, timezone
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from aiokafka import TopicPartition
from rich.table import Table
from rich.text import Text

from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC, Service
from saga_cli.errors import CliError
from saga_cli.http_client import Conflict, NotFound, ServiceClient
from saga_cli.stack.config import StackSettings
from shared.auth import KeyRing, Unauthenticated
from saga_cli.kafka import READ_TIMEOUT_S, Consumer, KafkaEvent, kafka_consumer, partitions_by_topic, read_range
from saga_cli.output import console, one_line, print_json
from saga_cli.parsing import parse_since

DEADLETTER_TOPIC = "events.deadletter"
DEAD_LETTER_EVENT_TYPE = "DEAD_LETTER"
SERVICES: dict[str, Service] = {service.name: service for service in (ORDER_SVC, INVENTORY_SVC, PAYMENT_SVC)}
"""consumer name (as recorded in a dead letter) → the service that can replay it."""

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list them (from events.deadletter) and replay one.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@dataclass(frozen=True)
class DeadLetter:
    """One DEAD_LETTER event: which consumer gave up on which record, why and when."""

    id: str
    consumer: str
    topic: str
    partition: int | None
    offset: int | None
    key: str | None
    event_type: str | None
    event_id: str | None
    error: str
    at: str
    location: str
    """Where the DEAD_LETTER event itself sits: events.deadletter[partition]@offset."""

    def as_json(self) -> dict[str, Any]:
        """{"id", "topic", "partition", "offset", "error", "at", "consumer", "key", "event_type", "event_id",
        "dead_letter_event"} (`dead_letter_event` is `location`)."""
        return {
            "id": self.id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "error": self.error,
            "at": self.at,
            "consumer": self.consumer,
            "key": self.key,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "dead_letter_event": self.location,
        }


def dead_letter_from(event: KafkaEvent) -> DeadLetter | None:
    """The dead letter a record of events.deadletter announces; None for anything else.

    Reads every shape a service has published: headers as a list of {"name", "value"}
    (today) or as an object (older dead letters), and a payload that reached the topic as
    a JSON string rather than expanded. Never raises on what the record holds."""
    payload = event.value
    if isinstance(payload, str):
        payload = _json_or_none(payload)
    if event.event_type != DEAD_LETTER_EVENT_TYPE or not isinstance(payload, Mapping):
        return None
    ident = payload.get("dead_letter_id")
    if not isinstance(ident, str) or not ident:
        return None
    headers = _header_map(payload.get("headers"))
    return DeadLetter(
        id=ident,
        consumer=str(payload.get("consumer") or ""),
        topic=str(payload.get("topic") or ""),
        partition=_int_or_none(payload.get("partition")),
        offset=_int_or_none(payload.get("offset")),
        key=payload.get("key") if isinstance(payload.get("key"), str) else None,
        event_type=_text(payload.get("event_type")) or _original_event_type(headers, payload.get("value")),
        event_id=_text(payload.get("event_id")) or headers.get("id") or None,
        error=str(payload.get("error") or ""),
        at=str(payload.get("at") or event.at),
        location=f"{event.topic}[{event.partition}]@{event.offset}",
    )


async def read_topic(
    consumer: Consumer,
    topic: str,
    topic_partitions: Mapping[str, Sequence[int]],
    timeout_s: float = READ_TIMEOUT_S,
) -> list[KafkaEvent]:
    """Every record of every partition of `topic`, from the beginning up to the end offsets
    as they were when the read started (nothing if the topic does not exist yet)."""
    partitions = [TopicPartition(topic, number) for number in sorted(topic_partitions.get(topic, ()))]
    if not partitions:
        return []
    consumer.assign(partitions)
    end = await consumer.end_offsets(partitions)
    start = await consumer.beginning_offsets(partitions)
    return await read_range(consumer, start, end, timeout_s)


def dead_letters(events: Sequence[KafkaEvent], ring: KeyRing | None = None) -> list[DeadLetter]:
    """The dead letters in `events`, once each (the outbox may publish one twice), oldest first.
    With `ring`, only those signed by the service that recorded them: anyone can write to
    events.deadletter, and a record a service did not sign is no dead letter of it."""
    found: dict[str, DeadLetter] = {}
    for event in sorted(events, key=lambda e: (e.timestamp_ms, e.partition, e.offset)):
        letter = dead_letter_from(event)
        if letter is None or letter.id in found:
            continue
        if ring is not None and not signed_by(ring, letter.consumer, event):
            continue
        found[letter.id] = letter
    return sorted(found.values(), key=lambda letter: (letter.at, letter.id))


def signed_by(ring: KeyRing, consumer: str, event: KafkaEvent) -> bool:
    """Whether `event` (a DEAD_LETTER) carries `consumer`'s valid signature of what it holds."""
    if consumer not in SERVICES or not isinstance(event.value, Mapping):
        return False
    try:
        ring.authenticate(consumer, event.headers.get("signature"), event_id=event.headers.get("id") or "",
                          event_type=DEAD_LETTER_EVENT_TYPE, saga_id=event.headers.get("sagaId") or "",
                          causation_id=event.headers.get("causationId") or "", payload=event.value)
    except Unauthenticated:
        return False
    return True


def stack_key_ring() -> KeyRing | None:
    """The services' public keys from the stack's key folder, or None when there are none here
    (then dead letters are listed unverified)."""
    try:
        ring = KeyRing.load(StackSettings().keys_dir, None)
    except (OSError, ValueError):
        return None
    return ring if ring.public_keys else None


async def read_deadletter_topic() -> list[KafkaEvent]:
    """events.deadletter as it is now (the only place `dlq` talks to Kafka)."""
    async with kafka_consumer(auto_offset_reset="earliest") as consumer:
        return await read_topic(consumer, DEADLETTER_TOPIC, await partitions_by_topic(consumer))


def read_dead_letters(say_left_out: bool = False) -> list[DeadLetter]:
    """Every dead letter a service signed (all DEAD_LETTER records when no keys are at hand);
    `say_left_out`: one line on stderr counting the records left out."""
    events = asyncio.run(read_deadletter_topic())
    ring = stack_key_ring()
    letters = dead_letters(events, ring)
    if ring is not None and say_left_out:
        unsigned = len(dead_letters(events)) - len(letters)
        if unsigned:
            print(f"{unsigned} record{'s' if unsigned != 1 else ''} on {DEADLETTER_TOPIC} that no service signed "
                  "left out (anyone can write to the topic)", file=sys.stderr)
    return letters


# --- commands ------------------------------------------------------------------------------

@dlq_app.command("list")
def list_dead_letters(
    as_json: JsonFlag = False,
    consumer: Annotated[
        str | None, typer.Option("--consumer", metavar="SERVICE", help="Only the dead letters of this service.")
    ] = None,
) -> None:
    """Every dead letter on events.deadletter: its id, the record it stands for, the error and when."""
    if consumer is not None and consumer not in SERVICES:
        raise CliError(f"--consumer must be one of {', '.join(SERVICES)}, not {consumer!r}")
    letters = read_dead_letters(say_left_out=True)
    if consumer is not None:
        letters = [letter for letter in letters if letter.consumer == consumer]
    if as_json:
        print_json([letter.as_json() for letter in letters])
    else:
        _print_table(letters)


@dlq_app.command("replay")
def replay(
    dead_letter_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="A dead letter id (from `saga dlq list`).", show_default=False),
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every dead letter not yet replayed.")] = False,
    consumer: Annotated[
        str | None, typer.Option("--consumer", metavar="SERVICE", help="With --all: only this service's.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="With --all: only those that failed at or after this time "
                     "(ISO-8601, local time if no offset, or epoch ms)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a dead letter's message through the service that gave up on it; a second replay changes nothing.
    With --all, every dead letter not yet replayed, each service's in the order their records arrived."""
    if replay_all:
        if dead_letter_id is not None:
            raise CliError("give an ID or --all, not both")
        _replay_all(consumer, since, as_json)
        return
    if dead_letter_id is None:
        raise CliError("give a dead letter ID (see `saga dlq list`), or --all")
    if consumer is not None or since is not None:
        raise CliError("--consumer and --since go with --all")
    ident = _parse_id(dead_letter_id)
    letter = next((letter for letter in read_dead_letters() if letter.id == ident), None)
    if letter is None:
        raise CliError(f"no dead letter {ident} on {DEADLETTER_TOPIC}")
    outcome = replay_dead_letter(letter)
    if as_json:
        print_json({"id": letter.id, "consumer": letter.consumer, "outcome": outcome, **_where(letter)})
    else:
        print(f"dead letter {letter.id} ({letter.event_type or 'message'} from {_coordinates(letter)}) "
              f"replayed by {letter.consumer}: {_describe_outcome(outcome)}")


def _replay_all(consumer: str | None, since: str | None, as_json: bool) -> None:
    """POST /deadletters/replay to each service (or `consumer`); one line each, or one JSON list."""
    if consumer is not None and consumer not in SERVICES:
        raise CliError(f"--consumer must be one of {', '.join(SERVICES)}, not {consumer!r}")
    body: dict[str, Any] = {}
    if since is not None:
        body["since"] = datetime.fromtimestamp(parse_since(since) / 1000, tz=timezone.utc).isoformat()
    results = []
    for name, service in SERVICES.items():
        if consumer is not None and name != consumer:
            continue
        answer = ServiceClient(service).post("/deadletters/replay", body=body)
        replayed = answer.get("replayed", []) if isinstance(answer, dict) else []
        failed = answer.get("failed", []) if isinstance(answer, dict) else []
        results.append({"consumer": name, "replayed": replayed, "failed": failed})
    if as_json:
        print_json(results)
        return
    for result in results:
        outcomes = Counter(str(item.get("outcome")) for item in result["replayed"])
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())) or "none"
        print(f"{result['consumer']}: {len(result['replayed'])} replayed ({summary}), {len(result['failed'])} failed again")
        for item in result["failed"]:
            print(f"  {item.get('id')}: {one_line(str(item.get('error')), 160)}")


def replay_dead_letter(letter: DeadLetter) -> str:
    """POST the replay to the service that recorded `letter`; its outcome (handled, duplicate…)."""
    service = SERVICES.get(letter.consumer)
    if service is None:
        raise CliError(f"dead letter {letter.id} was recorded by {letter.consumer or 'an unnamed consumer'}, "
                       f"which is none of {', '.join(SERVICES)}")
    try:
        answer = ServiceClient(service).post(f"/deadletters/{letter.id}/replay")
    except NotFound:
        raise CliError(f"{service.name} has no dead letter {letter.id} (its database no longer holds it)") from None
    except Conflict as failed:
        reason = failed.detail.removeprefix("replay failed: ")
        raise CliError(f"replay of dead letter {letter.id} failed again: {reason}") from None
    if not isinstance(answer, dict) or not answer.get("outcome"):
        raise CliError(f"{service.name} replayed dead letter {letter.id} but did not say with what outcome")
    return str(answer["outcome"])


# --- helpers -------------------------------------------------------------------------------

def _parse_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise CliError(f"not a dead letter id: {raw!r} (ids are UUIDs, see `saga dlq list`)") from None


def _original_event_type(headers: Mapping[str, str], value: Any) -> str | None:
    if headers.get("eventType"):
        return headers["eventType"]
    decoded = _json_or_none(value) if isinstance(value, str) else None
    if isinstance(decoded, dict) and isinstance(decoded.get("event_type"), str):
        return decoded["event_type"]
    return None


def _header_map(headers: Any) -> dict[str, str]:
    """A dead letter's headers as {name: value} (the first of repeated names), from either shape."""
    if isinstance(headers, Mapping):
        return {str(name): str(value) for name, value in headers.items() if value is not None}
    found: dict[str, str] = {}
    for header in headers if isinstance(headers, list) else ():
        if isinstance(header, Mapping) and isinstance(header.get("name"), str):
            found.setdefault(header["name"], str(header.get("value") or ""))
    return found


def _json_or_none(text: str) -> Any:
    """`text` parsed as JSON, or None when it is not JSON (however it fails: deep nesting too)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _coordinates(letter: DeadLetter) -> str:
    return f"{letter.topic}[{letter.partition}]@{letter.offset}"


def _where(letter: DeadLetter) -> dict[str, Any]:
    return {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset}


def _describe_outcome(outcome: str) -> str:
    return {
        "handled": "handled",
        "duplicate": "already handled before (duplicate), nothing changed",
        "ignored": "not this service's event, nothing changed",
    }.get(outcome, outcome)


def _print_table(letters: list[DeadLetter]) -> None:
    """One row per dead letter, two columns so it fits 80 columns: the id (and when) beside
    who gave up on which record (and why)."""
    out = console()
    if not letters:
        out.print(f"no dead letters on {DEADLETTER_TOPIC}")
        return
    table = Table(show_edge=False, show_lines=True)
    table.add_column("dead letter · at", no_wrap=True)
    table.add_column("consumer · record · event type · error", overflow="fold")
    for letter in letters:
        ident = Text(letter.id, style="bold")
        ident.append(f"\n{letter.at[:23].replace('T', ' ')}", style="dim")
        record = Text(f"{letter.consumer or '?'}  {_coordinates(letter)}  ")
        record.append(letter.event_type or "?", style="yellow")
        record.append(f"\n{letter.error}", style="red")
        table.add_row(ident, record)
    out.print(table)
    out.print(Text(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}; "
                   "`saga dlq replay ID` runs one through its service again", style="dim"))
