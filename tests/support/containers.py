"""Which stack the suite runs against: the native one (the default) or compose.yaml's containers.

    SAGA_STACK=native        (or unset) saga_cli.stack.testing: PostgreSQL, Kafka and Kafka
                             Connect as local processes, the services via `saga up`
    SAGA_STACK=containers    compose.yaml started with testcontainers' DockerCompose, when a
                             Docker engine answers (`docker info` exits 0) and the `docker
                             compose` plugin is there; without them, every test that needs the
                             stack is skipped, saying which is missing

The pytest header says which one is used ("stack: native" / "stack: containers"). The
containers' ports are published on the native defaults (127.0.0.1:15432, 9092, 8083,
8001-8003; tests/integration/test_compose_agrees.py keeps them so), so the tests reach
both the same way. `ComposeStack` has the attributes the tests use of the native
`RunningStack`: `settings`, `pg_superuser_dsn`, `ensure_services()`, `stack` (for the
Connect REST API; its process handles find nothing in containers) and
`stop_if_started_here()`; `kind` tells them apart.

With containers, the tests that need the native stack's processes, pids or files (NATIVE_ONLY)
are skipped, saying why; and compose.yaml is built, pulled and started once after collection,
before the first test (`start_before_tests`), so none of that counts against a test's timeout.
"""
from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
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
"""Seconds to wait for the services and connectors once `docker compose up` returned."""

NATIVE_ONLY: dict[str, str] = {
    "tests/faults/": "the fault tests kill, stop and restart the stack's parts and the services by pid "
                     "(saga_cli.stack and saga_cli.services process handles), which only the native stack has",
    "tests/integration/test_demo.py": "it compares the stack's process ids before and after `make demo`",
    "tests/integration/test_stack_lifecycle.py": "`saga stack up | down | status` start and stop the native stack",
    "tests/integration/test_observability.py::test_each_consumed_message_is_one_json_log_line":
        "it reads the services' log files under SAGA_HOME; in containers their lines go to `docker compose logs`",
}
"""Test node id prefix → why it needs the native stack; the `faults` marker says the same."""

STACK_FIXTURES = frozenset({"stack", "services", "pg_superuser_dsn"})
"""A test using one of these needs a running stack (pg_superuser_dsn not when SAGA_TEST_PG_DSN names a server)."""


def requested() -> str:
    """native or containers, from SAGA_STACK (native when unset); pytest.UsageError for another value."""
    value = (os.environ.get(STACK_VARIABLE) or NATIVE).strip().lower()
    if value not in (NATIVE, CONTAINERS):
        raise pytest.UsageError(f"{STACK_VARIABLE}={value!r}: expected {NATIVE} or {CONTAINERS}")
    return value


@functools.cache
def unavailable_reason() -> str | None:
    """None when compose.yaml can be started here; otherwise why not, as the skip message says it:
    no `docker` client, no engine answering `docker info`, or no `docker compose` plugin."""
    prefix = f"{STACK_VARIABLE}=containers, but "
    suffix = ("; the tests that need the stack are skipped (unset it to use the native stack). That compose.yaml "
              "starts cold and runs the saga can only be shown with both; tests/integration/test_compose_agrees.py "
              "checks its files without them")
    if shutil.which("docker") is None:
        return f"{prefix}there is no `docker` client on PATH{suffix}"
    if not _docker_succeeds("info"):
        return f"{prefix}no Docker engine answers `docker info`{suffix}"
    if not _docker_succeeds("compose", "version"):
        return f"{prefix}the `docker compose` plugin is missing (`docker compose version` fails){suffix}"
    return None


def _docker_succeeds(*args: str) -> bool:
    try:
        return subprocess.run(["docker", *args], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def report_line() -> str:
    """The line the pytest header shows."""
    if requested() == NATIVE:
        return f"stack: {NATIVE}"
    reason = unavailable_reason()
    if reason is None:
        return f"stack: {CONTAINERS} (compose.yaml through testcontainers)"
    return f"stack: {CONTAINERS} asked, not available — {reason}"


def native_only_reason(nodeid: str, marker_names: Iterable[str]) -> str | None:
    """Why the test `nodeid` (with these marker names) needs the native stack, or None when it does not."""
    if "faults" in set(marker_names):
        return NATIVE_ONLY["tests/faults/"]
    return next((why for prefix, why in NATIVE_ONLY.items() if nodeid.startswith(prefix)), None)


def skip_native_only(items: list[pytest.Item]) -> None:
    """With SAGA_STACK=containers, mark every test that needs the native stack skipped, saying why."""
    if requested() != CONTAINERS:
        return
    for item in items:
        why = native_only_reason(item.nodeid, (mark.name for mark in item.iter_markers()))
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=f"{STACK_VARIABLE}=containers: {why}; it runs with the native stack"))


def needs_stack(item: pytest.Item) -> bool:
    """Whether `item` will ask for the running stack (and is not skipped already)."""
    if any(mark.name == "skip" for mark in item.iter_markers()):
        return False
    fixtures = set(getattr(item, "fixturenames", ()))
    if os.environ.get("SAGA_TEST_PG_DSN"):
        fixtures.discard("pg_superuser_dsn")
    return bool(fixtures & STACK_FIXTURES)


_start_error: BaseException | None = None


def start_before_tests(items: list[pytest.Item]) -> None:
    """With SAGA_STACK=containers and a test among `items` that needs the stack: build, pull and start
    compose.yaml now (after collection), outside every test's timeout. A failure is kept and raised
    by ensure_stack() in each test that needs the stack; with nothing to start it on, nothing is done
    here and those tests skip."""
    global _start_error
    if requested() != CONTAINERS or unavailable_reason() is not None or not any(needs_stack(item) for item in items):
        return
    try:
        ensure_stack()
    except Exception as error:  # reported by each test that needs the stack, not as a crash of the session
        _start_error = error


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
    """compose.yaml up (images built and pulled, connectors registered by its setup step, services healthy), once
    per session; skips the calling test when compose cannot run here (unavailable_reason), raises
    RuntimeError when it could not be started (ports taken, or start_before_tests failed)."""
    global _running
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if _start_error is not None:
        raise RuntimeError(f"compose.yaml did not start before the tests: {_start_error}") from _start_error
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
        compose.start()  # `up --build -d` (pulls what is missing): starts only what is not running
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
    from saga_cli.stack.connect import connector_documents

    return [document["name"] for document in connector_documents(REPO_ROOT / "connect")]


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
