"""Structured logs: one JSON object per line for the project's own loggers.

`configure(service)` routes the stdlib loggers of our packages (`shared`, `order_svc`,
`inventory_svc`, `payment_svc`) through structlog's stdlib integration
(`ProcessorFormatter`), so `logging.getLogger(__name__)` and `structlog.get_logger(__name__)`
both write JSON. Faust's and aiokafka's loggers keep faust's own format: the service's log
file then holds both, and every line that starts with `{` is one of ours.

Every JSON line has `timestamp` (UTC, ISO-8601), `level`, `logger`, `service` and
`message`, plus whatever is bound with `structlog.contextvars` at the time: while a
message is handled (shared/service.py) that is `saga_id`, `event_id`, `causation_id`,
`event_type`, `trace_id` (from the message's traceparent), `topic`, `partition` and
`offset`; the line closing each message adds `outcome` and `duration_ms`.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog

from shared.safe_text import preview
from shared.topics import Header
from shared.tracing import trace_id_of

OUR_LOGGERS = ("shared", "order_svc", "inventory_svc", "payment_svc")

_FIRST_KEYS = ("timestamp", "level", "service", "logger", "message", "saga_id", "event_type", "outcome",
               "duration_ms", "event_id", "causation_id", "trace_id")


def configure(service: str, stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """JSON lines on `stream` (stdout by default) for our loggers, tagged with `service`.

    Safe to call again (a test, a second runtime): the handler is replaced, not added."""

    def add_service(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    before_render = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_service,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *before_render,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=before_render,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.EventRenamer("message"),
                _readable_order,
                structlog.processors.JSONRenderer(default=str),
            ],
        )
    )
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False  # not again through faust's root handler


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
    """What every log line about one Kafka message carries (an IncomingMessage: headers per
    SPEC §2, key, coordinates). Empty headers become None; the saga id falls back to the key;
    values are cut to LOGGED_HEADER_CHARS."""
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
