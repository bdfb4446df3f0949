"""Structured logs (shared/logs.py): our loggers write one JSON object per line, with what
was bound while a message was handled; the context of a message comes from its headers."""
from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
import structlog

from shared import logs
from shared.consumer import IncomingMessage
from shared.tracing import new_traceparent, trace_id_of

pytestmark = pytest.mark.unit


@pytest.fixture
def stream():
    """Our loggers writing to a buffer; their previous set-up restored afterwards."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level, logging.getLogger(name).propagate)
             for name in logs.OUR_LOGGERS}
    buffer = io.StringIO()
    logs.configure("order_svc", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def message(**headers: str) -> IncomingMessage:
    return IncomingMessage.with_headers("events.payment", 2, 41, b"the-key", b"{}", headers)


def test_stdlib_and_structlog_loggers_both_write_json_lines(stream):
    logging.getLogger("shared.consumer").warning("retrying %s after %s", "PAYMENT_COMPLETED", "a deadlock")
    structlog.stdlib.get_logger("order_svc.app").info("order placed", saga_id="s-1")
    logging.getLogger("faust.worker").info("not ours")  # faust's loggers keep faust's format

    first, second = lines(stream)
    assert first["message"] == "retrying PAYMENT_COMPLETED after a deadlock"
    assert (first["level"], first["logger"], first["service"]) == ("warning", "shared.consumer", "order_svc")
    assert first["timestamp"].endswith("Z")
    assert (second["message"], second["saga_id"], second["logger"]) == ("order placed", "s-1", "order_svc.app")


def test_a_handled_message_line_carries_the_saga_event_and_trace(stream):
    traceparent, event_id, cause = new_traceparent(), str(uuid.uuid4()), str(uuid.uuid4())
    incoming = message(id=event_id, eventType="PAYMENT_COMPLETED", sagaId="order-1", causationId=cause, traceparent=traceparent)

    with structlog.contextvars.bound_contextvars(**logs.message_context(incoming)):
        logging.getLogger("shared.consumer").warning("retrying")  # a line from inside the handling
        structlog.stdlib.get_logger("shared.service").info("message handled", outcome="handled", duration_ms=3.2)
    structlog.stdlib.get_logger("shared.service").info("after")

    inside, handled, after = lines(stream)
    expected = {"saga_id": "order-1", "event_id": event_id, "causation_id": cause, "event_type": "PAYMENT_COMPLETED",
                "trace_id": trace_id_of(traceparent), "topic": "events.payment", "partition": 2, "offset": 41}
    assert expected.items() <= inside.items()
    assert {**expected, "outcome": "handled", "duration_ms": 3.2}.items() <= handled.items()
    assert "saga_id" not in after


def test_missing_or_malformed_headers_leave_gaps_not_errors():
    context = logs.message_context(message(causationId="", traceparent="not-a-traceparent"))
    assert context["saga_id"] == "the-key"  # the message key is the saga id
    assert context["event_id"] is None and context["causation_id"] is None and context["event_type"] is None
    assert context["trace_id"] is None


def test_exceptions_are_rendered_into_the_line(stream):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("shared.consumer").exception("handler failed")
    [line] = lines(stream)
    assert "ValueError: boom" in line["exception"]


def test_configuring_twice_keeps_one_handler(stream):
    logs.configure("order_svc", stream=stream)
    logging.getLogger("order_svc").info("once")
    assert [line["message"] for line in lines(stream)] == ["once"]
