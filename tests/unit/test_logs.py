"""Structured logs (shared/logs.py): every logger of the process, ours and the libraries', writes
one JSON object per line, with what was bound while a message was handled; the context of a
message comes from its headers; an exception is a structured field."""
from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid
import warnings

import pytest
import structlog

from shared import logs
from shared.consumer import IncomingMessage
from shared.tracing import new_traceparent, trace_id_of

pytestmark = pytest.mark.unit


@pytest.fixture
def stream():
    """Every logger writing to a buffer; the previous set-up (pytest's own handlers) restored afterwards."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level, logging.getLogger(name).propagate)
             for name in logs.OUR_LOGGERS}
    buffer = io.StringIO()
    logs.configure("order_svc", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.captureWarnings(False)
    root.handlers[:], level = saved_root
    root.setLevel(level)
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

    first, second = lines(stream)
    assert first["message"] == "retrying PAYMENT_COMPLETED after a deadlock"
    assert (first["level"], first["logger"], first["service"]) == ("warning", "shared.consumer", "order_svc")
    assert first["timestamp"].endswith("Z")
    assert (second["message"], second["saga_id"], second["logger"]) == ("order placed", "s-1", "order_svc.app")


LIBRARY_LOGGERS = ("faust.worker", "mode.services", "aiokafka.consumer.group_coordinator", "aiohttp.access",
                   "asyncpg.pool", "asyncio", "a.library.nobody.listed")


def test_every_line_a_library_logger_writes_is_json(stream):
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).warning("from %s\nover two lines | with a table", name)
    warnings.warn("a deprecated call", UserWarning, stacklevel=1)  # Python's warnings, through logging
    print("a line written by hand", file=stream)  # what the check below must catch

    text = stream.getvalue().splitlines()
    assert text[-1] == "a line written by hand"
    records = [json.loads(line) for line in text[:-1]]  # each library line parses as one JSON object
    assert [record["logger"] for record in records] == [*LIBRARY_LOGGERS, "py.warnings"]
    assert all(record["service"] == "order_svc" and record["level"] == "warning" for record in records)
    assert records[0]["message"] == "from faust.worker\nover two lines | with a table"
    assert "a deprecated call" in records[-1]["message"]


def test_a_faust_worker_setting_logging_up_again_keeps_json(stream):
    """mode's setup_logging clears the root's handlers and applies the worker's logging_config."""
    config = logs.logging_config("payment_svc")
    config["handlers"]["json"]["stream"] = stream
    logging.getLogger().handlers.clear()
    logging.config.dictConfig(config)

    logging.getLogger("mode.worker").info("ready")
    logging.getLogger("payment_svc.app").info("charged")
    worker, ours = lines(stream)
    assert (worker["logger"], worker["service"], worker["message"]) == ("mode.worker", "payment_svc", "ready")
    assert (ours["logger"], ours["service"], ours["message"]) == ("payment_svc.app", "payment_svc", "charged")


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


def test_exceptions_are_structured_fields_with_their_cause(stream):
    def charge(secret_card_number: str) -> None:
        raise ValueError("boom")

    try:
        try:
            charge("4111 1111 1111 1111")
        except ValueError as error:
            raise RuntimeError("handler failed") from error
    except RuntimeError:
        logging.getLogger("aiokafka.conn").exception("giving up")
    [line] = lines(stream)
    raised, cause = line["exception"]
    assert (raised["exc_type"], raised["exc_value"], raised["is_cause"]) == ("RuntimeError", "handler failed", False)
    assert (cause["exc_type"], cause["exc_value"], cause["is_cause"]) == ("ValueError", "boom", True)
    assert cause["frames"][-1]["name"] == "charge" and cause["frames"][-1]["lineno"] > 0
    assert "4111" not in json.dumps(line)  # no local variables in a log line


def test_configuring_twice_keeps_one_handler(stream):
    logs.configure("order_svc", stream=stream)
    logging.getLogger("order_svc").info("once")
    logging.getLogger("faust").info("once too")
    assert [line["message"] for line in lines(stream)] == ["once", "once too"]
