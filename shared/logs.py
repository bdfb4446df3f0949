"""Structured logs: one JSON object per line, from every logger in the process.

`configure(service)` puts one handler on the root logger that renders every record as JSON
through structlog's stdlib integration (`ProcessorFormatter`): our own loggers
(`logging.getLogger(__name__)` and `structlog.get_logger(__name__)`), and the libraries'
(faust, mode, aiokafka, aiohttp, asyncpg, asyncio, Python's warnings). faust's worker sets up
logging again when it starts (mode's `setup_logging` clears the root handlers); give it
`logging_config(service)` (`app.conf.logging_config`) so that it installs the same handler.
A line that does not start with `{` in a service's log file is then only what a dying
interpreter writes to stderr by itself.

Every JSON line has `timestamp` (UTC, ISO-8601), `level`, `logger`, `service` and
`message`, plus whatever is bound with `structlog.contextvars` at the time: while a
message is handled (shared/service.py) that is `saga_id`, `event_id`, `causation_id`,
`event_type`, `trace_id` (from the message's traceparent), `topic`, `partition` and
`offset`; the line closing each message adds `outcome` and `duration_ms`. With tracing on
(shared/telemetry.py), a line written inside a span carries that span's `trace_id` and
`span_id` instead (the consumer span's, a transaction's, an HTTP request's).

A logged exception is a field, not text: `exception` is a list with one object per exception
in the chain (the one logged first, then what caused it, `is_cause`), each `{"exc_type", "exc_value", "is_cause", "frames": [{"filename",
"lineno", "name"}, …]}` — no local variables (they may hold a password or an event's content).
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from shared import descriptors, telemetry
from shared.safe_text import preview
from shared.topics import Header
from shared.tracing import trace_id_of

OUR_LOGGERS = ("shared", *(service.name for service in descriptors.SERVICES))

_FIRST_KEYS = ("timestamp", "level", "service", "logger", "message", "saga_id", "event_type", "outcome",
               "duration_ms", "event_id", "causation_id", "trace_id", "span_id")


def configure(service: str, stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """JSON lines on `stream` (stdout by default) for every logger of the process, tagged with
    `service`: the root logger's only handler, our loggers at `level`, Python's warnings logged.

    Safe to call again (a test, a second runtime): the root's handlers are replaced, not added to."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_before_render(service),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [json_handler(service, stream)]
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.setLevel(level)
        logger.propagate = True
    logging.captureWarnings(True)


def json_handler(service: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing each record as one JSON line on `stream` (stdout by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(json_formatter(service))
    return handler


def json_formatter(service: str) -> logging.Formatter:
    """The formatter of `json_handler`: a record of any logger → one JSON object (module doc)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_before_render(service),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False, use_rich=False)),
            structlog.processors.EventRenamer("message"),
            _readable_order,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def logging_config(service: str, level: int | str = logging.INFO) -> dict[str, Any]:
    """The same set-up as `configure` as a `logging.config.dictConfig` dict, for a faust worker
    (`app.conf.logging_config`): mode replaces the root's handlers with the ones it names."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter, "service": service}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level, "handlers": ["json"]},
    }


def _before_render(service: str) -> list[Any]:
    """What every line gets, from structlog and from the stdlib alike: context, level, logger, time, service."""

    def add_service(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """A structlog processor: the line's `service` unless it names one already."""
        event.setdefault("service", service)
        return event

    return [
        structlog.contextvars.merge_contextvars,
        _add_span_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_service,
    ]


def _add_span_ids(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The current span's trace_id and span_id, over the ones bound from a message's header."""
    if (ids := telemetry.log_ids()) is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def _readable_order(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The same keys, the ones people scan for first (JSON does not care, `tail -f` readers do)."""
    first = {key: event.pop(key) for key in _FIRST_KEYS if key in event}
    return {**first, **event}


LOGGED_HEADER_CHARS = 100
"""A header value is cut to this many characters in a log line: anyone can produce a record."""


def _short(value: str | None) -> str | None:
    """A header value fit for a log line: None when empty, cut, no NUL or control characters."""
    return preview(value, LOGGED_HEADER_CHARS) if value else None


def message_context(message: Any) -> dict[str, Any]:
    """What every log line about one Kafka message carries (an IncomingMessage: headers as
    docs/contract/events.md lists them, key, coordinates). Empty headers become None; the saga
    id falls back to the key; values are cut to LOGGED_HEADER_CHARS."""
    headers: Mapping[str, str] = message.headers
    return {
        "saga_id": _short(headers.get(Header.SAGA_ID) or message.key_text),
        "event_id": _short(headers.get(Header.ID)),
        "causation_id": _short(headers.get(Header.CAUSATION_ID)),
        "event_type": _short(headers.get(Header.EVENT_TYPE)),
        "trace_id": trace_id_of(headers.get(Header.TRACEPARENT)),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
