"""Keeps one service running: `saga up` starts each service under one of these.

    python -m saga_cli.supervise --service=order_svc --run-dir .stack/run -- python -m order_svc

The supervisor starts the command, writes its pid to the service's pid file (where `saga status`,
`saga down` and the tests find the service), and when it exits — a crash, a bug path's
os._exit(70), a kill -9 — starts it again after a backoff: 1 s, doubling up to 30 s, back to
1 s once a run lasted a minute. It never gives up. Its state file (JSON, replaced whole on
every change) says what `saga status` shows: the service's pid, how many restarts, the last
exit (code or signal) and when the next start is due.

Signals: SIGTERM or SIGINT stop it — the service gets SIGTERM, then SIGKILL after 30 s, and
the supervisor exits (what `saga down` does); SIGUSR1 cuts a backoff short (what `saga up` does
for a service that is down). A service that was already running when the supervisor started (it
was started before supervision, or its supervisor was killed) is watched by its pid and
restarted once it is gone; its exit status cannot be known then.

Its files in the run folder (`files`): the service's pid file, its own pid file (locked while it
runs, so a second supervisor of the same service exits at once) and its state file.

Each of its log lines is one JSON object, like the services' own, in the service's log file.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

BACKOFF_FIRST_S = 1.0
"""The wait before the first restart after a run that lasted at least STEADY_S."""
BACKOFF_MAX_S = 30.0
"""The longest wait before a restart: each quick exit doubles the wait up to this."""
STEADY_S = 60.0
"""A run that lasted this long resets the backoff to BACKOFF_FIRST_S."""
STOP_GRACE_S = 30.0
"""How long the service has to stop after SIGTERM before it gets SIGKILL."""
POLL_S = 0.1

SERVICE_FLAG = "--service"
"""`--service=NAME` as one word of the supervisor's command line: what `saga` finds it by."""


@dataclass(frozen=True)
class Files:
    """Where a supervised service's pids and state are kept."""

    pid: Path
    """The service's pid (written by the supervisor at each start)."""
    supervisor_pid: Path
    """The supervisor's pid, written and locked by the supervisor itself."""
    state: Path
    """The supervisor's state (JSON): see `Supervisor._write`."""


def files(run_dir: Path, service: str) -> Files:
    """The files of `service` in `run_dir` (the stack's run folder)."""
    return Files(run_dir / f"{service}.pid", run_dir / f"{service}.supervisor.pid", run_dir / f"{service}.supervisor.json")


def describe_exit(returncode: int | None) -> dict[str, Any]:
    """A process's end as the state file records it: {"code", "signal", "description"}.
    `returncode` is Popen's (negative: the signal that killed it); None when it is unknown."""
    if returncode is None:
        return {"code": None, "signal": None, "description": "ended (not started by this supervisor: status unknown)"}
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return {"code": None, "signal": -returncode, "description": f"killed by signal {-returncode} ({name})"}
    return {"code": returncode, "signal": None, "description": f"exit code {returncode}"}


def read_state(state_file: Path) -> dict[str, Any] | None:
    """The supervisor's last written state, or None when there is none (or it is unreadable)."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


@dataclass
class _Adopted:
    """A running service this supervisor did not start: watched by its pid."""

    process: psutil.Process
    returncode: None = None
    """Never known: the status of a process goes to its parent."""

    @property
    def pid(self) -> int:
        """The adopted process's pid."""
        return self.process.pid

    def poll(self) -> bool | None:
        """None while it runs; True once it ended."""
        try:
            if self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            pass
        return True

    def send_signal(self, signum: int) -> None:
        """Send `signum` to it; nothing if it is gone or not ours to signal."""
        try:
            self.process.send_signal(signum)
        except psutil.Error:
            pass


class Supervisor:
    """Keeps one service's process running (`run`): restarts it after a backoff when it exits, records
    its pid and state (restarts, last exit) in the run folder, stops it on SIGTERM or SIGINT (the
    module's docstring)."""

    def __init__(self, service: str, command: list[str], where: Files) -> None:
        self.service = service
        self.command = command
        self.pid_file = where.pid
        self.state_file = where.state
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self.stopping = False
        self.woken = False
        self.started_at = now()

    def run(self) -> int:
        """Keep the service running until SIGTERM or SIGINT; then stop it and return 0."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGUSR1, self._wake)
        delay = BACKOFF_FIRST_S
        child: subprocess.Popen | _Adopted | None = self._running_service()
        if child is not None:
            self._log("watching the service already running", pid=child.pid)
        while not self.stopping:
            child = child or self._start()
            started = time.monotonic()
            if child is not None:
                self._write("running", child.pid)
                self._wait(child)
            ran = time.monotonic() - started
            returncode = 127 if child is None else child.returncode  # None: adopted, its status unknown
            self.last_exit = {**describe_exit(returncode), "pid": child.pid if child else None, "at": now(),
                              "ran_s": round(ran, 1)}
            child = None
            if self.stopping:
                break
            if ran >= STEADY_S:
                delay = BACKOFF_FIRST_S
            self._log(f"the service ended after {ran:.1f}s ({self.last_exit['description']}); restarting in {delay:g}s",
                      level="warning", last_exit=self.last_exit)
            self._write("backoff", None, next_start_at=now(delay))
            self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            if not self.stopping:
                self.restarts += 1
        self._write("stopped", None)
        self._log("stopped", last_exit=self.last_exit)
        return 0

    # --- the child ------------------------------------------------------------------------------
    def _start(self) -> subprocess.Popen | None:
        try:
            child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        except OSError as error:
            self._log(f"cannot start {self.command!r}: {error}", level="error")
            return None
        self.pid_file.write_text(f"{child.pid}\n")
        self._log("started the service", pid=child.pid, restarts=self.restarts)
        return child

    def _wait(self, child: subprocess.Popen | _Adopted) -> None:
        """Until the child ends; once stopping, SIGTERM it, and SIGKILL it after STOP_GRACE_S."""
        terminated_at: float | None = None
        while True:
            if child.poll() is not None:
                return
            if self.stopping and terminated_at is None:
                child.send_signal(signal.SIGTERM)
                terminated_at = time.monotonic()
                self._write("stopping", child.pid)
            elif terminated_at is not None and time.monotonic() - terminated_at > STOP_GRACE_S:
                self._log(f"the service did not stop within {STOP_GRACE_S:g}s of SIGTERM: SIGKILL", level="warning")
                child.send_signal(signal.SIGKILL)
                terminated_at = float("inf")
            time.sleep(POLL_S)

    def _running_service(self) -> _Adopted | None:
        """The service this supervisor's pid file names, if it runs already (`-m SERVICE`)."""
        try:
            process = psutil.Process(int(self.pid_file.read_text().split()[0]))
            cmdline = process.cmdline()
            if process.status() != psutil.STATUS_ZOMBIE and "-m" in cmdline and self.service in cmdline \
                    and not any(word.startswith(SERVICE_FLAG) for word in cmdline):
                return _Adopted(process)
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def _sleep(self, seconds: float) -> None:
        self.woken = False
        until = time.monotonic() + seconds
        while time.monotonic() < until and not (self.stopping or self.woken):
            time.sleep(POLL_S)

    # --- signals, state and log -----------------------------------------------------------------
    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _wake(self, signum: int, frame: Any) -> None:
        self.woken = True

    def _write(self, state: str, pid: int | None, next_start_at: str | None = None) -> None:
        document = {
            "service": self.service, "supervisor_pid": os.getpid(), "state": state, "pid": pid,
            "restarts": self.restarts, "last_exit": self.last_exit, "started_at": self.started_at,
            "next_start_at": next_start_at,
        }
        partial = self.state_file.with_name(self.state_file.name + ".partial")
        partial.write_text(json.dumps(document) + "\n")
        os.replace(partial, self.state_file)

    def _log(self, message: str, level: str = "info", **fields: Any) -> None:
        line = {"timestamp": now(), "level": level, "service": self.service, "logger": "saga_cli.supervise",
                "message": message, **fields}
        print(json.dumps(line), flush=True)


def now(later: float = 0.0) -> str:
    """UTC time `later` seconds from now in ISO-8601 with milliseconds (how the state file says when)."""
    return datetime.fromtimestamp(time.time() + later, timezone.utc).isoformat(timespec="milliseconds")


def main(argv: list[str] | None = None) -> int:
    """The command line: `--service=NAME --run-dir DIR -- COMMAND…`."""
    parser = argparse.ArgumentParser(prog="python -m saga_cli.supervise", description="Keep one service running.")
    parser.add_argument(SERVICE_FLAG, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("the command to supervise is missing (after --)")
    where = files(args.run_dir, args.service)
    where.supervisor_pid.parent.mkdir(parents=True, exist_ok=True)
    own = open(where.supervisor_pid, "a+")  # held (and locked) for as long as this process runs
    try:
        fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # `saga up` twice at once: the first one's supervisor does the work
        print(json.dumps({"timestamp": now(), "level": "info", "service": args.service, "logger": "saga_cli.supervise",
                          "message": "another supervisor keeps this service running: exiting"}), flush=True)
        return 0
    own.truncate(0)
    own.write(f"{os.getpid()}\n")
    own.flush()
    return Supervisor(args.service, command, where).run()


if __name__ == "__main__":
    sys.exit(main())
