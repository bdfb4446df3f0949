"""Kafka Connect (distributed worker) with Debezium's PostgreSQL connector, and the three outbox connectors."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from saga_cli.stack import process
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError
from saga_cli.stack.install import java_executable
from saga_cli.stack.jvm import java_command, render


class Connect:
    name = "kafka-connect"

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.config_file = settings.home / "connect" / "worker.properties"
        self.pid_file = settings.run_dir / "kafka-connect.pid"
        self.log_file = settings.log_dir / "kafka-connect.log"
        self.markers = ("-Dsaga.component=kafka-connect", f"-Dsaga.home={settings.home}")

    def find(self):
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
        found = self.find()
        if found:
            process.terminate(found, timeout=60)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.settings.connect_url}/connectors", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # --- connectors -----------------------------------------------------------------
    def connector_files(self) -> list[Path]:
        return sorted((self.settings.connect_dir / "connectors").glob("*.json"))

    def register_connectors(self) -> list[str]:
        """PUT each connector's config (idempotent: unchanged configs are a no-op) and wait until it and its task run."""
        names = []
        for path in self.connector_files():
            spec = json.loads(path.read_text())
            name = spec["name"]
            response = self._request("PUT", f"/connectors/{name}/config", json=spec["config"])
            if response.status_code >= 400:
                raise StackError(f"connector {name} was refused: {_message(response)}")
            names.append(name)
        for name in names:
            self.wait_running(name)
        return names

    def wait_running(self, name: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.settings.start_timeout)
        state = "unknown"
        while time.monotonic() < deadline:
            status = self.connector_status(name)
            state = _summary(status)
            if state == "RUNNING":
                return
            if "FAILED" in state:
                trace = _first_trace_line(status)
                raise StackError(f"connector {name} {state}: {trace}; see {self.log_file}")
            time.sleep(0.5)
        raise StackError(f"connector {name} is {state}, not RUNNING after {timeout or self.settings.start_timeout:.0f}s; see {self.log_file}")

    def connector_status(self, name: str) -> dict:
        response = self._request("GET", f"/connectors/{name}/status")
        return response.json() if response.status_code == 200 else {}

    def connector_states(self) -> dict[str, str]:
        states = {}
        for path in self.connector_files():
            name = json.loads(path.read_text())["name"]
            try:
                states[name] = _summary(self.connector_status(name))
            except StackError:
                states[name] = "unreachable"
        return states

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return httpx.request(method, f"{self.settings.connect_url}{path}", timeout=30, **kwargs)
        except httpx.HTTPError as error:
            raise StackError(f"kafka-connect REST at {self.settings.connect_url} does not answer: {error}") from error


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
