"""The supervisor (saga_cli/supervise.py) keeps a command running: it restarts it with backoff after
any exit, records restarts and the last exit in its state file, stops it on SIGTERM, watches a
process that was already running, and lets only one supervisor per service run.

The supervised command is a small sleeper module (`python -m sleeper`, like `python -m order_svc`);
its supervisor is a real process. Each test waits on conditions with deadlines.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from saga_cli import supervise

pytestmark = pytest.mark.unit

SLEEPER = """
import os, sys, time
mode = os.environ.get("SLEEPER_MODE", "sleep")
if mode == "exit70":
    sys.exit(70)
time.sleep(120)
"""


class Supervised:
    def __init__(self, home: Path, mode: str = "sleep") -> None:
        self.home = home
        self.files = supervise.files(home / "run", "sleeper")
        self.env = {**os.environ, "SLEEPER_MODE": mode}
        self.processes: list[subprocess.Popen] = []

    def start_supervisor(self) -> subprocess.Popen:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "saga_cli.supervise", "--service=sleeper", "--run-dir", str(self.home / "run"),
             "--", sys.executable, "-m", "sleeper"],
            cwd=self.home, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.processes.append(supervisor)
        return supervisor

    def state(self) -> dict[str, Any]:
        return supervise.read_state(self.files.state) or {}

    def child(self) -> psutil.Process | None:
        try:
            process = psutil.Process(int(self.files.pid.read_text()))
            return process if process.status() != psutil.STATUS_ZOMBIE else None
        except (OSError, ValueError, psutil.Error):
            return None


def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    yield tmp_path


@pytest.fixture
def supervised(home: Path) -> Iterator[Supervised]:
    supervised = Supervised(home)
    yield supervised
    for process in supervised.processes:
        if process.poll() is None:
            process.terminate()
            process.wait(40)
    child = supervised.child()
    if child is not None and "sleeper" in " ".join(child.cmdline()):
        child.kill()


def test_a_child_killed_with_sigkill_is_back_within_a_second_or_two_and_counted(supervised: Supervised) -> None:
    supervisor = supervised.start_supervisor()
    first = until(lambda: supervised.state().get("state") == "running" and supervised.child(), "the child running")
    assert supervised.state()["restarts"] == 0 and supervised.state()["supervisor_pid"] == supervisor.pid
    assert supervised.files.supervisor_pid.read_text().strip() == str(supervisor.pid)

    killed_at = time.monotonic()
    first.send_signal(signal.SIGKILL)
    second = until(lambda: (child := supervised.child()) and child.pid != first.pid and child, "a new child", timeout=5)
    took = time.monotonic() - killed_at

    state = until(lambda: (s := supervised.state()).get("state") == "running" and s, "running again")
    assert state["restarts"] == 1 and state["pid"] == second.pid
    assert {k: state["last_exit"][k] for k in ("code", "signal", "description", "pid")} == {
        "code": None, "signal": 9, "description": "killed by signal 9 (SIGKILL)", "pid": first.pid}
    assert 0.9 <= took < 3.0, f"restarted {took:.1f}s after the kill"


def test_sigterm_stops_the_child_and_then_the_supervisor(supervised: Supervised) -> None:
    supervisor = supervised.start_supervisor()
    child = until(lambda: supervised.state().get("state") == "running" and supervised.child(), "the child running")

    supervisor.send_signal(signal.SIGTERM)

    assert supervisor.wait(10) == 0
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    state = supervised.state()
    assert state["state"] == "stopped" and state["pid"] is None
    assert state["last_exit"]["signal"] == signal.SIGTERM
    lines = [json.loads(line) for line in supervisor.stdout.read().splitlines() if line.startswith("{")]
    assert [line["message"] for line in lines][-1] == "stopped"
    assert all(line["logger"] == "saga_cli.supervise" and line["service"] == "sleeper" for line in lines)


def test_quick_exits_back_off_1_then_2_then_4_seconds_and_sigusr1_cuts_a_backoff_short(home: Path) -> None:
    supervised = Supervised(home, mode="exit70")
    supervisor = supervised.start_supervisor()
    try:
        started = time.monotonic()
        until(lambda: supervised.state().get("restarts") == 2 and supervised.state().get("state") == "backoff",
              "two restarts, waiting again", timeout=8)
        took = time.monotonic() - started
        state = supervised.state()
        assert state["last_exit"]["code"] == 70 and state["last_exit"]["description"] == "exit code 70"
        assert 2.8 <= took < 6.0, f"1 s + 2 s of backoff took {took:.1f}s"  # the next wait is 4 s

        woken = time.monotonic()
        supervisor.send_signal(signal.SIGUSR1)
        until(lambda: supervised.state().get("restarts") == 3, "the third restart at once", timeout=2)
        assert time.monotonic() - woken < 1.5
    finally:
        supervisor.terminate()
        assert supervisor.wait(10) == 0


def test_a_service_already_running_is_watched_and_restarted_once_gone(supervised: Supervised, home: Path) -> None:
    running = subprocess.Popen([sys.executable, "-m", "sleeper"], cwd=home, env=supervised.env)
    supervised.processes.append(running)
    supervised.files.pid.parent.mkdir(parents=True, exist_ok=True)
    supervised.files.pid.write_text(f"{running.pid}\n")

    supervised.start_supervisor()
    until(lambda: supervised.state().get("pid") == running.pid, "watching the running service")
    running.kill()
    running.wait(5)

    restarted = until(lambda: (child := supervised.child()) and child.pid != running.pid and child, "a new child")
    state = until(lambda: (s := supervised.state()).get("pid") == restarted.pid and s, "its state")
    assert state["restarts"] == 1
    assert state["last_exit"]["code"] is None and state["last_exit"]["signal"] is None
    assert "status unknown" in state["last_exit"]["description"]


def test_a_second_supervisor_of_the_same_service_exits_at_once(supervised: Supervised) -> None:
    first = supervised.start_supervisor()
    until(lambda: supervised.state().get("state") == "running", "the first supervisor running")

    second = supervised.start_supervisor()

    assert second.wait(10) == 0
    assert "another supervisor keeps this service running" in second.stdout.read()
    assert first.poll() is None
    assert supervised.files.supervisor_pid.read_text().strip() == str(first.pid)


def test_exits_are_described_by_code_or_signal() -> None:
    assert supervise.describe_exit(70)["description"] == "exit code 70"
    assert supervise.describe_exit(-9) == {"code": None, "signal": 9, "description": "killed by signal 9 (SIGKILL)"}
    assert supervise.describe_exit(None)["code"] is None
