"""Spans (shared/telemetry.py) recorded with the SDK's in-memory exporter: a consumer span per
record, a span per transaction (one per event inside a group-commit batch, the batch its own),
an outbox write, and a producer span per emitted event whose context is the outbox row's
traceparent; a server span per request; tracestate carried; log lines with span ids; nothing
recorded and the plain W3C hop when tracing is off. The database is a small in-file fake."""
from __future__ import annotations

import io
import json
import logging
import uuid
from contextlib import asynccontextmanager

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import logs, telemetry
from shared.consumer import EventProcessor, IncomingMessage
from shared.events import OrderConfirmed, OrderCreated, encode_event, utc_now
from shared.tracing import TraceHeaders, parse_traceparent
from shared.uow import Envelope, UnitOfWork

pytestmark = pytest.mark.unit

UPSTREAM = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=abc,other=1"


# --- a database that records what the unit of work writes -------------------------------------
class FakeConnection:
    def __init__(self) -> None:
        self.outbox: list[tuple] = []

    @asynccontextmanager
    async def transaction(self, isolation: str = "read_committed"):
        yield

    async def fetchval(self, sql: str, consumer, event_id, *args):  # the inbox row: always a first delivery
        return event_id

    async def fetch(self, sql: str, consumer, event_ids, *args):
        return [(event_id,) for event_id in event_ids]

    async def execute(self, sql: str, *row) -> None:
        assert "INSERT INTO outbox" in sql
        self.outbox.append(row)

    async def executemany(self, sql: str, rows) -> None:
        assert "INSERT INTO outbox" in sql
        self.outbox.extend(rows)


class FakePool:
    def __init__(self) -> None:
        self.connection = FakeConnection()

    @asynccontextmanager
    async def acquire(self, timeout=None):
        yield self.connection


def outbox_trace(row: tuple) -> TraceHeaders:
    """(traceparent, tracestate) of an outbox row, in _INSERT_OUTBOX's order."""
    return TraceHeaders(row[7], row[9])


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use(provider)
    yield exporter
    telemetry.use(None)


@pytest.fixture
def pool():
    return FakePool()


def order_created() -> OrderCreated:
    return OrderCreated(order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="alice",
                        items=[{"sku": "WIDGET-1", "quantity": 2}], amount="40.00", currency="EUR")


async def confirm(event, tx) -> None:
    logging.getLogger("shared.test").info("confirming")
    await tx.emit(OrderConfirmed(order_id=event.order_id, occurred_at=utc_now()))


HANDLERS = {OrderCreated: confirm}


def record(event, traceparent: str | None = UPSTREAM, tracestate: str | None = TRACESTATE) -> IncomingMessage:
    headers = {"id": str(uuid.uuid4()), "eventType": event.event_type, "sagaId": str(event.order_id)}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    if tracestate is not None:
        headers["tracestate"] = tracestate
    return IncomingMessage.with_headers("events.order", 0, 7, str(event.order_id).encode(),
                                        json.dumps(encode_event(event)).encode(), headers)


def by_name(exporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def ids(span) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_id(span) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


async def consume(pool, message: IncomingMessage, group_commit=None) -> str:
    """What shared/service.py does with a record: the consumer span around EventProcessor.handle."""
    consumer = EventProcessor(UnitOfWork(pool, "inventory_svc"), HANDLERS, group_commit=group_commit)
    with telemetry.consuming(message, consumer.name, traced=not consumer.ignores(message)) as span:
        outcome = await consumer.handle(message)
        span.set_attribute("saga.outcome", outcome)
    return outcome


# --- one event: consumer span → transaction → outbox write, producer span → the row ------------
async def test_a_handled_event_is_a_consumer_span_a_transaction_and_a_producer_span_per_emitted_event(spans, pool):
    assert await consume(pool, record(order_created())) == "handled"

    found = by_name(spans)
    (consumer,) = found["process events.order"]
    (transaction,) = found["handle ORDER_CREATED"]
    (write,) = found["outbox write"]
    (produced,) = found["create events.order"]
    assert consumer.kind is SpanKind.CONSUMER and produced.kind is SpanKind.PRODUCER
    # the consumer span continues the upstream trace, as a child of (and linked to) the header's span
    assert ids(consumer)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id(consumer) == "00f067aa0ba902b7"
    assert [f"{link.context.span_id:016x}" for link in consumer.links] == ["00f067aa0ba902b7"]
    assert consumer.attributes["saga.outcome"] == "handled"
    assert parent_id(transaction) == ids(consumer)[1]
    assert parent_id(write) == ids(transaction)[1]
    assert parent_id(produced) == ids(transaction)[1]
    assert {span.context.trace_id for span in spans.get_finished_spans()} == {consumer.context.trace_id}
    # the row carries the producer span's own context: the next consumer's parent is a recorded span
    (row,) = pool.connection.outbox
    written = outbox_trace(row)
    assert written.traceparent == f"00-{ids(produced)[0]}-{ids(produced)[1]}-01"
    assert written.tracestate == TRACESTATE


async def test_an_event_of_another_service_gets_no_span(spans, pool):
    message = record(OrderConfirmed(order_id=uuid.uuid4(), occurred_at=utc_now()))
    assert await consume(pool, message) == "ignored"
    assert spans.get_finished_spans() == ()


async def test_a_malformed_traceparent_starts_a_new_trace_without_its_tracestate(spans, pool):
    await consume(pool, record(order_created(), traceparent="00-nonsense-01"))
    (consumer,) = by_name(spans)["process events.order"]
    assert consumer.parent is None and consumer.links == ()
    (row,) = pool.connection.outbox
    assert parse_traceparent(row[7]).trace_id == ids(consumer)[0]
    assert row[9] == ""


# --- a group-commit batch: one transaction, each event still its own spans ----------------------
async def test_each_event_of_a_batch_keeps_its_own_trace_and_the_batch_links_to_them(spans, pool):
    uow = UnitOfWork(pool, "inventory_svc")
    consumed = []
    for _ in range(3):  # three records, each handled under its own consumer span
        with telemetry.consuming(record(order_created()), "inventory_svc"):
            consumed.append(telemetry.current())
    events = [order_created() for _ in consumed]
    batch = [(Envelope(uuid.uuid4(), event, trace.traceparent, trace.tracestate), HANDLERS)
             for event, trace in zip(events, consumed)]
    with telemetry.consuming(record(order_created()), "inventory_svc"):  # the batch task's inherited context
        await uow.handle_batch(batch)

    found = by_name(spans)
    (group,) = found["group commit"]
    assert group.parent is None, "a batch of several events is a trace of its own, not its first event's child"
    assert group.attributes["saga.batch.size"] == 3
    assert sorted(f"{link.context.span_id:016x}" for link in group.links) == sorted(
        parse_traceparent(trace.traceparent).span_id for trace in consumed)
    (write,) = found["outbox write"]
    assert parent_id(write) == ids(group)[1] and write.attributes["saga.outbox.rows"] == 3
    handled = {span.attributes["saga.id"]: span for span in found["handle ORDER_CREATED"]}
    created = {parent_id(span): span for span in found["create events.order"]}
    rows = {row[2]: outbox_trace(row) for row in pool.connection.outbox}
    for event, trace in zip(events, consumed):
        consumer_span = parse_traceparent(trace.traceparent)
        transaction = handled[str(event.order_id)]
        assert ids(transaction)[0] == consumer_span.trace_id
        assert parent_id(transaction) == consumer_span.span_id
        assert [f"{link.context.span_id:016x}" for link in transaction.links] == [ids(group)[1]]
        produced = created[ids(transaction)[1]]
        assert rows[str(event.order_id)].traceparent == f"00-{ids(produced)[0]}-{ids(produced)[1]}-01"
        assert rows[str(event.order_id)].tracestate == TRACESTATE


async def test_a_batch_of_one_is_part_of_its_events_trace(spans, pool):
    with telemetry.consuming(record(order_created()), "inventory_svc"):
        trace = telemetry.current()
    await UnitOfWork(pool, "inventory_svc").handle_batch(
        [(Envelope(uuid.uuid4(), order_created(), trace.traceparent, trace.tracestate), HANDLERS)])
    (group,) = by_name(spans)["group commit"]
    assert parent_id(group) == parse_traceparent(trace.traceparent).span_id


# --- a request: server span → start saga → producer span --------------------------------------
async def test_a_request_is_a_server_span_and_the_saga_it_starts_its_child(spans, pool):
    uow = UnitOfWork(pool, "order_svc")

    async def place(request: web.Request) -> web.Response:
        event = order_created()
        async with uow.starting(event.order_id, request.headers.get("traceparent")) as tx:
            await tx.emit(event)
        return web.json_response({"order_id": str(event.order_id)}, status=201)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[telemetry.trace_requests])
    app.router.add_post("/orders", place)
    app.router.add_get("/health", health)
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/orders", headers={"traceparent": UPSTREAM, "tracestate": TRACESTATE})
        assert answer.status == 201
        assert (await client.get("/health")).status == 200
        assert (await client.get("/nowhere")).status == 404

    found = by_name(spans)
    assert "GET /health" not in found
    (server,) = found["POST /orders"]
    (started,) = found["start saga"]
    (produced,) = found["create events.order"]
    assert server.kind is SpanKind.SERVER and server.attributes["http.response.status_code"] == 201
    assert parent_id(server) == "00f067aa0ba902b7" and ids(server)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id(started) == ids(server)[1]
    assert parent_id(produced) == ids(started)[1]
    (row,) = pool.connection.outbox
    assert outbox_trace(row) == TraceHeaders(f"00-{ids(produced)[0]}-{ids(produced)[1]}-01", TRACESTATE)
    (missing,) = found["GET /nowhere"]
    assert missing.attributes["http.response.status_code"] == 404


# --- off: nothing recorded, the traceparent a child as before, tracestate carried ---------------
async def test_off_records_nothing_and_the_row_carries_a_child_traceparent_and_the_tracestate(pool):
    assert not telemetry.enabled()
    assert await consume(pool, record(order_created())) == "handled"
    (row,) = pool.connection.outbox
    child = parse_traceparent(row[7])
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and child.span_id != "00f067aa0ba902b7"
    assert row[9] == TRACESTATE
    assert telemetry.current() is None and telemetry.log_ids() is None


# --- log lines inside a span carry its ids ------------------------------------------------------
@pytest.fixture
def log_lines():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    logs.configure("inventory_svc", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    structlog.reset_defaults()
    logging.captureWarnings(False)
    root.handlers[:], level = saved
    root.setLevel(level)


async def test_a_log_line_inside_a_span_carries_its_trace_id_and_span_id(spans, pool, log_lines):
    await consume(pool, record(order_created()))
    (transaction,) = by_name(spans)["handle ORDER_CREATED"]
    (line,) = [line for line in log_lines() if line["message"] == "confirming"]
    assert (line["trace_id"], line["span_id"]) == ids(transaction)


async def test_off_a_log_line_has_no_span_id(pool, log_lines):
    await consume(pool, record(order_created()))
    (line,) = [line for line in log_lines() if line["message"] == "confirming"]
    assert "span_id" not in line


# --- configuration: off unless an exporter is configured ----------------------------------------
@pytest.mark.parametrize("environ, on", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_tracing_is_on_only_when_an_exporter_is_configured(environ, on):
    try:
        assert telemetry.configure("order_svc", environ) is on
        assert telemetry.enabled() is on
    finally:
        telemetry.use(None)
