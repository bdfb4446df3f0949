"""Dead letters: a bounded, safe copy of a record that could not be handled, and why.

A record arriving on a topic can hold anything anyone can produce: any bytes, NUL,
invalid UTF-8, a value up to the broker's limit, header names that are empty,
repeated or not valid JSON field names. This module is where such a record is made
safe to keep and to publish.

Invariants:
  * A dead letter can always be stored. The record's bytes — key, value, each
    header's name and value — go into `bytea` columns, never into `text` or `jsonb`,
    each cut at a size cap (`RawRecord`); the value's full size and SHA-256 are kept
    with it, so a cut is visible and the original can be recognised. What goes into
    `text`/`jsonb` columns is a `preview`: valid UTF-8, no NUL, bounded length.
  * A dead letter can always be published. The DEAD_LETTER event carries previews
    only, and its headers as a list of {"name", "value"} objects (never as field
    names; no `headers` field when the record had none: Debezium's JSON expansion drops
    an empty array), so its payload is small (well under `shared.uow.OUTBOX_PAYLOAD_LIMIT`)
    and Debezium's EventRouter can always expand it as JSON.
  * If even that cannot be written for a reason that is not transient, a minimal
    dead letter (consumer, topic, partition, offset, error) is written instead: no
    record's content can keep a consumer from moving on.
  * Replay runs the stored bytes, not the previews (`stored_message`).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg

from shared.auth import KeyRing
from shared.safe_text import preview
from shared.topics import DEADLETTER, Header
from shared.tracing import child_traceparent
from shared.uow import write_outbox

__all__ = [
    "DEAD_LETTER_EVENT_TYPE", "RawRecord", "header_preview", "insert", "insert_minimal",
    "load_for_replay", "mark_replayed", "pending", "StoredRecord",
]

DEAD_LETTER_EVENT_TYPE = "DEAD_LETTER"

VALUE_BYTES_KEPT = 8 * 1024 * 1024
"""Bytes of a record's value stored for replay: eight times Kafka's default `message.max.bytes`
(1 MiB), so a record any default-configured broker accepts is kept whole."""
KEY_BYTES_KEPT = 64 * 1024
HEADERS_KEPT = 256
"""Headers stored per record (Kafka sets no limit); more are counted in the error, not kept."""
HEADER_BYTES_KEPT = 64 * 1024
"""Bytes kept of each header's name and of its value."""

VALUE_PREVIEW_CHARS = 2000
KEY_PREVIEW_CHARS = 200
HEADER_NAME_PREVIEW_CHARS = 100
HEADER_VALUE_PREVIEW_CHARS = 200
HEADERS_PREVIEWED = 32
ERROR_CHARS = 1000
"""Previews' lengths in characters: a DEAD_LETTER payload stays under ~30 KiB of JSON whatever
the record held (each character is at most 12 bytes of escaped JSON)."""

def header_preview(headers: Sequence[tuple[str, bytes | None]]) -> list[dict[str, str]]:
    """The first HEADERS_PREVIEWED headers as [{"name", "value"}] previews, in record order
    (duplicates and empty names kept as they came; a null value shows as "")."""
    return [
        {"name": preview(name, HEADER_NAME_PREVIEW_CHARS) or "", "value": preview(value, HEADER_VALUE_PREVIEW_CHARS) or ""}
        for name, value in headers[:HEADERS_PREVIEWED]
    ]


@dataclass(frozen=True)
class RawRecord:
    """What is stored of a record: each part cut at its cap, and whether anything was cut."""

    key: bytes | None
    value: bytes | None
    header_names: list[bytes]
    header_values: list[bytes | None]
    value_size: int | None
    """The whole value's length in bytes (None for a null value)."""
    value_sha256: str | None
    """Hex SHA-256 of the whole value."""
    cut: bool

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> RawRecord:
        """The record as stored: the key cut at KEY_BYTES_KEPT (64 KiB), the value at VALUE_BYTES_KEPT
        (8 MiB), the first HEADERS_KEPT (256) headers with names and values cut at HEADER_BYTES_KEPT
        (64 KiB); `value_size` and `value_sha256` of the whole value; `cut` when anything was cut."""
        cut = len(headers) > HEADERS_KEPT
        names, values = [], []
        for name, header_value in headers[:HEADERS_KEPT]:
            encoded = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
            names.append(encoded[:HEADER_BYTES_KEPT])
            values.append(None if header_value is None else bytes(header_value[:HEADER_BYTES_KEPT]))
            cut = cut or len(encoded) > HEADER_BYTES_KEPT or (header_value is not None and len(header_value) > HEADER_BYTES_KEPT)
        if key is not None and len(key) > KEY_BYTES_KEPT:
            key, cut = key[:KEY_BYTES_KEPT], True
        value_size = value_sha256 = None
        if value is not None:
            value_size, value_sha256 = len(value), hashlib.sha256(value).hexdigest()
            if len(value) > VALUE_BYTES_KEPT:
                value, cut = value[:VALUE_BYTES_KEPT], True
        return cls(key, value, names, values, value_size, value_sha256, cut)


_INSERT = """
INSERT INTO dead_letters (id, consumer, topic, kafka_partition, kafka_offset, message_key, headers, raw_value, error,
                          key_bytes, value_bytes, header_names, header_values, value_size, value_sha256, cut, minimal)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (consumer, topic, kafka_partition, kafka_offset) DO NOTHING
RETURNING failed_at
"""
_SELECT = """
SELECT id, consumer, topic, kafka_partition, kafka_offset, message_key, headers, raw_value, error, failed_at,
       replayed_at, key_bytes, value_bytes, header_names, header_values, cut, minimal
FROM dead_letters WHERE id = $1
"""
_MARK_REPLAYED = """UPDATE dead_letters SET replayed_at = clock_timestamp() WHERE id = $1"""


async def insert(
    connection: asyncpg.Connection,
    *,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    error: str,
    keys: KeyRing | None = None,
) -> uuid.UUID | None:
    """Record one record as a dead letter of `consumer` and write its DEAD_LETTER outbox row
    (signed with `keys`, so readers can tell it from one anybody wrote), in the caller's transaction. Returns the dead letter's id, or None when this consumer
    dead-lettered this very record (topic, partition, offset) before: nothing is written then.
    Raises what the driver raises; nothing of the record's content can make it fail."""
    raw = RawRecord.of(key, value, headers)
    key_text = preview(key, KEY_PREVIEW_CHARS)
    value_text = preview(value, VALUE_PREVIEW_CHARS)
    header_list = header_preview(headers)
    error_text = preview(error, ERROR_CHARS) or ""
    dead_letter_id = uuid.uuid4()
    failed_at = await connection.fetchval(
        _INSERT, dead_letter_id, consumer, topic, partition, offset, key_text,
        json.dumps(header_list), value_text, error_text, raw.key, raw.value, raw.header_names,
        raw.header_values, raw.value_size, raw.value_sha256, raw.cut, False,
    )
    if failed_at is None:
        return None
    found = _first_values(headers, (Header.ID, Header.EVENT_TYPE, Header.TRACEPARENT))
    await _publish(
        connection, dead_letter_id, failed_at, consumer=consumer, topic=topic, partition=partition, offset=offset,
        error=error_text,
        extra={
            "key": key_text,
            **({"headers": header_list} if header_list else {}),  # an empty array does not survive Connect
            "value": value_text,
            "value_size": raw.value_size,
            "value_sha256": raw.value_sha256,
            "stored_whole": not raw.cut,
            "preview_exact": _shown_whole(key, key_text) and _shown_whole(value, value_text)
            and len(headers) <= HEADERS_PREVIEWED
            and all(_shown_whole(v, h["value"] if v is not None else None) and _shown_whole(n.encode("utf-8", "surrogateescape"), h["name"])
                    for (n, v), h in zip(headers, header_list)),
            "minimal": False,
            "event_type": preview(found.get(Header.EVENT_TYPE), HEADER_VALUE_PREVIEW_CHARS),
            "event_id": preview(found.get(Header.ID), HEADER_VALUE_PREVIEW_CHARS),
        },
        saga_id=key_text or "",
        causation_id=preview(found.get(Header.ID), HEADER_VALUE_PREVIEW_CHARS) or "",
        traceparent=child_traceparent(preview(found.get(Header.TRACEPARENT), HEADER_VALUE_PREVIEW_CHARS)),
        keys=keys,
    )
    return dead_letter_id


async def insert_minimal(
    connection: asyncpg.Connection, *, consumer: str, topic: str, partition: int, offset: int, error: str,
    keys: KeyRing | None = None,
) -> uuid.UUID | None:
    """The last resort when `insert` failed for a reason that is not transient: only where the
    record was and why it failed (no key, value or headers), published like any dead letter.
    Returns its id, or None when this record was dead-lettered by `consumer` before."""
    dead_letter_id = uuid.uuid4()
    error_text = preview(error, ERROR_CHARS) or ""
    failed_at = await connection.fetchval(
        _INSERT, dead_letter_id, consumer, topic, partition, offset, None, "[]", None, error_text,
        None, None, [], [], None, None, True, True,
    )
    if failed_at is None:
        return None
    await _publish(
        connection, dead_letter_id, failed_at, consumer=consumer, topic=topic, partition=partition, offset=offset,
        error=error_text,
        extra={"key": None, "value": None, "stored_whole": False, "preview_exact": False, "minimal": True},
        saga_id="", causation_id="", traceparent=child_traceparent(None), keys=keys,
    )
    return dead_letter_id


async def _publish(
    connection: asyncpg.Connection, dead_letter_id: uuid.UUID, failed_at: datetime, *, consumer: str, topic: str,
    partition: int, offset: int, error: str, extra: Mapping[str, Any], saga_id: str, causation_id: str,
    traceparent: str, keys: KeyRing | None,
) -> None:
    await write_outbox(
        connection,
        aggregate_type=DEADLETTER,
        event_type=DEAD_LETTER_EVENT_TYPE,
        payload={
            "dead_letter_id": str(dead_letter_id),
            "consumer": consumer,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "error": error,
            "at": failed_at.astimezone(timezone.utc).isoformat(),
            **extra,
        },
        saga_id=saga_id,
        causation_id=causation_id,
        traceparent=traceparent,
        keys=keys,
    )


@dataclass(frozen=True)
class StoredRecord:
    """A dead letter's record as stored, for replay."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    cut: bool
    minimal: bool


async def load_for_replay(connection: asyncpg.Connection, dead_letter_id: uuid.UUID) -> StoredRecord | None:
    """The stored record of a dead letter, or None if there is no such dead letter. Dead letters
    written before the bytes were stored are rebuilt from their text columns."""
    row = await connection.fetchrow(_SELECT, dead_letter_id)
    if row is None:
        return None
    if row["header_names"] is not None:
        names = [bytes(name).decode("utf-8", "replace") for name in row["header_names"]]
        headers = list(zip(names, [None if v is None else bytes(v) for v in row["header_values"]]))
        key = None if row["key_bytes"] is None else bytes(row["key_bytes"])
        value = None if row["value_bytes"] is None else bytes(row["value_bytes"])
        return StoredRecord(row["topic"], row["kafka_partition"], row["kafka_offset"], key, value, headers,
                            bool(row["cut"]), bool(row["minimal"]))
    old_headers = json.loads(row["headers"])
    pairs = old_headers.items() if isinstance(old_headers, dict) else ((h["name"], h["value"]) for h in old_headers)
    return StoredRecord(
        row["topic"], row["kafka_partition"], row["kafka_offset"],
        None if row["message_key"] is None else row["message_key"].encode(),
        None if row["raw_value"] is None else row["raw_value"].encode(),
        [(str(name), None if v is None else str(v).encode()) for name, v in pairs], False, False,
    )


_PENDING = """
SELECT id FROM dead_letters
WHERE replayed_at IS NULL AND NOT minimal AND ($1::timestamptz IS NULL OR failed_at >= $1)
ORDER BY topic, kafka_partition, kafka_offset
"""


async def pending(connection: asyncpg.Connection, since: datetime | None = None) -> list[uuid.UUID]:
    """Ids of the dead letters not yet replayed (minimal ones have nothing to replay), failed at
    or after `since`, in the order their records arrived (topic, partition, offset)."""
    return [row["id"] for row in await connection.fetch(_PENDING, since)]


async def mark_replayed(connection: asyncpg.Connection, dead_letter_id: uuid.UUID) -> None:
    """Set the dead letter's `replayed_at`: `pending` no longer lists it."""
    await connection.execute(_MARK_REPLAYED, dead_letter_id)


def _first_values(headers: Sequence[tuple[str, bytes | None]], names: Sequence[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name, value in headers:
        if name in names and name not in found and value is not None:
            found[name] = value
    return found


def _shown_whole(raw: bytes | None, shown: str | None) -> bool:
    """Whether the preview `shown` is exactly `raw`: nothing cut, replaced or lost."""
    if raw is None or shown is None:
        return raw is None and shown is None
    try:
        return raw.decode("utf-8") == shown
    except UnicodeDecodeError:
        return False
