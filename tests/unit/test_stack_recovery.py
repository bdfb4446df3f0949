"""The pieces of `saga stack recover` and of the FAILED-connector hints that need no server."""
from __future__ import annotations

import pytest

from saga_cli.errors import CliError
from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect, _failure
from saga_cli.stack.errors import ConnectorsFailed
from saga_cli.stack.recovery import _position, _routing, find_spec, format_lsn

SLOT_LOST_TRACE = (
    "io.debezium.DebeziumException: The connector is trying to read change stream starting at "
    "PostgresOffsetContext [lsn=LSN{0/15D5AD28}], but this is no longer available on the server. "
    "Reconfigure the connector to use a snapshot mode when needed.\n\tat io.debezium.connector.common.BaseSourceTask"
)


def status(trace: str) -> dict:
    return {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED", "trace": trace}]}


def test_a_task_refused_for_its_slot_points_to_the_recovery():
    failure = _failure("orders-outbox", status(SLOT_LOST_TRACE))
    assert failure.slot_lost and failure.state == "task FAILED"
    hint = failure.hint(StackSettings().log_dir / "kafka-connect.log")
    assert "\n" not in hint
    assert hint.startswith("connector orders-outbox task FAILED: its replication slot no longer holds")
    assert hint.endswith("recover with: saga stack recover orders-outbox")


def test_any_other_failure_names_its_error_the_log_and_the_command():
    failure = _failure("payments-outbox", status("org.postgresql.util.PSQLException: FATAL: password authentication failed\n\tat x"))
    assert not failure.slot_lost
    hint = failure.hint(StackSettings().log_dir / "kafka-connect.log")
    assert "password authentication failed" in hint and "kafka-connect.log" in hint
    assert hint.endswith("saga stack recover payments-outbox")
    assert failure.as_json(StackSettings().log_dir)["fix"] == "saga stack recover payments-outbox"


def test_failed_connectors_make_one_line_each():
    failures = [_failure("orders-outbox", status(SLOT_LOST_TRACE)), _failure("payments-outbox", status("boom"))]
    error = ConnectorsFailed(failures, [f.hint(StackSettings().log_dir) for f in failures])
    assert len(str(error).splitlines()) == 2
    assert error.failures == failures


def test_a_connector_is_found_by_its_name_database_or_slot():
    connect = Connect(StackSettings())
    assert {find_spec(connect, wanted).name for wanted in ("orders-outbox", "orders", "orders_outbox")} == {"orders-outbox"}
    with pytest.raises(CliError, match="one of: inventory-outbox, orders-outbox, payments-outbox"):
        find_spec(connect, "order")


def test_republished_rows_go_where_the_event_router_sends_them():
    for spec in Connect(StackSettings()).specs():
        column, topic_of = _routing(spec)
        assert column == "aggregate_type"
        assert topic_of("order") == "events.order"
        assert spec.config["offset.mismatch.strategy"] == "trust_offset"  # refuse a slot that lost the position


def test_the_stored_position_and_its_time():
    stored = [{"partition": {"server": "orders"},
               "offset": {"lsn": 366325032, "lsn_commit": 366325032, "ts_usec": 1795977091565006}}]
    assert _position(stored) == (366325032, "2026-11-29T18:31:31.565Z")
    assert _position([]) == (None, None)
    assert format_lsn(366325032) == "0/15D5AD28"
    assert format_lsn((1 << 32) + 0x16B3748) == "1/16B3748"
