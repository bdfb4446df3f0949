"""`saga connect status|restart|pause|resume` against the real Kafka Connect.

A throwaway connector with a task that fails reproducibly: Kafka's FileStreamSinkConnector
writing to a file in a directory that does not exist yet (its task fails at start, "Couldn't
find or create file"). Once the directory exists, `saga connect restart` brings the failed task
back the way an operator would; pause and resume act on the same connector. The outbox
connectors are never touched: the sagas others run keep flowing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

SAGA = str(Path(sys.executable).parent / "saga")
DEADLINE_S = 60


def saga(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAGA_CONNECT_URL": stack.settings.connect_url}
    return subprocess.run([SAGA, *args], capture_output=True, text=True, timeout=120, env=env)


def rest_status(stack, name: str) -> dict:
    return httpx.get(f"{stack.settings.connect_url}/connectors/{name}/status", timeout=10).json()


def wait_for(stack, name: str, done, what: str) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while not done(status := rest_status(stack, name)):
        assert time.monotonic() < deadline, f"connector {name} not {what} within {DEADLINE_S}s: {status}"
        time.sleep(0.2)
    return status


@pytest.fixture
def failing_sink(stack, tmp_path):
    """(name, the directory its task needs): a connector whose only task FAILED at start."""
    if getattr(stack, "kind", "native") != "native":
        pytest.skip("the sink writes a file on the Connect worker's machine: the native stack only")
    name = f"ops-probe-{uuid.uuid4().hex[:8]}"
    missing = tmp_path / "not-yet"
    config = {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector", "tasks.max": "1",
              "topics": name, "file": str(missing / "sink.txt")}
    answer = httpx.put(f"{stack.settings.connect_url}/connectors/{name}/config", json=config, timeout=30)
    assert answer.status_code in (200, 201), answer.text
    try:
        wait_for(stack, name, lambda s: [t.get("state") for t in s.get("tasks", [])] == ["FAILED"], "task FAILED")
        yield name, missing
    finally:
        httpx.delete(f"{stack.settings.connect_url}/connectors/{name}", timeout=30)


def test_status_shows_the_failed_task_and_restart_brings_it_back(stack, failing_sink):
    name, missing = failing_sink

    status = saga(stack, "connect", "status", name, "--json")
    assert status.returncode == 1, status.stderr  # a FAILED connector or task: exit 1, for scripts
    [shown] = json.loads(status.stdout)
    assert (shown["name"], shown["state"], shown["type"]) == (name, "RUNNING", "sink")
    [task] = shown["tasks"]
    assert task["state"] == "FAILED" and "Couldn't find or create file" in task["trace"], task
    table = saga(stack, "connect", "status", name)
    assert "FAILED" in table.stdout and name in table.stdout

    missing.mkdir()  # what the operator fixes; the task stays FAILED until it is restarted
    assert [t["state"] for t in rest_status(stack, name)["tasks"]] == ["FAILED"]
    restarted = saga(stack, "connect", "restart", name, "--json")
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout) == [{"name": name, "restarted": ["task 0"], "state": "RUNNING"}]
    assert [t["state"] for t in rest_status(stack, name)["tasks"]] == ["RUNNING"]
    assert (missing / "sink.txt").exists()  # the restarted task did open its file

    again = saga(stack, "connect", "restart", name)  # onlyFailed: a running task is left alone
    assert again.returncode == 0, again.stderr
    assert "restarted nothing" in again.stdout and "now RUNNING" in again.stdout
    assert saga(stack, "connect", "status", name).returncode == 0


def test_pause_and_resume_reach_their_state(stack, failing_sink):
    name, missing = failing_sink
    missing.mkdir()
    assert saga(stack, "connect", "restart", name).returncode == 0

    paused = saga(stack, "connect", "pause", name)
    assert paused.returncode == 0, paused.stderr
    status = rest_status(stack, name)
    assert (status["connector"]["state"], [t["state"] for t in status["tasks"]]) == ("PAUSED", ["PAUSED"])
    assert json.loads(saga(stack, "connect", "status", name, "--json").stdout)[0]["state"] == "PAUSED"

    resumed = saga(stack, "connect", "resume", name)
    assert resumed.returncode == 0, resumed.stderr
    status = rest_status(stack, name)
    assert (status["connector"]["state"], [t["state"] for t in status["tasks"]]) == ("RUNNING", ["RUNNING"])


def test_an_unknown_connector_is_one_line_naming_the_ones_there(stack):
    answer = saga(stack, "connect", "pause", "no-such-connector")
    assert answer.returncode == 1
    assert answer.stderr.startswith("saga: no connector no-such-connector") and "orders-outbox" in answer.stderr
    assert len(answer.stderr.strip().splitlines()) == 1


def test_status_lists_every_outbox_connector(stack):
    answer = saga(stack, "connect", "status", "--json")
    names = {connector["name"] for connector in json.loads(answer.stdout)}
    assert {"orders-outbox", "inventory-outbox", "payments-outbox"} <= names
