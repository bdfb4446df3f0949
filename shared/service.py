"""One service process: a faust app (HTTP API, timers) with its Kafka consumer feeding the consumer runtime, its database pool, and its web views.

Each service's app.py builds a `ServiceRuntime` with its settings, handler table and
topics, then adds its own views with `runtime.app.page(...)`. Every service gets:

  GET  /health                      200 only when the database answers, Kafka is
                                    reachable and the consumer has partitions assigned
  GET  /metrics                     Prometheus text format
  POST /deadletters/{id}/replay     run a dead letter's message through the handlers again

and two timers: the retention purge of old outbox, inbox and heartbeat rows
(shared/retention.py, every SAGA_RETENTION_INTERVAL seconds), and the figures of its
database's replication slot for /metrics (shared/replication.py, every 5 s).

Each consumed message gets one JSON log line (shared/logs.py) with its saga, event and
trace ids, its outcome and duration. `on_committed`, if given, is called with every
transaction that handled an event, after it committed (never for a duplicate): the
place for effects that must not run unless the handling is durable, e.g. counters.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import faust
import structlog
from faust.app.base import BootStrategy
from faust.web import Request, Response, View
from pydantic import ValidationError

from shared import logs, metrics, replication, retention
from shared.consumer import EventConsumer, IncomingMessage
from shared.kafka_consumer import EventStream, UnreadableRecord
from shared.errors import EventDecodeError, TransientError
from shared.settings import ServiceSettings
from shared.uow import Envelope, Handler, Transaction, UnitOfWork, create_pool

log = logging.getLogger(__name__)
events_log = structlog.stdlib.get_logger(__name__)

SLOT_FIGURES_INTERVAL = 5.0
"""Seconds between two readings of this database's replication slot for /metrics."""


class _ReportingUnitOfWork(UnitOfWork):
    """A UnitOfWork that reports each transaction `handle` committed to `on_committed`."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, on_committed: Callable[[Transaction], None]) -> None:
        super().__init__(pool, consumer)
        self.on_committed = on_committed

    async def handle(self, envelope: Envelope, handlers: Mapping[type, Handler]) -> Transaction | None:
        tx = await super().handle(envelope, handlers)
        if tx is not None and not tx.duplicate:
            try:
                self.on_committed(tx)
            except Exception:  # the handling is committed: a failing observer must not undo its ack
                log.exception("on_committed failed for %s %s", envelope.event.event_type, envelope.event_id)
        return tx


class _Boot(BootStrategy):
    """faust's start-up graph without its Kafka consumer and producer (the services never
    produce; they consume with `EventStream`), plus `extra` services started with the app."""

    enable_kafka = False

    def __init__(self, app: faust.App, extra: Sequence[Any]) -> None:
        super().__init__(app)
        self.extra = list(extra)

    def server(self):
        return [*super().server(), *self.extra]


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        handlers: Mapping[type, Handler],
        topics: Sequence[str],
        on_committed: Callable[[Transaction], None] | None = None,
    ):
        self.settings = settings
        self.on_committed = on_committed
        self.name = settings.service_name
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._consumer: EventConsumer | None = None
        self.handlers = handlers
        self.app = faust.App(
            self.name,
            broker=f"kafka://{settings.kafka_bootstrap}",
            key_serializer="raw",
            value_serializer="raw",
            web_host=settings.http_host,
            web_bind=settings.http_host,
            web_port=settings.http_port,
            # faust's local state (we keep none that matters: the database is the state)
            datadir=str(Path(tempfile.gettempdir()) / "saga-faust" / f"{self.name}-{settings.http_port}"),
            autodiscover=False,
        )
        # faust serves the HTTP API and runs the timers; the consumer is our own aiokafka
        # consumer in the same event loop (shared/kafka_consumer.py), not faust's threaded one.
        self.stream = EventStream(
            topics=topics,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.name,
            handle=self._handle_record,
            concurrency=settings.consumer_concurrency,
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        )
        self.app.boot_strategy = _Boot(self.app, extra=[self.stream])
        self._add_common_views()
        self._add_maintenance_timers()
        Path(self.app.conf.datadir).mkdir(parents=True, exist_ok=True)

    # --- database ----------------------------------------------------------------------
    async def pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                s = self.settings
                self._pool = await create_pool(
                    s.database_url, min_size=s.db_pool_min_size, max_size=s.db_pool_max_size, command_timeout=30
                )
        return self._pool

    async def uow(self) -> UnitOfWork:
        if self.on_committed is not None:
            return _ReportingUnitOfWork(await self.pool(), self.settings.consumer_name, self.on_committed)
        return UnitOfWork(await self.pool(), self.settings.consumer_name)

    async def consumer(self) -> EventConsumer:
        return EventConsumer(await self.uow(), self.handlers)

    # --- the consumer: each record settled durably, then acked ------------------------------
    # Up to `consumer_concurrency` records are handled at once, one saga's strictly in
    # order; offsets leave each partition in order (shared/kafka_consumer.py).
    async def _handle_record(self, record) -> None:
        if self._consumer is None:
            self._consumer = await self._until_connected(self.consumer)
        started = time.perf_counter()
        if isinstance(record, UnreadableRecord):
            await self._consumer.dead_letter(IncomingMessage(record.topic, record.partition, record.offset, None, None),
                                             record.error, minimal=True)
            return
        try:
            message = IncomingMessage.from_record(record)
            with structlog.contextvars.bound_contextvars(**logs.message_context(message)):
                outcome = await self._consumer.handle(message)
                duration_ms = round((time.perf_counter() - started) * 1000, 3)
                level = logging.WARNING if outcome == "dead_lettered" else logging.INFO
                events_log.log(level, "message handled", outcome=outcome, duration_ms=duration_ms)
        except Exception:
            # handle() settles every message itself; reaching here is a bug. Stop the whole
            # worker: the message is not acked, and the restarted worker gets it again.
            log.critical("consumer failed outside its own error handling; exiting", exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def _until_connected(self, make):
        delay = 0.2
        while True:
            try:
                return await make()
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("database not reachable yet (%s); retrying", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- maintenance: bounded tables, replication slot figures -----------------------------
    def _add_maintenance_timers(self) -> None:
        runtime = self

        @self.app.timer(self.settings.retention_interval, name=f"{self.name}.retention")
        async def purge_old_rows() -> None:
            try:
                await retention.purge(await runtime.uow(), retention.RetentionPolicy.from_settings(runtime.settings))
            except Exception as error:  # the database is away: the next run carries on
                log.warning("retention purge skipped: %s", error)

        @self.app.timer(SLOT_FIGURES_INTERVAL, name=f"{self.name}.replication_slots")
        async def read_slot_figures() -> None:
            try:
                pool = await asyncio.wait_for(runtime.pool(), 5)
                async with pool.acquire(timeout=5) as connection:
                    slots = await replication.read_slots(connection, own_database_only=True)
            except Exception:
                replication.clear_slots()
                return
            replication.record_slots(slots)

    # --- common views ------------------------------------------------------------------
    def _add_common_views(self) -> None:
        runtime = self

        @self.app.page("/health")
        class Health(View):
            async def get(self, request: Request) -> Response:
                checks = {"database": await runtime._database_ok(), "kafka": runtime._kafka_ok()}
                assigned = sorted(f"{tp.topic}/{tp.partition}" for tp in runtime._assignment())
                checks["consumer"] = bool(assigned)
                healthy = all(checks.values())
                body = {"status": "ok" if healthy else "unavailable", **{k: "ok" if v else "down" for k, v in checks.items()}, "assigned": assigned}
                return json_response(self, body, status=200 if healthy else 503)

        @self.app.page("/metrics")
        class Metrics(View):
            async def get(self, request: Request) -> Response:
                text, content_type = metrics.render()
                return self.bytes(text, content_type=content_type.split(";")[0])

        @self.app.page("/deadletters/{dead_letter_id}/replay")
        class Replay(View):
            async def post(self, request: Request, dead_letter_id: str) -> Response:
                try:
                    ident = uuid.UUID(dead_letter_id)
                except ValueError:
                    return json_response(self, {"detail": f"not a dead letter id: {dead_letter_id}"}, status=422)
                consumer = await runtime.consumer()
                try:
                    outcome = await consumer.replay(ident)
                    events_log.info("dead letter replayed", dead_letter_id=dead_letter_id, outcome=outcome)
                except KeyError:
                    return json_response(self, {"detail": f"dead letter {dead_letter_id} not found"}, status=404)
                except (EventDecodeError, TransientError, Exception) as error:
                    return json_response(self, {"detail": f"replay failed: {error}"}, status=409)
                return json_response(self, {"id": dead_letter_id, "outcome": outcome})

    async def _database_ok(self) -> bool:
        try:
            pool = await asyncio.wait_for(self.pool(), 2)
            return await asyncio.wait_for(pool.fetchval("SELECT 1"), 2) == 1
        except Exception:
            return False

    def _assignment(self):
        return self.stream.assignment()

    def _kafka_ok(self) -> bool:
        return bool(self.stream.assignment()) and self.stream.running

    def main(self) -> None:
        """Run the worker in this process (what `python -m <service>` does)."""
        import sys

        logs.configure(self.name)
        sys.argv = [self.name, "worker", "--loglevel", "info", "--web-port", str(self.settings.http_port)]
        self.app.main()


# --- HTTP helpers shared by the services' views ---------------------------------------------
def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(json.dumps(body, default=_default).encode(), content_type="application/json", status=status)


async def read_json(request: Request) -> Any:
    """The request body as JSON; ValueError with a one-line reason when it is not."""
    raw = await request.read()
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError as error:
        raise ValueError(f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def validation_response(view: View, error: ValidationError | ValueError) -> Response:
    """422 with the validation errors, one entry per field."""
    if isinstance(error, ValidationError):
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors(include_url=False)]
    else:
        detail = [{"loc": ["body"], "msg": str(error), "type": "value_error"}]
    return json_response(view, {"detail": detail}, status=422)
