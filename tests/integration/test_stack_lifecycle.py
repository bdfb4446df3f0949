"""`saga stack up | down | status` as a user runs them, on the real stack."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest

pytestmark = pytest.mark.integration

SAGA = str(Path(sys.executable).with_name("saga"))


def saga(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SAGA, *args], capture_output=True, text=True, timeout=timeout, env=env)


def our_ports(settings) -> list[int]:
    return [settings.pg_port, settings.kafka_port, settings.kafka_controller_port, settings.connect_port]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def our_processes(settings) -> list[psutil.Process]:
    markers = (f"-Dsaga.home={settings.home}", str(settings.home / "pg" / "data"))
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmdline for m in markers):
            found.append(process)
    return found


def test_status_json_reports_every_component_running(stack):
    result = saga("stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    components = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    assert set(components) == {"postgres", "kafka", "kafka-connect"}
    for component in components.values():
        assert component["state"] == "running"
        assert psutil.pid_exists(component["pid"])
    assert set(components["kafka-connect"]["connectors"].values()) == {"RUNNING"}


async def test_each_service_role_reaches_only_its_own_database(stack):
    settings = stack.settings
    own = await asyncpg.connect(settings.service_dsn("orders"))
    await own.close()
    foreign = settings.service_dsn("orders").rsplit("/", 1)[0] + "/payments"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(foreign)


async def test_debezium_role_can_read_the_outbox_but_not_write_it(stack):
    settings = stack.settings
    conn = await asyncpg.connect(
        f"postgresql://{settings.debezium_user}:{settings.debezium_password}@127.0.0.1:{settings.pg_port}/orders"
    )
    try:
        await conn.fetch("SELECT id FROM outbox LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM outbox")
    finally:
        await conn.close()


def test_up_without_java_fails_with_one_line(stack, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(Path(sys.executable).parent)
    result = saga("stack", "up", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "Java is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_leaves_nothing_then_up_reports_a_taken_port_then_comes_back(stack):
    settings = stack.settings
    down = saga("stack", "down")
    assert down.returncode == 0, down.stderr
    assert our_processes(settings) == []
    assert [port for port in our_ports(settings) if listening(port)] == []

    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", settings.connect_port))
    squatter.listen()
    try:
        blocked = saga("stack", "up")
    finally:
        squatter.close()
    assert blocked.returncode == 1
    assert f"port {settings.connect_port} needed by kafka-connect is taken" in blocked.stderr
    assert "Traceback" not in blocked.stderr

    up = saga("stack", "up")
    assert up.returncode == 0, up.stderr
    again = saga("stack", "up")
    assert again.returncode == 0, again.stderr
    for name in ("postgres", "kafka", "kafka-connect"):
        assert f"{name:<14} already running" in again.stderr
