"""The operator's side of the CLI: `saga tail --json` lines, `--bootstrap-server` on the commands
that read Kafka, the `saga connect` group and shell completion."""
from __future__ import annotations

import json
import socket
import uuid

import pytest

from saga_cli.connect_commands import ConnectorState
from saga_cli.kafka import KafkaEvent
from saga_cli.tail import json_line
from tests.unit.cli_support import run_saga

pytestmark = pytest.mark.unit


def an_event(order_id: str, value: object) -> KafkaEvent:
    return KafkaEvent(
        topic="events.payment", partition=2, offset=41, timestamp_ms=1_714_564_800_250, key=order_id,
        headers={"id": "e-1", "eventType": "PAYMENT_REFUNDED", "sagaId": order_id, "causationId": None},
        value=value,
    )


def test_a_json_line_is_one_line_jq_can_read_whole() -> None:
    order_id = str(uuid.uuid4())
    value = {"event_type": "PAYMENT_REFUNDED", "order_id": order_id, "note": "two\nlines \u00e9 " + "x" * 5000}

    line = json_line(an_event(order_id, value))

    assert "\n" not in line
    document = json.loads(line)
    assert document == {
        "topic": "events.payment", "partition": 2, "offset": 41, "timestamp": "2024-05-01T12:00:00.250Z",
        "timestamp_ms": 1_714_564_800_250, "key": order_id, "event_type": "PAYMENT_REFUNDED", "event_id": "e-1",
        "headers": {"id": "e-1", "eventType": "PAYMENT_REFUNDED", "sagaId": order_id, "causationId": None},
        "value": value,  # nothing cut, unlike the text line
    }


def test_a_value_that_is_not_json_and_a_lone_surrogate_still_make_a_line() -> None:
    text_value = json.loads(json_line(an_event("o-1", "not json \\x00")))
    assert text_value["value"] == "not json \\x00"
    surrogate = json_line(an_event("o-2", {"bad": "\ud800"}))
    surrogate.encode("utf-8")  # writable to a UTF-8 pipe
    assert json.loads(surrogate)["value"] == {"bad": "\ud800"}


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [["trace", "order-1"], ["tail", "--json"], ["tail"]])
def test_bootstrap_server_is_the_kafka_the_command_reads(capsys, monkeypatch, command) -> None:
    """The environment names one Kafka, --bootstrap-server another: the error names the option's."""
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("SAGA_ORDER_URL", f"http://127.0.0.1:{unused_port()}")  # trace asks order_svc first
    elsewhere = f"127.0.0.1:{unused_port()}"

    outcome = run_saga(capsys, *command, "--bootstrap-server", elsewhere, "--since", "0") if command[0] == "trace" \
        else run_saga(capsys, *command, "--bootstrap-server", elsewhere)

    assert outcome.exit_code == 1
    assert f"Kafka is not reachable at {elsewhere}" in outcome.stderr, outcome.stderr
    assert "127.0.0.1:1 " not in outcome.stderr


def test_sagas_stuck_reads_kafka_at_the_bootstrap_server(capsys, monkeypatch) -> None:
    from saga_cli import sagas

    elsewhere = f"127.0.0.1:{unused_port()}"
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setattr(sagas, "fetch_sagas", lambda which, limit: [
        {"order_id": "o-1", "status": "PAYMENT_PENDING", "created_at": "2026-01-01T00:00:00+00:00"}])

    outcome = run_saga(capsys, "sagas", "--stuck", "--json", "--bootstrap-server", elsewhere)

    assert outcome.exit_code == 0
    assert f"Kafka is not reachable at {elsewhere}" in outcome.stderr
    assert json.loads(outcome.stdout)[0]["order_id"] == "o-1"


def test_shell_completion_can_be_installed(capsys) -> None:
    outcome = run_saga(capsys, "--help")
    assert "--install-completion" in outcome.stdout and "--show-completion" in outcome.stdout


def test_connect_group_is_registered(capsys) -> None:
    outcome = run_saga(capsys, "connect", "--help")
    assert outcome.exit_code == 0
    for command in ("status", "restart", "pause", "resume"):
        assert command in outcome.stdout


def test_connect_status_without_connect_is_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setenv("SAGA_CONNECT_URL", f"http://127.0.0.1:{unused_port()}")
    outcome = run_saga(capsys, "connect", "status")
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("saga: kafka-connect REST at") and len(outcome.stderr.strip().splitlines()) == 1


def test_a_connector_state_reads_connects_status_document() -> None:
    status = {
        "name": "orders-outbox", "type": "source",
        "connector": {"state": "RUNNING", "worker_id": "10.0.0.5:8083"},
        "tasks": [{"id": 1, "state": "RUNNING", "worker_id": "10.0.0.6:8083"},
                  {"id": 0, "state": "FAILED", "worker_id": "10.0.0.5:8083",
                   "trace": "org.apache.kafka.connect.errors.ConnectException: boom\n\tat Foo.bar(Foo.java:1)\n"}],
    }
    state = ConnectorState.from_status("orders-outbox", status)
    assert state.failed and not state.running
    assert [(task.id, task.state) for task in state.tasks] == [(0, "FAILED"), (1, "RUNNING")]
    assert state.tasks[0].trace == "org.apache.kafka.connect.errors.ConnectException: boom"
    assert state.as_json()["tasks"][1] == {"id": 1, "state": "RUNNING", "worker": "10.0.0.6:8083", "trace": None}
