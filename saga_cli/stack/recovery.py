"""Bringing back a connector whose replication slot was lost, without a gap (docs/contract/invariants.md, I5).

    report = recover(StackSettings(), "orders-outbox", since_ms=None, say=print)

A slot is lost when it is dropped (a failover to a server that does not have it, an operator
freeing the WAL of a connector that stays away) or invalidated (`wal_status` "lost"). What its
database wrote after the connector's last published position is then out of reach of logical
decoding, and Debezium refuses to stream from its stored offset
(`offset.mismatch.strategy=trust_offset`, connect/outbox-connector.json) instead of skipping it: the
task is FAILED and `saga status` points here. The outbox still holds those rows for its
retention window (shared/retention.py), so `recover`:

  1. stops the connector (KIP-875: PUT /connectors/{name}/stop) and waits until its slot is free;
  2. makes sure the slot exists (created, as the superuser, when it is missing or lost) and moves
     the connector's stored offset to the slot's confirmed position (PATCH
     /connectors/{name}/offsets), the one position Debezium accepts without skipping anything
     the slot holds;
  3. resumes it and waits until it streams from the slot: every row committed from the slot's
     creation on is published from the WAL;
  4. publishes again the rows committed before that, which may never have reached Kafka: each is
     deleted and inserted again unchanged (every column, the same id), one transaction per batch,
     in the order they were written. The publication carries INSERTs only, so the DELETE never
     streams and the INSERT is published like the first time, under the same event id; each
     consumer's inbox makes a copy it already handled a no-op (I4);
  5. waits until every republished id is on its topic.

Which rows: every row the outbox still holds (the retention window), or those created at or
after `since_ms`. A row does not record when it committed (created_at is taken at insert, and a
transaction may commit after a row inserted later), and the stored offset that says how far the
connector got is what step 2 moves, so a second run could no longer find it: taking the whole
window is the choice that cannot leave a gap, and its cost is duplicates. Running it again adds
duplicates and nothing else. A row without a signature is left out and counted: no consumer acts
on it (see SIGNED). A row the retention purge deleted before it was published is beyond
repair; the report warns when the connector's last stored position is older than every row the
outbox and the heartbeat table still hold, i.e. when such rows may have existed.

It runs as the stack manager does: the superuser for the slot, the service's own role (the owner
of the outbox) for the rows, Kafka Connect's REST API for the connector.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from saga_cli.errors import CliError
from saga_cli.kafka import decode_record, fetch, iso_time
from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect, ConnectorSpec
from saga_cli.stack.errors import StackError
from saga_cli.stack.postgres import Postgres

__all__ = ["RecoveryReport", "recover", "find_spec", "format_lsn"]

BATCH_ROWS = 500
"""Outbox rows deleted and inserted again per transaction."""
SLOT_RELEASE_TIMEOUT_S = 30.0
STREAMING_TIMEOUT_S = 60.0
QUIET_TIMEOUT_S = 60.0
"""Waiting for the republished ids on their topics gives up after this long without a new one."""
EVENT_ROUTER = "io.debezium.transforms.outbox.EventRouter"

SLOT = """
SELECT database, plugin, active, wal_status, confirmed_flush_lsn - '0/0'::pg_lsn AS confirmed
FROM pg_replication_slots WHERE slot_name = $1
"""
OUTBOX_COLUMNS = """
SELECT attname FROM pg_attribute
WHERE attrelid = 'public.outbox'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
ORDER BY attnum
"""
ROWS_TO_REPUBLISH = """
SELECT id, {route} AS route, {signed} AS signed FROM public.outbox
WHERE $1::timestamptz IS NULL OR created_at >= $1
ORDER BY created_at, id
"""
SIGNED = "signature <> ''"
"""An outbox row its service signed (shared/auth.py). A row without a signature (written before events were
signed, or by a service without its key) is refused by every consumer as unauthenticated: republishing
it would only make dead letters, so it is left out and counted."""
OLDEST_RETAINED = """
SELECT least((SELECT min(created_at) FROM public.outbox), (SELECT min(beat_at) FROM public.debezium_heartbeat))
"""
REPUBLISH = """
WITH gone AS (DELETE FROM public.outbox WHERE id = ANY($1::uuid[]) RETURNING {columns})
INSERT INTO public.outbox ({columns}) SELECT {columns} FROM gone ORDER BY created_at, id
"""
"""The rows, unchanged, deleted and inserted again in one statement: only the INSERT streams."""


@dataclass
class RecoveryReport:
    """What `recover` did: the slot, the offset it moved, the rows it republished and how long it took."""

    connector: str
    slot: str
    slot_created: bool = False
    stored_lsn: str | None = None
    stored_at: str | None = None
    resumed_at_lsn: str = ""
    since: str | None = None
    republished: int = 0
    left_out_unsigned: int = 0
    seen_on_topics: int = 0
    topics: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warning: str | None = None

    def as_json(self) -> dict:
        """Every field, by name."""
        return dict(self.__dict__)


def recover(settings: StackSettings, connector: str, since_ms: int | None = None,
            say: Callable[[str], None] = print) -> RecoveryReport:
    """Bring `connector` (its name, database or slot) back to streaming and republish its outbox window
    (module doc); safe to run again: a second run only publishes duplicates."""
    return asyncio.run(_Recovery(settings, find_spec(Connect(settings), connector), since_ms, say).run())


def find_spec(connect: Connect, wanted: str) -> ConnectorSpec:
    """The connector named `wanted`, or reading the database or slot `wanted`; CliError listing the names otherwise."""
    specs = connect.specs()
    for spec in specs:
        if wanted in (spec.name, spec.database, spec.slot):
            return spec
    raise CliError(f"no connector {wanted!r}; one of: {', '.join(sorted(spec.name for spec in specs))}")


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (0/16B3748)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class _Recovery:
    def __init__(self, settings: StackSettings, spec: ConnectorSpec, since_ms: int | None,
                 say: Callable[[str], None]) -> None:
        self.settings = settings
        self.spec = spec
        self.since = None if since_ms is None else datetime.fromtimestamp(since_ms / 1000, tz=timezone.utc)
        self.say = lambda line: say(f"{spec.name:<17} {line}")
        self.connect = Connect(settings)
        self.superuser_dsn = _with_database(Postgres(settings).superuser_dsn, spec.database)
        self.report = RecoveryReport(spec.name, spec.slot, since=self.since.isoformat() if self.since else None)

    async def run(self) -> RecoveryReport:
        """Steps 1–5 of the module's docstring, in order: the report, with the seconds it all took."""
        began = time.monotonic()
        stored = await self._stop()
        confirmed = await self._ensure_slot()
        await self._move_offset(stored, confirmed)
        await self._resume()
        await self._republish()
        self.report.seconds = round(time.monotonic() - began, 2)
        return self.report

    # --- 1. stop ---------------------------------------------------------------------------
    async def _stop(self) -> list[dict]:
        """The connector STOPPED and its slot free; its stored offsets as they were."""
        t0 = time.monotonic()
        if not self.connect.connector_status(self.spec.name):  # not registered: register it, then stop it
            self.connect.put_config(self.spec)
        await asyncio.to_thread(self.connect.stop_connector, self.spec.name)
        await self._wait_slot(active=False, timeout=SLOT_RELEASE_TIMEOUT_S)
        stored = self.connect.stored_offsets(self.spec.name)
        lsn, at = _position(stored)
        if lsn is not None:
            self.report.stored_lsn, self.report.stored_at = format_lsn(lsn), at
        where = f"; its stored offset is {self.report.stored_lsn} ({at or 'time unknown'})" if lsn is not None else \
            "; it has no stored offset"
        self.say(f"stopped ({time.monotonic() - t0:.1f}s){where}")
        return stored

    # --- 2. the slot and the offset ------------------------------------------------------------
    async def _ensure_slot(self) -> int:
        """The slot's confirmed position (an integer LSN), after creating the slot if it was missing or lost."""
        connection = await asyncpg.connect(self.superuser_dsn, timeout=10)
        try:
            slot = await connection.fetchrow(SLOT, self.spec.slot)
            if slot is not None and slot["database"] != self.spec.database:
                raise CliError(f"replication slot {self.spec.slot} belongs to database {slot['database']}, "
                               f"not {self.spec.database}; drop it or rename the connector's slot.name")
            if slot is not None and slot["wal_status"] != "lost":
                return int(slot["confirmed"])
            if slot is not None:
                await connection.execute("SELECT pg_drop_replication_slot($1)", self.spec.slot)
            created = await connection.fetchval(
                "SELECT lsn - '0/0'::pg_lsn FROM pg_create_logical_replication_slot($1, $2)",
                self.spec.slot, self.spec.config.get("plugin.name", "pgoutput"))
        finally:
            await connection.close()
        self.report.slot_created = True
        self.say(f"slot {self.spec.slot} was {'lost' if slot is not None else 'missing'}: created at {format_lsn(int(created))}")
        return int(created)

    async def _move_offset(self, stored: list[dict], confirmed: int) -> None:
        """Every stored offset of the connector set to the slot's confirmed position (KIP-875 PATCH)."""
        self.report.resumed_at_lsn = format_lsn(confirmed)
        if not stored:  # nothing stored: Debezium starts from the slot by itself
            return
        offsets = [{"partition": entry["partition"],
                    "offset": {**entry["offset"], "lsn": confirmed, "lsn_proc": confirmed, "lsn_commit": confirmed}}
                   for entry in stored]
        self.connect.alter_offsets(self.spec.name, offsets)
        self.say(f"stored offset moved from {self.report.stored_lsn} to the slot's {format_lsn(confirmed)}")
        self.report.warning = await self._purged_before_published()
        if self.report.warning:
            self.say(f"warning: {self.report.warning}")

    async def _purged_before_published(self) -> str | None:
        """A warning when rows committed after the stored position may already have been purged unpublished."""
        if self.report.stored_at is None:
            return None
        connection = await asyncpg.connect(self.settings.service_dsn(self.spec.database), timeout=10)
        try:
            oldest = await connection.fetchval(OLDEST_RETAINED)
        finally:
            await connection.close()
        stored_at = datetime.fromisoformat(self.report.stored_at.replace("Z", "+00:00"))
        if oldest is None or oldest <= stored_at:
            return None
        return (f"the connector's last stored position ({self.report.stored_at}) is older than every row the outbox "
                f"still holds (oldest {oldest.isoformat()}): rows committed in between may have been purged by "
                f"retention before they were published, and cannot be republished")

    # --- 3. resume ----------------------------------------------------------------------------
    async def _resume(self) -> None:
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(self.connect.resume_connector, self.spec.name)
        except StackError as error:
            raise StackError(f"connector {self.spec.name} did not run again after its offset was moved: {error}") from None
        await self._wait_slot(active=True, timeout=STREAMING_TIMEOUT_S)
        self.say(f"RUNNING, streaming from slot {self.spec.slot} at {self.report.resumed_at_lsn} "
                 f"({time.monotonic() - t0:.1f}s)")

    async def _wait_slot(self, *, active: bool, timeout: float) -> None:
        """Until the slot is in use by a walsender (`active`), or free (a missing slot is free)."""
        connection = await asyncpg.connect(self.superuser_dsn, timeout=10)
        try:
            deadline = time.monotonic() + timeout
            while True:
                in_use = await connection.fetchval(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1", self.spec.slot) or False
                if in_use == active:
                    return
                if time.monotonic() > deadline:
                    state = "not streaming" if active else "still in use"
                    raise StackError(f"replication slot {self.spec.slot} is {state} after {timeout:.0f}s; "
                                     f"see {self.connect.log_file}")
                await asyncio.sleep(0.2)
        finally:
            await connection.close()

    # --- 4. and 5. republish, and see it arrive --------------------------------------------------
    async def _republish(self) -> None:
        t0 = time.monotonic()
        route_field, topic_of = _routing(self.spec)
        connection = await asyncpg.connect(self.settings.service_dsn(self.spec.database), timeout=10)
        try:
            names = [row["attname"] for row in await connection.fetch(OUTBOX_COLUMNS)]
            columns = ", ".join(_quote(name) for name in names)
            selected = await connection.fetch(ROWS_TO_REPUBLISH.format(
                route=_quote(route_field), signed=SIGNED if "signature" in names else "true"), self.since)
            rows = [row for row in selected if row["signed"]]
            self.report.left_out_unsigned = len(selected) - len(rows)
            by_topic: dict[str, set[str]] = {}
            for row in rows:
                by_topic.setdefault(topic_of(row["route"]), set()).add(str(row["id"]))
            self.report.topics = sorted(by_topic)
            async with _TopicWatch(self.settings.kafka_bootstrap, self.report.topics) as watch:
                republished = 0
                for batch in _batches([row["id"] for row in rows], BATCH_ROWS):
                    async with connection.transaction():
                        status = await connection.execute(REPUBLISH.format(columns=columns), batch)
                    republished += int(status.split()[-1])  # rows purged meanwhile are not inserted again
                self.report.republished = republished
                window = f"created since {self.report.since}" if self.since else "every row the outbox holds"
                self.say(f"republished {republished} outbox rows ({window}; {BATCH_ROWS} per transaction) "
                         f"({time.monotonic() - t0:.1f}s)")
                if self.report.left_out_unsigned:
                    self.say(f"left out {self.report.left_out_unsigned} rows without a signature (written before "
                             f"events were signed, or without the service's key): every consumer refuses them")
                wanted = set().union(*by_topic.values()) if by_topic else set()
                self.report.seen_on_topics = await watch.wait_for(wanted, QUIET_TIMEOUT_S)
        finally:
            await connection.close()
        if self.report.seen_on_topics < len(wanted):
            missing = len(wanted) - self.report.seen_on_topics
            raise StackError(f"{missing} of {len(wanted)} republished rows of {self.spec.name} did not reach "
                             f"{', '.join(self.report.topics)} within {QUIET_TIMEOUT_S:.0f}s of the last one that did; "
                             f"see {self.connect.log_file} and run the command again (it only adds duplicates)")
        if wanted:
            self.say(f"{self.report.seen_on_topics} of {len(wanted)} on {', '.join(self.report.topics)} "
                     f"({time.monotonic() - t0:.1f}s)")


class _TopicWatch:
    """Reads `topics` from their end offsets at entry, collecting the `id` header of every record."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.topics = list(topics)
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="saga-recover", group_id=None,
                                         enable_auto_commit=False, auto_offset_reset="earliest",
                                         request_timeout_ms=15000)
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> "_TopicWatch":
        if not self.topics:
            return self
        try:
            await self.consumer.start()
            cluster = await self.consumer._client.fetch_all_metadata()
            self.partitions = [TopicPartition(topic, number) for topic in self.topics
                               for number in sorted(cluster.partitions_for_topic(topic) or ())]
            self.consumer.assign(self.partitions)
            ends = await self.consumer.end_offsets(self.partitions)
        except (KafkaError, OSError) as error:
            await self.consumer.stop()
            raise StackError(f"Kafka at {self.bootstrap} could not be read: {error}") from None
        for partition, offset in ends.items():
            self.consumer.seek(partition, offset)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.topics:
            await self.consumer.stop()

    async def wait_for(self, wanted: set[str], quiet_timeout: float) -> int:
        """How many of `wanted` were read, reading until all were or none came for `quiet_timeout` seconds.
        A topic that did not exist at entry (Connect creates it with the first record) is read from its start."""
        seen: set[str] = set()
        last_progress = time.monotonic()
        while seen < wanted and time.monotonic() - last_progress < quiet_timeout:
            await self._assign_new_partitions()
            if not self.partitions:  # no topic exists yet
                await asyncio.sleep(0.5)
                continue
            batches = await fetch(self.consumer, self.partitions, timeout_ms=500)
            before = len(seen)
            for records in batches.values():
                for record in records:
                    event_id = decode_record(record).headers.get("id")
                    if event_id in wanted:
                        seen.add(event_id)
            if len(seen) > before:
                last_progress = time.monotonic()
        return len(seen)

    async def _assign_new_partitions(self) -> None:
        known = {partition.topic for partition in self.partitions}
        if known >= set(self.topics):
            return
        cluster = await self.consumer._client.fetch_all_metadata()
        new = [TopicPartition(topic, number) for topic in self.topics if topic not in known
               for number in sorted(cluster.partitions_for_topic(topic) or ())]
        if new:
            self.partitions += new
            self.consumer.assign(self.partitions)
            for partition in new:
                self.consumer.seek(partition, 0)


def _routing(spec: ConnectorSpec) -> tuple[str, Callable[[str], str]]:
    """The outbox column the connector's EventRouter routes by, and the topic a value of it goes to."""
    config = spec.config
    for name in (n.strip() for n in config.get("transforms", "").split(",")):
        if config.get(f"transforms.{name}.type") == EVENT_ROUTER:
            column = config.get(f"transforms.{name}.route.by.field", "aggregatetype")
            replacement = config.get(f"transforms.{name}.route.topic.replacement", "outbox.event.${routedByValue}")
            return column, lambda value: replacement.replace("${routedByValue}", value)
    raise CliError(f"connector {spec.name} has no {EVENT_ROUTER} transform: it does not publish an outbox")


def _position(stored: list[dict]) -> tuple[int | None, str | None]:
    """The stored offset's LSN and the time of the change it points at (Debezium's ts_usec), if any."""
    for entry in stored:
        offset = entry.get("offset") or {}
        lsn = offset.get("lsn")
        if isinstance(lsn, int):
            ts_usec = offset.get("ts_usec")
            return lsn, iso_time(ts_usec // 1000) if isinstance(ts_usec, int) else None
    return None, None


def _batches(ids: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [ids[start:start + size] for start in range(0, len(ids), size)]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))
