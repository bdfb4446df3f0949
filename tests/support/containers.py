"""Which stack the suite runs against: the native one (the default) or compose.yaml's containers.

    SAGA_STACK=native        (or unset) saga_cli.stack.testing: PostgreSQL, Kafka and Kafka
                             Connect as local processes, the services via `saga up`
    SAGA_STACK=containers    compose.yaml started with testcontainers' DockerCompose, when a
                             Docker engine answers (`docker info` exits 0); without one, every
                             test that needs the stack is skipped, saying so

The pytest header says which one is used ("stack: native" / "stack: containers"). The
containers' ports are published on the native defaults (127.0.0.1:55432, 9092, 8083,
8001-8003; tests/integration/test_compose_agrees.py keeps them so), so the tests reach
both the same way. `ComposeStack` has the attributes the tests use of the native
`RunningStack`: `settings`, `pg_superuser_dsn`, `ensure_services()`, `stack` (for the
Connect REST API; its process handles find nothing in containers) and
`stop_if_started_here()`; `kind` tells them apart. Tests that kill processes by pid need
the native stack.
"""
from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from saga_cli.stack.config import REPO_ROOT, StackSettings
from saga_cli.stack.stack import Stack

STACK_VARIABLE = "SAGA_STACK"
NATIVE, CONTAINERS = "native", "containers"
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
START_TIMEOUT = 600.0
"""Building the image and pulling Kafka, Debezium and PostgreSQL the first time takes a while."""


def requested() -> str:
    """native or containers, from SAGA_STACK (native when unset)."""
    value = (os.environ.get(STACK_VARIABLE) or NATIVE).strip().lower()
    if value not in (NATIVE, CONTAINERS):
        raise pytest.UsageError(f"{STACK_VARIABLE}={value!r}: expected {NATIVE} or {CONTAINERS}")
    return value


@functools.cache
def docker_engine_answers() -> bool:
    """True when a Docker engine answers `docker info` (a client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def no_engine_reason() -> str:
    return (f"{STACK_VARIABLE}=containers, but no Docker engine answers `docker info`: "
            "the tests that need the stack are skipped (unset it to use the native stack)")


def report_line() -> str:
    """The line the pytest header shows."""
    if requested() == NATIVE:
        return f"stack: {NATIVE}"
    if docker_engine_answers():
        return f"stack: {CONTAINERS} (compose.yaml through testcontainers)"
    return f"stack: {CONTAINERS} asked, not available — {no_engine_reason()}"


@dataclass
class ComposeStack:
    compose: Any  # testcontainers.compose.DockerCompose
    settings: StackSettings
    started_here: bool
    kind: str = CONTAINERS

    @property
    def pg_superuser_dsn(self) -> str:
        return self.settings.pg_superuser_dsn

    @property
    def stack(self) -> Stack:
        return Stack(self.settings)

    def ensure_services(self) -> None:
        """compose runs the services itself: wait until each answers /health."""
        for port in _service_ports():
            _wait_until(lambda: _healthy(port), f"the service on 127.0.0.1:{port} to be healthy")

    def stop_if_started_here(self) -> None:
        if self.started_here and os.environ.get("SAGA_TEST_KEEP_STACK") != "1":
            self.compose.stop()


_running: ComposeStack | None = None


def ensure_stack() -> ComposeStack:
    """compose.yaml up (built, connectors registered by its setup step, services healthy), once per
    session; skips the calling test when no Docker engine answers."""
    global _running
    if not docker_engine_answers():
        pytest.skip(no_engine_reason())
    if _running is None:
        from testcontainers.compose import DockerCompose

        settings = compose_settings()
        already_up = _healthy(_service_ports()[0])
        if not already_up:
            busy = [port for port in _published_ports() if _port_in_use(port)]
            if busy:
                raise RuntimeError(f"{STACK_VARIABLE}=containers, but 127.0.0.1 ports {busy} are taken "
                                   "(a native stack? `saga down` first)")
        compose = DockerCompose(str(REPO_ROOT), compose_file_name=COMPOSE_FILE.name, build=True, wait=False)
        print(f"[stack] {CONTAINERS}: docker compose up ({'already running' if already_up else 'starting'})", flush=True)
        compose.start()  # `up -d`: starts only what is not running
        _running = ComposeStack(compose, settings, started_here=not already_up)
        _running.ensure_services()
        for name in _connector_names():
            _running.stack.connect.wait_running(name, timeout=START_TIMEOUT)
    return _running


def running() -> ComposeStack | None:
    return _running


def compose_settings() -> StackSettings:
    """How the tests reach the containers: the published loopback ports and compose's superuser."""
    password = _compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    defaults = StackSettings()
    return StackSettings(
        pg_superuser_dsn=f"postgresql://postgres:{password}@127.0.0.1:{defaults.pg_port}/postgres",
        kafka_bootstrap=f"127.0.0.1:{defaults.kafka_port}",
        connect_url=f"http://127.0.0.1:{defaults.connect_port}",
    )


@functools.cache
def _compose() -> dict:
    import yaml

    return yaml.safe_load(COMPOSE_FILE.read_text())


def _published_ports() -> list[int]:
    return [int(str(mapping).split(":")[1]) for service in _compose()["services"].values() for mapping in service.get("ports", [])]


def _service_ports() -> list[int]:
    from saga_cli.services import SERVICES

    return list(SERVICES.values())


def _connector_names() -> list[str]:
    import json

    return [json.loads(path.read_text())["name"] for path in sorted((REPO_ROOT / "connect" / "connectors").glob("*.json"))]


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_until(condition, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting {timeout:.0f}s for {what}")
        time.sleep(1.0)
