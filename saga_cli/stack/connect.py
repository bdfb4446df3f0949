"""Kafka Connect (distributed worker) with Debezium's PostgreSQL connector, and the three outbox connectors.

A connector whose task FAILED is reported with what to do (`ConnectorFailure.hint`). The one
failure the stack names itself is a lost slot: the connector's stored position (its KIP-875
offset) is older than what its replication slot holds, because the slot was dropped or
recreated. Debezium then refuses to stream (`offset.mismatch.strategy=trust_offset` in
connect/outbox-connector.json) instead of skipping the rows in between, and
`saga stack recover CONNECTOR` (saga_cli/stack/recovery.py) brings it back without a gap.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from saga_cli.stack import process
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import ConnectorsFailed, ConnectUnavailable, StackError
from saga_cli.stack.install import java_executable
from saga_cli.stack.jvm import java_command, render
from shared import descriptors


SLOT_LOST_MARKERS = (
    # Debezium (BaseSourceTask): the stored offset's LSN is older than what the slot holds, or the slot is gone.
    "is no longer available on the server",
    # Debezium (PostgresReplicationConnection): the server no longer has the WAL at the stored offset.
    "has been removed from the database write-ahead log",
)
"""Text in a failed task's trace that says its replication slot no longer holds the position it stopped at."""


CONNECTOR_TEMPLATE = "outbox-connector.json"
"""The one outbox connector config, `{{database}}` standing for each service's database."""


def connector_documents(connect_dir: Path) -> list[dict]:
    """{"name", "config"} of each service's outbox connector (shared/descriptors.py), in the
    order of the services: the template in `connect_dir` with `{{database}}` replaced. The
    `${env:…}` references stay for Connect's config provider. OSError, ValueError (not JSON)."""
    template = (connect_dir / CONNECTOR_TEMPLATE).read_text()
    return [json.loads(template.replace("{{database}}", service.database)) for service in descriptors.SERVICES]


@dataclass(frozen=True)
class ConnectorSpec:
    """One outbox connector as `connector_documents` renders it."""

    name: str
    database: str
    slot: str
    config: dict[str, str]


@dataclass(frozen=True)
class ConnectorFailure:
    """A connector (or its task) in state FAILED, with the first line of its trace."""

    connector: str
    state: str
    error: str
    slot_lost: bool

    @property
    def fix(self) -> str:
        """The command that brings it back: ``saga stack recover <connector>``."""
        return f"saga stack recover {self.connector}"

    def hint(self, log_file: Path) -> str:
        """One line: what is wrong and the command that brings the connector back."""
        if self.slot_lost:
            return (f"connector {self.connector} {self.state}: its replication slot no longer holds the position it "
                    f"stopped at (the slot was dropped or recreated), so it streams nothing rather than skip rows; "
                    f"recover with: {self.fix}")
        return (f"connector {self.connector} {self.state}: {self.error}; see {log_file}; "
                f"to restart it and republish its outbox: {self.fix}")

    def as_json(self, log_file: Path) -> dict:
        """{"connector", "state", "slot_lost", "error", "fix", "hint"}, the hint pointing at `log_file`."""
        return {"connector": self.connector, "state": self.state, "slot_lost": self.slot_lost,
                "error": self.error, "fix": self.fix, "hint": self.hint(log_file)}


class Connect:
    """The stack's Kafka Connect worker (distributed mode, REST on `connect_port`) and its outbox connectors."""

    name = "kafka-connect"

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.config_file = settings.home / "connect" / "worker.properties"
        self.pid_file = settings.run_dir / "kafka-connect.pid"
        self.log_file = settings.log_dir / "kafka-connect.log"
        self.markers = ("-Dsaga.component=kafka-connect", f"-Dsaga.home={settings.home}")

    def find(self):
        """The running worker's process, or None."""
        return process.find_process(self.pid_file, *self.markers)

    @property
    def environment(self) -> dict[str, str]:
        """What the connectors' ${env:…} references resolve to: the database address and Debezium's credentials."""
        s = self.settings
        return {
            "SAGA_PG_HOST": s.pg_host,
            "SAGA_PG_PORT": str(s.pg_port),
            "SAGA_DEBEZIUM_USER": s.debezium_user,
            "SAGA_DEBEZIUM_PASSWORD": s.debezium_password,
        }

    def start(self) -> None:
        """Render worker.properties and start the worker; return once its REST API answers. StackError
        when Java is missing or too old, the port is taken, or it exits or does not answer within
        `start_timeout` seconds (120)."""
        s = self.settings
        java = java_executable(s)
        process.ensure_port_free(s.connect_port, "kafka-connect")
        render(
            s.connect_dir / "worker.properties",
            self.config_file,
            bootstrap=s.kafka_bootstrap,
            rest_port=s.connect_port,
            plugin_path=s.plugin_dir,
        )
        process.spawn(
            java_command(s, java, "kafka-connect", s.connect_heap,
                         "org.apache.kafka.connect.cli.ConnectDistributed", str(self.config_file)),
            s.log_dir / "kafka-connect.out",
            self.pid_file,
            env=self.environment,
        )
        process.wait_until(
            self._answers,
            timeout=s.start_timeout,
            what="kafka-connect",
            log_file=self.log_file,
            alive=lambda: self.find() is not None,
            interval=0.5,
        )

    def stop(self) -> None:
        """SIGTERM the worker, SIGKILL after 60 s; nothing when it is not running."""
        found = self.find()
        if found:
            process.terminate(found, timeout=60)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.settings.connect_url}/connectors", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # --- connectors -----------------------------------------------------------------
    def connector_documents(self) -> list[dict]:
        """Each service's outbox connector: connect/outbox-connector.json rendered per database."""
        return connector_documents(self.settings.connect_dir)

    def specs(self) -> list[ConnectorSpec]:
        """Every outbox connector, with the database and slot it reads."""
        specs = []
        for spec in self.connector_documents():
            config = spec["config"]
            specs.append(ConnectorSpec(spec["name"], config["database.dbname"], config["slot.name"], config))
        return specs

    def register_connectors(self) -> list[str]:
        """PUT each connector's config (idempotent: unchanged configs are a no-op) and wait until it and its task run.
        Connectors that FAILED are reported together (ConnectorsFailed, one hint each) after the others ran.
        ConnectUnavailable when the worker does not answer or cannot take a config yet (409, 5xx); StackError
        when it refuses one (4xx)."""
        names = []
        for spec in self.connector_documents():
            name = spec["name"]
            response = self._request("PUT", f"/connectors/{name}/config", json=spec["config"])
            if response.status_code == 409 or response.status_code >= 500:  # rebalancing, or still starting
                raise ConnectUnavailable(f"connector {name} could not be registered yet: {_message(response)}")
            if response.status_code >= 400:
                raise StackError(f"connector {name} was refused: {_message(response)}")
            names.append(name)
        failures: list[ConnectorFailure] = []
        for name in names:
            try:
                self.wait_running(name)
            except ConnectorsFailed as failed:
                failures.extend(failed.failures)
        if failures:
            raise ConnectorsFailed(failures, [failure.hint(self.log_file) for failure in failures])
        return names

    def wait_running(self, name: str, timeout: float | None = None) -> None:
        """Until the connector and its task are RUNNING; ConnectorsFailed (with the command that recovers it) once
        either FAILED, StackError after `timeout` (start_timeout by default)."""
        deadline = time.monotonic() + (timeout or self.settings.start_timeout)
        state = "unknown"
        while time.monotonic() < deadline:
            status = self.connector_status(name)
            state = _summary(status)
            if state == "RUNNING":
                return
            if "FAILED" in state:
                failure = _failure(name, status)
                raise ConnectorsFailed([failure], [failure.hint(self.log_file)])
            time.sleep(0.5)
        raise StackError(f"connector {name} is {state}, not RUNNING after {timeout or self.settings.start_timeout:.0f}s; see {self.log_file}")

    def wait_state(self, name: str, state: str, timeout: float = 60.0) -> None:
        """Until the connector itself (not its tasks) is in `state`, e.g. STOPPED after PUT /stop."""
        deadline = time.monotonic() + timeout
        while (current := self.connector_status(name).get("connector", {}).get("state", "MISSING")) != state:
            if time.monotonic() > deadline:
                raise StackError(f"connector {name} is {current}, not {state} after {timeout:.0f}s; see {self.log_file}")
            time.sleep(0.2)

    def connector_failures(self) -> list[ConnectorFailure]:
        """The connectors whose connector or task is FAILED, each with the first line of its trace."""
        failures = []
        for spec in self.specs():
            status = self.connector_status(spec.name)
            if "FAILED" in _summary(status):
                failures.append(_failure(spec.name, status))
        return failures

    # --- KIP-875: stop, resume, offsets ------------------------------------------------
    def stop_connector(self, name: str) -> None:
        """PUT /connectors/{name}/stop and wait until it is STOPPED (its tasks shut down, its slot let go)."""
        self._expect(self._request("PUT", f"/connectors/{name}/stop"), f"connector {name} could not be stopped")
        self.wait_state(name, "STOPPED")

    def pause_connector(self, name: str) -> None:
        """PUT /connectors/{name}/pause and wait until it and its task are PAUSED (its rows wait
        in the outbox and its slot keeps the WAL until it resumes)."""
        self._expect(self._request("PUT", f"/connectors/{name}/pause"), f"connector {name} could not be paused")
        deadline = time.monotonic() + 60
        while (state := _summary(self.connector_status(name))) != "PAUSED/PAUSED":
            if time.monotonic() > deadline:
                raise StackError(f"connector {name} is {state}, not PAUSED after 60s; see {self.log_file}")
            time.sleep(0.1)

    def resume_connector(self, name: str) -> None:
        """PUT /connectors/{name}/resume and wait until it and its task run."""
        self._expect(self._request("PUT", f"/connectors/{name}/resume"), f"connector {name} could not be resumed")
        self.wait_running(name)

    def stored_offsets(self, name: str) -> list[dict]:
        """The connector's source offsets as Connect stores them: [{"partition": …, "offset": …}]."""
        response = self._expect(self._request("GET", f"/connectors/{name}/offsets"), f"connector {name}'s offsets")
        return response.json().get("offsets", [])

    def alter_offsets(self, name: str, offsets: list[dict]) -> None:
        """PATCH /connectors/{name}/offsets (the connector must be STOPPED)."""
        self._expect(self._request("PATCH", f"/connectors/{name}/offsets", json={"offsets": offsets}),
                     f"connector {name}'s offsets could not be altered")

    def put_config(self, spec: ConnectorSpec) -> None:
        """Register (or update) one connector with its shipped config."""
        self._expect(self._request("PUT", f"/connectors/{spec.name}/config", json=spec.config),
                     f"connector {spec.name} was refused")

    def _expect(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code >= 400:
            raise StackError(f"{what}: {_message(response)}")
        return response

    def connector_status(self, name: str) -> dict:
        """Connect's status document of connector `name`; {} when Connect answers anything but 200 (e.g. no
        such connector). ConnectUnavailable when the worker does not answer."""
        response = self._request("GET", f"/connectors/{name}/status")
        return response.json() if response.status_code == 200 else {}

    def connector_states(self) -> dict[str, str]:
        """{connector name: "RUNNING", "FAILED", "task FAILED", "MISSING", "<connector>/<tasks>" or
        "unreachable"} for every outbox connector."""
        states = {}
        for spec in self.connector_documents():
            name = spec["name"]
            try:
                states[name] = _summary(self.connector_status(name))
            except StackError:
                states[name] = "unreachable"
        return states

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return httpx.request(method, f"{self.settings.connect_url}{path}", timeout=30, **kwargs)
        except httpx.HTTPError as error:
            raise ConnectUnavailable(f"kafka-connect REST at {self.settings.connect_url} does not answer: {error}") from error


def _summary(status: dict) -> str:
    if not status:
        return "MISSING"
    connector = status.get("connector", {}).get("state", "UNKNOWN")
    tasks = [task.get("state", "UNKNOWN") for task in status.get("tasks", [])]
    if connector == "RUNNING" and tasks and all(task == "RUNNING" for task in tasks):
        return "RUNNING"
    if connector == "FAILED" or "FAILED" in tasks:
        return "FAILED" if connector == "FAILED" else "task FAILED"
    return f"{connector}/{','.join(tasks) or 'no task'}"


def _failure(name: str, status: dict) -> ConnectorFailure:
    traces = [part.get("trace") or "" for part in [status.get("connector", {}), *status.get("tasks", [])]]
    slot_lost = any(marker in trace for trace in traces for marker in SLOT_LOST_MARKERS)
    return ConnectorFailure(name, _summary(status), _first_trace_line(status), slot_lost)


def _first_trace_line(status: dict) -> str:
    for part in [status.get("connector", {}), *status.get("tasks", [])]:
        if part.get("trace"):
            return part["trace"].strip().splitlines()[0][:300]
    return "no trace"


def _message(response: httpx.Response) -> str:
    try:
        return response.json().get("message", response.text)[:300]
    except ValueError:
        return response.text[:300]
