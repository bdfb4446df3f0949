"""One service process: a faust app (HTTP API, timers) with its Kafka consumer feeding the consumer runtime, its database pool, and its web views.

Each service's app.py builds a `ServiceRuntime` with its settings, handler table and
topics, then adds its own views with `runtime.app.page(...)`. Every service gets:

  GET  /livez                       200 while the process works (its consumer's fetch loop runs)
  GET  /readyz, /health             200 only when the database answers, Kafka has given the
                                    consumer partitions, the handler breaker is closed and,
                                    with lag, a record settled within consumer_stall_seconds
  GET  /metrics                     Prometheus text format
  POST /deadletters/{id}/replay     run a dead letter's message through the handlers again
  POST /deadletters/replay          every dead letter not yet replayed (body {"since": ISO time}
                                    optional), in the order the records arrived

Every view answers 503 with `Retry-After` and a one-line JSON detail while what it needs is
unavailable (`answer_unavailable`; views take their unit of work from `request_uow`, which waits
at most DATABASE_WAIT_S for the database), never a 500.

And two timers: the retention purge of old outbox, inbox and heartbeat rows
(shared/retention.py, every SAGA_RETENTION_INTERVAL seconds), and the figures of its
database's replication slot for /metrics (shared/replication.py, every 5 s).

Each consumed message gets one JSON log line (shared/logs.py) with its saga, event and
trace ids, its outcome and duration. With tracing on (shared/telemetry.py, `configure` in
`main`), each HTTP request but the probes and each message handled is a span. `on_committed`, if given, is called with every
transaction that handled an event, after it committed (never for a duplicate): the
place for effects that must not run unless the handling is durable, e.g. counters.
"""
from __future__ import annotations

import asyncio
import functools
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
from aiohttp import web
from faust.app.base import BootStrategy
from faust.web import Request, Response, View
from pydantic import TypeAdapter, ValidationError

from shared import logs, metrics, replication, retention, retrying, telemetry
from shared.auth import KeyRing
from shared.consumer import EventProcessor, IncomingMessage, Outcome, ignored_event_type
from shared.group_commit import GroupCommit
from shared.kafka_consumer import KafkaGroupConsumer, UnreadableRecord
from shared.errors import EventDecodeError, TransientError
from shared.settings import ServiceSettings
from shared.uow import Envelope, Handler, Transaction, UnitOfWork, create_pool

log = logging.getLogger(__name__)
events_log = structlog.stdlib.get_logger(__name__)

SLOT_FIGURES_INTERVAL = 5.0
"""Seconds between two readings of this database's replication slot for /metrics."""

DATABASE_WAIT_S = 3.0
"""The most seconds an HTTP request waits for the database: for the pool to be made, and for a
connection from it (connecting a new one included). Past that, or at once when PostgreSQL refuses
the connection, the request is answered 503: a client learns of an outage in seconds, and
requests do not pile up behind it."""

RETRY_AFTER_S = 5
"""The Retry-After (seconds) of a 503 while a dependency is unavailable: about what PostgreSQL
takes to come back from a restart."""


class _ReportingUnitOfWork(UnitOfWork):
    """A UnitOfWork that reports each transaction `handle` committed to `on_committed`."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, on_committed: Callable[[Transaction], None],
                 keys: KeyRing | None = None) -> None:
        super().__init__(pool, consumer, keys)
        self.on_committed = on_committed

    async def handle(self, envelope: Envelope, handlers: Mapping[type, Handler]) -> Transaction | None:
        """As UnitOfWork.handle, then report the transaction to `on_committed` (not a duplicate)."""
        tx = await super().handle(envelope, handlers)
        self._report(envelope, tx)
        return tx

    async def handle_batch(self, batch: Sequence[tuple[Envelope, Mapping[type, Handler]]]) -> list[Transaction | None]:
        """As UnitOfWork.handle_batch, then report each committed, not duplicate, transaction to `on_committed`."""
        results = await super().handle_batch(batch)
        for (envelope, _), tx in zip(batch, results):
            self._report(envelope, tx)
        return results

    def _report(self, envelope: Envelope, tx: Transaction | None) -> None:
        if tx is not None and not tx.duplicate:
            try:
                self.on_committed(tx)
            except Exception:  # the handling is committed: a failing observer must not undo its ack
                log.exception("on_committed failed for %s %s", envelope.event.event_type, envelope.event_id)


class _Boot(BootStrategy):
    """faust's start-up graph without its Kafka consumer and producer (the services never
    produce; they consume with `KafkaGroupConsumer`), plus `extra` services started with the app."""

    enable_kafka = False

    def __init__(self, app: faust.App, extra: Sequence[Any]) -> None:
        super().__init__(app)
        self.extra = list(extra)

    def server(self):
        """faust's server services plus the `extra` ones."""
        return [*super().server(), *self.extra]


class ServiceRuntime:
    """One service process (the module's docstring): `app` (faust: HTTP views, timers) and `stream`
    (its Kafka consumer) over one database pool; `.main()` runs it."""

    def __init__(
        self,
        settings: ServiceSettings,
        handlers: Mapping[type, Handler],
        topics: Sequence[str],
        on_committed: Callable[[Transaction], None] | None = None,
        foreign_handlers: Mapping[type, Handler] | None = None,
    ):
        self.settings = settings
        self.foreign_handlers = dict(foreign_handlers or {})
        self.on_committed = on_committed
        self.name = settings.service_name
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._consumer: EventProcessor | None = None
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
        self.stream = KafkaGroupConsumer(
            topics=topics,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.name,
            handle=self._handle_record,
            concurrency=settings.consumer_concurrency,
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
            skips=self._skips,
        )
        self.app.boot_strategy = _Boot(self.app, extra=[self.stream])
        self.app.web.web_app.middlewares.append(telemetry.trace_requests)
        self.app.web.web_app.middlewares.append(answer_unavailable)
        self._add_common_views()
        self._add_maintenance_timers()
        Path(self.app.conf.datadir).mkdir(parents=True, exist_ok=True)

    # --- database ----------------------------------------------------------------------
    async def pool(self) -> asyncpg.Pool:
        """The service's asyncpg pool, created on first use (30 s command timeout); a failure to connect passes."""
        async with self._pool_lock:
            if self._pool is None:
                s = self.settings
                self._pool = await create_pool(
                    s.database_url.get_secret_value(), min_size=s.db_pool_min_size, max_size=s.db_pool_max_size,
                    command_timeout=30,
                )
        return self._pool

    @functools.cached_property
    def keys(self) -> KeyRing:
        """This service's signing key and every service's public keys, read once from
        `keys_dir`; without one, no key at all (it signs nothing and accepts no event)."""
        if self.settings.keys_dir is None:
            log.error("SAGA_KEYS_DIR is not set: this service signs nothing and accepts no event")
            return KeyRing(None, {})
        return KeyRing.load(self.settings.keys_dir, self.name)

    async def uow(self) -> UnitOfWork:
        """A unit of work over the pool, reporting to `on_committed` when given."""
        if self.on_committed is not None:
            return _ReportingUnitOfWork(await self.pool(), self.settings.consumer_name, self.on_committed, self.keys)
        return UnitOfWork(await self.pool(), self.settings.consumer_name, self.keys)

    async def request_uow(self) -> UnitOfWork:
        """The unit of work of an HTTP request: the pool must be there within DATABASE_WAIT_S, and
        each connection is acquired within it too. Any of that failing (refused, lost, timed out,
        the server starting up or shutting down) raises TransientError, answered 503 by
        `answer_unavailable`."""
        try:
            pool = await asyncio.wait_for(self.pool(), DATABASE_WAIT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise TransientError(_one_line(f"{type(error).__name__}: {error}")) from error
        return UnitOfWork(pool, self.settings.consumer_name, self.keys, acquire_timeout=DATABASE_WAIT_S)

    async def consumer(self) -> EventProcessor:
        """A new EventProcessor over `uow()`, with group commit when consumer_batch_max > 1."""
        uow = await self.uow()
        batch = self.settings.consumer_batch_max
        return EventProcessor(uow, self.handlers, keys=self.keys, foreign_handlers=self.foreign_handlers,
                             group_commit=GroupCommit(uow, max_batch=batch) if batch > 1 else None)

    # --- the consumer: each record settled durably, then acked ------------------------------
    # Up to `consumer_concurrency` records are handled at once, one saga's strictly in
    # order; offsets leave each partition in order (shared/kafka_consumer.py).
    def _skips(self, record) -> bool:
        """Whether a fetched record is another service's event, counted ignored and acked without
        handling (`ignored_event_type`); never while DEBUG lines are written for each of them."""
        if self._consumer is None or events_log.isEnabledFor(logging.DEBUG):
            return False
        event_type = ignored_event_type(record.headers, self._consumer.ignorable)
        if event_type is None:
            return False
        self._consumer.count_ignored(event_type)
        return True

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
            if self._consumer.ignores(message):
                # Another service's event on a topic this one reads (about half of what a service
                # fetches): counted, no span, and its log line only at DEBUG.
                outcome = await self._consumer.handle(message)
                if events_log.isEnabledFor(logging.DEBUG):
                    events_log.debug("message handled", outcome=outcome, **logs.message_context(message))
                return
            with structlog.contextvars.bound_contextvars(**logs.message_context(message)), \
                    telemetry.consuming(message, self.name, traced=not self._consumer.ignores(message)) as span:
                outcome = await self._consumer.handle(message)
                span.set_attribute("saga.outcome", outcome)
                duration_ms = round((time.perf_counter() - started) * 1000, 3)
                level = logging.WARNING if outcome == Outcome.DEAD_LETTERED else logging.INFO
                events_log.log(level, "message handled", outcome=outcome, duration_ms=duration_ms)
        except Exception:
            # handle() settles every message itself; reaching here is a bug. Stop the whole
            # worker: the message is not acked, and the restarted worker gets it again.
            log.critical("consumer failed outside its own error handling; exiting", exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def _until_connected(self, make):
        """`await make()`, tried again (0.2 s, doubling to 5 s) for as long as the database does
        not answer (OSError, a PostgreSQL error); anything else passes."""
        def not_yet(state: retrying.RetryCallState) -> None:
            """Log that the database does not answer yet, before the next attempt."""
            log.warning("database not reachable yet (%s); retrying", state.outcome.exception())

        async for attempt in retrying.forever(retry_on=(OSError, asyncpg.PostgresError),
                                              wait=retrying.doubling(0.2, 5.0), on_retry=not_yet):
            with attempt:
                return await make()

    # --- maintenance: bounded tables, replication slot figures -----------------------------
    def _add_maintenance_timers(self) -> None:
        runtime = self

        @self.app.timer(self.settings.retention_interval, name=f"{self.name}.retention")
        async def purge_old_rows() -> None:
            """Every SAGA_RETENTION_INTERVAL seconds: delete outbox, inbox and heartbeat rows past their
            retention (shared/retention.py); logs and skips a run when the database is away."""
            try:
                await retention.purge(await runtime.uow(), retention.RetentionPolicy.from_settings(runtime.settings))
            except Exception as error:  # the database is away: the next run carries on
                log.warning("retention purge skipped: %s", error)

        @self.app.timer(SLOT_FIGURES_INTERVAL, name=f"{self.name}.replication_slots")
        async def read_slot_figures() -> None:
            """Every SLOT_FIGURES_INTERVAL (5 s): this database's replication slot figures for /metrics;
            cleared when the database does not answer within 5 s."""
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

        class Ready(View):
            """GET /readyz (and /health): whether the service is ready."""

            async def get(self, request: Request) -> Response:
                """GET /readyz, /health: 200 ready, else 503; the body names each check (docs/contract/interfaces.md,
                HTTP, every service)."""
                ready, body = await runtime.readiness()
                return json_response(self, body, status=200 if ready else 503)

        self.app.page("/readyz")(Ready)
        self.app.page("/health")(type("Health", (Ready,), {}))

        @self.app.page("/livez")
        class Live(View):
            """GET /livez: whether the process works."""

            async def get(self, request: Request) -> Response:
                """GET /livez: 200 {"status": "ok"} while the consumer's fetch loop runs, else 503
                {"status": "down"}."""
                alive = runtime.stream.fetch_loop_alive
                return json_response(self, {"status": "ok" if alive else "down"}, status=200 if alive else 503)

        @self.app.page("/metrics")
        class Metrics(View):
            """GET /metrics: the process's metrics."""

            async def get(self, request: Request) -> Response:
                """GET /metrics: 200 Prometheus text format, OpenMetrics when `Accept` asks for it."""
                text, content_type = metrics.render(request.headers.get("Accept"))  # OpenMetrics if asked
                return self.bytes(text, headers={"Content-Type": content_type, "Vary": "Accept"})

        @self.app.page("/deadletters/{dead_letter_id}/replay")
        class Replay(View):
            """POST /deadletters/{id}/replay: one dead letter through the handlers again."""

            async def post(self, request: Request, dead_letter_id: str) -> Response:
                """POST /deadletters/{id}/replay: 200 {"id", "outcome"}; 404 unknown id; 409 it failed again;
                422 not a dead letter id; 503 database away."""
                try:
                    ident = uuid.UUID(dead_letter_id)
                except ValueError:
                    return json_response(self, {"detail": f"not a dead letter id: {dead_letter_id}"}, status=422)
                await runtime.request_uow()  # the pool, within DATABASE_WAIT_S: else a 503
                consumer = await runtime.consumer()
                try:
                    outcome = await consumer.replay(ident)
                    events_log.info("dead letter replayed", dead_letter_id=dead_letter_id, outcome=outcome)
                except KeyError:
                    return json_response(self, {"detail": f"dead letter {dead_letter_id} not found"}, status=404)
                except TransientError:
                    raise  # the database is away: a 503 (answer_unavailable), the dead letter stays
                except (EventDecodeError, Exception) as error:
                    return json_response(self, {"detail": f"replay failed: {error}"}, status=409)
                return json_response(self, {"id": dead_letter_id, "outcome": outcome})

        @self.app.page("/deadletters/replay")
        class ReplayAll(View):
            """POST /deadletters/replay: every dead letter not yet replayed."""

            async def post(self, request: Request) -> Response:
                """POST /deadletters/replay {"since"}: 200 {"replayed": [{"id", "outcome"}], "failed":
                [{"id", "error"}]}; 422 bad body or `since`; 503 database away."""
                try:
                    body = await read_json(request) if request.content_length or request.body_exists else {}
                    since = _since(body.get("since"))
                except ValueError as error:
                    return validation_response(self, error)
                await runtime.request_uow()  # the pool, within DATABASE_WAIT_S: else a 503
                consumer = await runtime.consumer()
                result = await consumer.replay_all(since)
                events_log.info("dead letters replayed", since=str(since), **{k: len(v) if isinstance(v, list) else v
                                                                              for k, v in result.items()})
                return json_response(self, result)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this service can do its job, and why not: its database answers, Kafka has
        given its consumer partitions, its handler breaker is closed, and it settled a record
        within `consumer_stall_seconds` while it had lag. Also sets the readiness gauges."""
        lag = self.stream.lag()
        waited = self.stream.seconds_without_progress()
        breaker = self._consumer.breaker if self._consumer is not None else None
        assigned = sorted(f"{tp.topic}/{tp.partition}" for tp in self._assignment())
        checks = {
            "database": await self._database_ok(),
            "kafka": self._kafka_ok(),
            "consumer": bool(assigned),
            "breaker": breaker is None or not breaker.open,
            "progress": waited < self.settings.consumer_stall_seconds,
        }
        ready = all(checks.values())
        metrics.READY.labels(self.name).set(int(ready))
        metrics.CONSUMER_LAG.labels(self.name).set(lag)
        metrics.SECONDS_WITHOUT_PROGRESS.labels(self.name).set(waited)
        body: dict[str, Any] = {"status": "ok" if ready else "unavailable",
                                **{k: "ok" if v else "down" for k, v in checks.items()},
                                "assigned": assigned, "lag": lag, "seconds_without_progress": round(waited, 1)}
        if breaker is not None and breaker.open:
            body["breaker_error"] = breaker.last_error[:300]
        return ready, body

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
        self.app.conf.logging_config = logs.logging_config(self.name)  # faust's worker sets logging up again
        telemetry.configure(self.name)  # spans only when OTEL_* configures an exporter
        try:
            self.keys  # read now: a service that cannot sign or verify says so and does not start
        except (OSError, ValueError) as error:
            log.critical("cannot read the keys in %s: %s", self.settings.keys_dir, error)
            raise SystemExit(78) from None
        # --quiet: no banner on stdout, every line of the log is JSON
        sys.argv = [self.name, "--quiet", "worker", "--loglevel", "info", "--web-port", str(self.settings.http_port)]
        self.app.main()


def _since(value: Any) -> datetime | None:
    """A replay's lower bound: null, or an ISO-8601 time with its offset. ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("since must be an ISO-8601 time with an offset, e.g. 2026-11-29T18:00:00+00:00")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"since is not an ISO-8601 time: {value[:64]!r}") from None
    if moment.tzinfo is None:
        raise ValueError("since needs its offset (e.g. +00:00)")
    return moment


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
    """`body` as a JSON answer with `status` (Decimal as a two-place string, datetimes in
    ISO-8601, UUIDs as text, pydantic models dumped); one line, every non-ASCII character escaped."""
    return view.bytes(json.dumps(body, default=_default).encode(), content_type="application/json", status=status)


# --- a dependency down: 503 with Retry-After, never a 500 ---------------------------------------
#
# The views need the database and nothing else. The unit of work raises TransientError for
# whatever keeps it from the database (refused, lost or timed-out connections, a server starting up
# or shutting down, too many clients) and for conflicts worth retrying (serialization failure,
# deadlock, lock timeout); `request_uow` does the same for making the pool. One middleware turns
# every such error of every view into the same answer.

_BUSY = (asyncpg.exceptions.TransactionRollbackError, asyncpg.exceptions.LockNotAvailableError)
_quiet_until = 0.0


@web.middleware
async def answer_unavailable(request: web.Request, handler: Callable) -> web.StreamResponse:
    """The aiohttp middleware of every service's web app: a TransientError escaping a view is
    answered 503 with `Retry-After: RETRY_AFTER_S` and ``{"detail": "database unavailable: …"}``
    (``database busy: …`` for a conflict worth retrying) on one line. Anything else passes."""
    try:
        return await handler(request)
    except TransientError as error:
        what = "database busy" if isinstance(error.__cause__, _BUSY) else "database unavailable"
        detail = _one_line(f"{what}: {error}")[:300]
        _log_unavailable(request, detail)
        return unavailable_response(detail)


def unavailable_response(detail: str, retry_after: int = RETRY_AFTER_S) -> web.Response:
    """503 with `Retry-After: retry_after` (seconds) and the one-line JSON ``{"detail": detail}``."""
    return web.Response(body=json.dumps({"detail": detail}).encode(), status=503, content_type="application/json",
                        headers={"Retry-After": str(retry_after)})


def _log_unavailable(request: web.Request, detail: str) -> None:
    # at 8 requests a second an outage of a minute would log 480 lines that say the same
    global _quiet_until
    now = time.monotonic()
    if now >= _quiet_until:
        _quiet_until = now + 10.0
        events_log.warning("request answered 503", method=request.method, path=request.path, detail=detail)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- reading requests: everything a client sends is refused before it reaches a handler or SQL ---
#
# A service acts on a request only once its body, path values and headers passed these checks
# and the command's pydantic model (whose fields are the event catalog's types: Sku,
# CustomerId, Quantity, Items, Amount, Currency). What PostgreSQL would refuse (NUL in text,
# invalid UTF-8, numbers out of range, index entries too large) or json would choke on (deep
# nesting) never gets that far: it is a 413 or a 422 with a one-line JSON `detail`, never a 500.

MAX_BODY_BYTES = 64 * 1024
"""The largest request body a service reads, in bytes (64 KiB; an order of 100 items takes
about 5). A larger one is answered 413 without being read when its Content-Length says so,
and as soon as the bytes read pass the limit when it does not (chunked)."""

MAX_NUMBER_DIGITS = 32
"""The most digits of an integer in a request body: no count or amount has more than 13, and
converting longer digit strings costs time for nothing."""

MAX_SHOWN_CHARS = 64
"""The most characters of a client's value quoted back in an error detail."""

MAX_ERRORS_SHOWN = 20
"""The most validation errors listed in one 422 (a body of 10,000 bad items has 10,000)."""


class RequestRefused(ValueError):
    """A request refused before the service acts on it: answered `status` with the JSON
    ``{"detail": detail}`` by `validation_response`. A ValueError, so views that catch
    ``(ValidationError, ValueError)`` answer it without a clause of their own."""

    status = 422

    def __init__(self, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail if isinstance(detail, str) else "; ".join(str(e["msg"]) for e in detail))
        self.detail = detail


class BodyTooLarge(RequestRefused):
    """The body is larger than MAX_BODY_BYTES (413)."""

    status = 413


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body, which must be one JSON object in UTF-8 of at most `limit` bytes.

    Raises BodyTooLarge (413) when Content-Length is above `limit`, before reading a byte, or
    when the bytes read pass it; RequestRefused (422, one error at loc ["body"]) when the body
    is empty, not UTF-8, not JSON (NaN and Infinity included), nested too deeply for the
    parser, repeats a name within an object, has an integer of more than MAX_NUMBER_DIGITS
    digits, or is anything but an object."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(_too_large(limit))
    raw = bytearray()
    while chunk := await request.content.read(limit + 1):
        raw += chunk
        if len(raw) > limit:
            raise BodyTooLarge(_too_large(limit))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _body_error(f"body is not UTF-8: byte {error.start} is {raw[error.start]:#04x}") from None
    if not text.strip():
        raise _body_error("body is empty: expected a JSON object", "dict_type")
    try:
        data = json.loads(text, object_pairs_hook=_distinct_names, parse_constant=_no_constant, parse_int=_short_int)
    except json.JSONDecodeError as error:
        raise _body_error(f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise _body_error("body is not valid JSON: nested too deeply") from None
    except ValueError as error:  # from the hooks below
        raise _body_error(f"body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise _body_error(f"body must be a JSON object, not {_json_kind(data)}", "dict_type")
    return data


def request_value(adapter: TypeAdapter, raw: Any, *loc: str) -> Any:
    """`raw` (a path segment, a header, a query value) validated by `adapter`, e.g.
    ``request_value(SKU, sku, "path", "sku")`` with ``SKU = TypeAdapter(Sku)``. Raises
    RequestRefused (422) with pydantic's errors placed at `loc`."""
    try:
        return adapter.validate_python(raw)
    except ValidationError as error:
        raise RequestRefused(_error_list(error, list(loc))) from None


def shown(raw: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """A client's value quoted in an error detail: its repr (control characters escaped),
    cut after `limit` characters."""
    return repr(raw) if len(raw) <= limit else f"{raw[:limit]!r}… ({len(raw)} characters)"


def validation_response(view: View, error: ValidationError | ValueError) -> Response:
    """The answer to a refused request: a RequestRefused's status and detail (413 for
    BodyTooLarge); for a pydantic ValidationError 422 with one entry {"loc", "msg", "type"}
    per error (the first MAX_ERRORS_SHOWN, each message cut); for any other ValueError 422
    with its message at loc ["body"]."""
    if isinstance(error, RequestRefused):
        return json_response(view, {"detail": error.detail}, status=error.status)
    if isinstance(error, ValidationError):
        return json_response(view, {"detail": _error_list(error)}, status=422)
    return json_response(view, {"detail": [_entry(["body"], str(error), "value_error")]}, status=422)


def _error_list(error: ValidationError, prefix: list[str | int] | None = None) -> list[dict[str, Any]]:
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    listed = [_entry([*(prefix or []), *e["loc"]], e["msg"], e["type"]) for e in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        listed.append(_entry(prefix or ["body"], f"and {len(errors) - MAX_ERRORS_SHOWN} more errors", "too_many_errors"))
    return listed


def _entry(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else _cut(str(part)) for part in loc]
    return {"loc": loc, "msg": _cut(" ".join(msg.split()), 300), "type": kind}


def _cut(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body_error(message: str, kind: str = "json_invalid") -> RequestRefused:
    return RequestRefused([_entry(["body"], message, kind)])


def _too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


def _distinct_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"amount": "1.00", "amount": "1000.00"}: json keeps the last, another reader the first
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ValueError(f"the name {shown(name)} appears twice in one object")
        seen.add(name)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _short_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"an integer has more than {MAX_NUMBER_DIGITS} digits")
    return int(digits)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
