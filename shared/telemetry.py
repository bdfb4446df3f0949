"""OpenTelemetry spans for the saga, when configured; the plain W3C hop (shared/tracing.py) when not.

Off unless an exporter is configured (`configure`, following the OTEL_* conventions), and off
whenever the `otel` extra (opentelemetry-api, -sdk, -exporter-otlp-proto-http) is not installed.
Off, every hook below costs a global check and the `traceparent` travels exactly as without
this module: each emitted event carries a child of the handled event's context.

On, one order is one trace tree across the three services:

    POST /orders                      server span (order_svc), a child of the request's traceparent
      start saga                      the unit of work's transaction (uow.starting)
        outbox write                  the INSERT of the transaction's outbox rows
        create events.order           producer span per emitted event: its context is the
                                      traceparent and tracestate written to the outbox row
          … CDC: commit, WAL, Debezium, Kafka (the gap between the spans) …
          process events.order        consumer span (inventory_svc), a child of that context
            handle ORDER_CREATED      the event's transaction (uow.processing), or its part of
              create events.inventory a group-commit batch (the batch's own span links to it)
                process events.inventory   (payment_svc) …

A group-commit batch (shared/group_commit.py) is one transaction for several events: it gets a
`group commit` span of its own (a child of its only event's consumer span for a batch of one,
else a new trace linked to every event's consumer span), and each event still gets its own
`handle <EVENT_TYPE>` span, a child of its consumer span linked to the batch span, under which
its events are created. Each consumer span is also linked to its producer's context.

Every log line written inside a span carries the span's `trace_id` and `span_id` (shared/logs.py).
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from shared.tracing import TraceHeaders, parse_traceparent, valid_tracestate

__all__ = [
    "configure", "use", "enabled", "span", "batch", "step", "consuming", "created", "current", "log_ids",
    "trace_requests", "UNTRACED_PATHS",
]

log = logging.getLogger(__name__)

UNTRACED_PATHS = frozenset({"/livez", "/readyz", "/health", "/metrics"})
"""Probes and scrapes: answered without a span (a poll every second would bury the orders)."""

_tracer: Any = None
"""The opentelemetry Tracer spans are made with; None while tracing is off."""
_otel: Any = None
"""The opentelemetry names the hooks use (a namespace), imported once tracing is turned on."""


# --- turning it on ------------------------------------------------------------------------------
def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process as the OTEL_* variables in `environ` (os.environ by
    default) ask, and return whether it is on. On when OTEL_SDK_DISABLED is not "true" and an
    exporter is configured: OTEL_TRACES_EXPORTER lists "otlp" (OTLP over HTTP/protobuf, to
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces") and/or
    "console", or it is unset and one of those endpoints is set; "none" turns it off. The
    resource's service.name is OTEL_SERVICE_NAME, else `service`; OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER and OTEL_BSP_* apply as the SDK reads them. Asked for but the `otel`
    extra not installed: a warning, and off. Never raises for a bad setting: it logs and stays off."""
    env = os.environ if environ is None else environ
    exporters = _exporters_asked(env)
    if not exporters:
        use(None)
        return False
    try:
        from opentelemetry import trace as trace_api
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* settings ask for traces, but the otel extra is not installed: tracing stays off")
        use(None)
        return False
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = _otlp_endpoint(env)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not one this service has (otlp, console, none): ignored", name)
    trace_api.set_tracer_provider(provider)
    use(provider)
    log.info("tracing on: spans exported to %s as %s", ", ".join(exporters), resource.attributes["service.name"])
    return True


def use(provider: Any) -> None:
    """Make spans with `provider` (an opentelemetry TracerProvider: a test's, with an in-memory
    exporter) from now on; None turns tracing off. The global provider is left alone."""
    global _tracer, _otel
    if provider is None:
        _tracer = None
        return
    _otel = _names()
    _tracer = provider.get_tracer("order_saga")


def enabled() -> bool:
    """Whether spans are being recorded in this process."""
    return _tracer is not None


def _exporters_asked(env: Mapping[str, str]) -> list[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not listed:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip() for name in listed.split(",") if name.strip()]
    return [] if "none" in names else list(dict.fromkeys(names))


def _otlp_endpoint(env: Mapping[str, str]) -> str:
    if traces := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def _names() -> Any:
    from types import SimpleNamespace

    from opentelemetry import context, trace
    from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

    return SimpleNamespace(context=context, trace=trace, Link=Link, NonRecordingSpan=NonRecordingSpan,
                           SpanContext=SpanContext, SpanKind=SpanKind, StatusCode=StatusCode, TraceFlags=TraceFlags,
                           TraceState=TraceState)


# --- the hooks --------------------------------------------------------------------------------
def span(name: str, parent: TraceHeaders, *, attributes: Mapping[str, Any] | None = None,
         links: Iterable[TraceHeaders | None] = ()) -> Any:
    """A context manager (`with` or `async with`) for one hop of work, e.g. a unit of work's
    transaction, giving the TraceHeaders the events emitted in it descend from. On: a recorded
    span, the current one while it is open, a child of `parent` (a new trace when `parent`'s
    traceparent is missing or malformed), linked to each of `links`; an exception escaping it
    is recorded and passes. Off: `parent.child()`, nothing recorded."""
    if _tracer is None:
        return _Unrecorded(parent)
    return _Scope(_tracer.start_as_current_span(
        name, context=_context_of(parent), attributes=attributes, links=_links(links)))


def batch(name: str, traces: Sequence[TraceHeaders], *, attributes: Mapping[str, Any] | None = None) -> Any:
    """A context manager for work done for several events at once (a group-commit transaction),
    giving its span's TraceHeaders, or None when off. With one event a child of its context;
    with more a new trace linked to each of `traces`."""
    if _tracer is None:
        return _NOTHING
    if len(traces) == 1:
        cm = _tracer.start_as_current_span(name, context=_context_of(traces[0]), attributes=attributes)
    else:
        cm = _tracer.start_as_current_span(name, context=_otel.context.Context(), attributes=attributes,
                                           links=_links(traces))
    return _Scope(cm)


def step(name: str, *, attributes: Mapping[str, Any] | None = None) -> Any:
    """A context manager for a part of the current span's work (the outbox write): a child span
    of the current one; nothing when off or when no span is current. Gives None."""
    if _tracer is None or not _otel.trace.get_current_span().get_span_context().is_valid:
        return _NOTHING
    return _Scope(_tracer.start_as_current_span(name, attributes=attributes), headers=False)


def consuming(message: Any, consumer: str, *, traced: bool = True) -> Any:
    """A context manager for the handling of one Kafka record (shared/consumer.py's
    IncomingMessage: topic, partition, offset, key_text, headers), giving the span (use
    `set_attribute(name, value)`; a no-op stand-in when off or `traced` is False). On: a
    consumer span `process <topic>`, a child of the record's traceparent (and tracestate),
    linked to it, current while open; a new trace when the header is missing or malformed."""
    if _tracer is None or not traced:
        return _NOTHING_SPAN
    headers = message.headers
    parent = TraceHeaders.received(headers.get("traceparent"), headers.get("tracestate"))
    context = _context_of(parent)
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.topic,
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.offset": message.offset,
        "messaging.consumer.group.name": consumer,
        "messaging.message.id": headers.get("id", ""),
        "saga.id": headers.get("sagaId") or message.key_text or "",
        "saga.event_type": headers.get("eventType", ""),
    }
    return _Scope(_tracer.start_as_current_span(
        f"process {message.topic}", context=context, kind=_otel.SpanKind.CONSUMER, attributes=attributes,
        links=_links([parent])), headers=False)


def created(parent: TraceHeaders, *, topic: str, event_type: str, saga_id: str) -> TraceHeaders:
    """The trace context to write with an event emitted under `parent` (the outbox row's
    traceparent and tracestate). On: a producer span `create <topic>`, a child of `parent`,
    recorded now; its context. Off: `parent` itself."""
    if _tracer is None:
        return parent
    produced = _tracer.start_span(
        f"create {topic}", context=_context_of(parent), kind=_otel.SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.operation.type": "create",
                    "messaging.destination.name": topic, "saga.event_type": event_type, "saga.id": saga_id})
    produced.end()
    return _headers_of(produced)


def current() -> TraceHeaders | None:
    """The current span's trace context when tracing is on and a span is current; else None."""
    if _tracer is None:
        return None
    context = _otel.trace.get_current_span().get_span_context()
    return _headers_of_context(context) if context.is_valid else None


def log_ids() -> tuple[str, str] | None:
    """(trace id: 32 hex, span id: 16 hex) of the current recorded span, or None (off, none)."""
    if _tracer is None:
        return None
    current_span = _otel.trace.get_current_span()
    if not current_span.is_recording():
        return None
    context = current_span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@web.middleware
async def trace_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """The aiohttp middleware of every service's web app: a server span `<METHOD> <route>` per
    request (a child of its traceparent and tracestate headers), current while the view runs,
    with the answer's status; a 5xx answer or an exception marks it failed. UNTRACED_PATHS and
    everything while tracing is off pass straight through."""
    if _tracer is None or request.path in UNTRACED_PATHS:
        return await handler(request)
    parent = TraceHeaders.received(request.headers.get("traceparent"), request.headers.get("tracestate"))
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.path}
    with _tracer.start_as_current_span(f"{request.method} {route}", context=_context_of(parent),
                                       kind=_otel.SpanKind.SERVER, attributes=attributes) as server:
        try:
            response = await handler(request)
        except web.HTTPException as answer:  # aiohttp's raised answers (404, 413…) are answers too
            _answered(server, answer.status)
            raise
        _answered(server, response.status)
        return response


def _answered(server: Any, status: int) -> None:
    server.set_attribute("http.response.status_code", status)
    if status >= 500:
        server.set_status(_otel.StatusCode.ERROR)


# --- between TraceHeaders and opentelemetry's contexts ----------------------------------------
@functools.lru_cache(maxsize=1024)
def _context_of(headers: TraceHeaders) -> Any:
    """An opentelemetry Context whose span is `headers`' (remote) span; an empty one (a new
    trace) when the traceparent is missing or malformed. Cached: a transaction's context is the
    parent of each event it emits, and parsing a tracestate costs more than the span itself."""
    parsed = parse_traceparent(headers.traceparent)
    if parsed is None:
        return _otel.context.Context()
    return _otel.trace.set_span_in_context(_otel.NonRecordingSpan(_span_context(parsed, headers.tracestate)),
                                           _otel.context.Context())


def _span_context(parsed: Any, tracestate: str) -> Any:
    state = valid_tracestate(tracestate)
    return _otel.SpanContext(
        trace_id=int(parsed.trace_id, 16), span_id=int(parsed.span_id, 16), is_remote=True,
        trace_flags=_otel.TraceFlags(int(parsed.flags, 16)),
        trace_state=_trace_state(state))


@functools.lru_cache(maxsize=256)
def _trace_state(state: str) -> Any:
    return _otel.TraceState.from_header([state]) if state else _otel.TraceState()


def _links(traces: Iterable[TraceHeaders | None]) -> list[Any]:
    links = []
    for headers in traces:
        parsed = parse_traceparent(headers.traceparent) if headers is not None else None
        if parsed is not None:
            links.append(_otel.Link(_span_context(parsed, headers.tracestate)))
    return links


def _headers_of(recorded: Any) -> TraceHeaders:
    return _headers_of_context(recorded.get_span_context())


def _headers_of_context(context: Any) -> TraceHeaders:
    return TraceHeaders(f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}",
                        context.trace_state.to_header())


class _Scope:
    """One opentelemetry span scope usable with `with` and `async with`, giving its TraceHeaders
    (or, with headers=False, the span itself)."""

    __slots__ = ("_cm", "_headers")

    def __init__(self, cm: Any, headers: bool = True) -> None:
        self._cm, self._headers = cm, headers

    def __enter__(self) -> Any:
        opened = self._cm.__enter__()
        return _headers_of(opened) if self._headers else opened

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return self.__exit__(*exc)


class _Unrecorded:
    """`span` while tracing is off: gives the child of its parent, records nothing."""

    __slots__ = ("_parent",)

    def __init__(self, parent: TraceHeaders) -> None:
        self._parent = parent

    def __enter__(self) -> TraceHeaders:
        return self._parent.child()

    def __exit__(self, *exc: Any) -> None:
        return None

    async def __aenter__(self) -> TraceHeaders:
        return self._parent.child()

    async def __aexit__(self, *exc: Any) -> None:
        return None


class _NoSpan:
    """Stands in for a span while tracing is off."""

    __slots__ = ()

    def set_attribute(self, name: str, value: Any) -> None:
        """Does nothing."""
        return None


class _Nothing:
    __slots__ = ("_gives",)

    def __init__(self, gives: Any) -> None:
        self._gives = gives

    def __enter__(self) -> Any:
        return self._gives

    def __exit__(self, *exc: Any) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self._gives

    async def __aexit__(self, *exc: Any) -> None:
        return None


_NOTHING = _Nothing(None)
_NOTHING_SPAN = _Nothing(_NoSpan())
