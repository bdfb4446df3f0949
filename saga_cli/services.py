"""The three services as processes of their own (`python -m <service>`), each kept running by its
supervisor (`python -m saga_cli.supervise`, saga_cli/supervise.py), with pid files, state and logs
in the stack's home.

`up` starts what is not running: a service that is down gets a supervisor (or, when its supervisor
is waiting out a backoff, is started at once); a service that runs without one (started before
supervision, or its supervisor was killed) gets one that watches it. `down` stops each supervisor,
which stops its service, and then any service left without one. `Service.status` is what
`saga status` shows: the service's pid, its restarts and its last exit.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

import httpx
import psutil

from saga_cli import supervise
from saga_cli.stack import process
from shared import descriptors
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError

SERVICES = {service.name: service.http_port for service in descriptors.SERVICES}
"""service name → its default HTTP port (shared/descriptors.py)."""
DATABASES = {service.name: service.database for service in descriptors.SERVICES}
"""service name → its database."""


class Service:
    """One service process as `saga up`/`saga down` manage it: run under its supervisor
    (saga_cli/supervise.py), pid and state files in the stack's run folder, its log in the log folder."""

    def __init__(self, name: str, settings: StackSettings):
        self.name = name
        self.settings = settings
        self.files = supervise.files(settings.run_dir, name)
        self.pid_file = self.files.pid
        self.log_file = settings.log_dir / f"{name}.log"
        self.markers = ("-m", name)
        self.supervisor_markers = ("saga_cli.supervise", f"{supervise.SERVICE_FLAG}={name}", str(settings.run_dir))

    @property
    def port(self) -> int:
        """Its HTTP port: <NAME>_HTTP_PORT (e.g. ORDER_SVC_HTTP_PORT) when set, else its descriptor's
        (ValueError when the variable is not a number)."""
        return int(os.environ.get(f"{self.name.upper()}_HTTP_PORT", SERVICES[self.name]))

    @property
    def health_url(self) -> str:
        """``http://127.0.0.1:<port>/health``."""
        return f"http://127.0.0.1:{self.port}/health"

    def find(self) -> psutil.Process | None:
        """The service's own process (never its supervisor), if it runs."""
        found = process.find_process(self.pid_file, *self.markers)
        try:
            if found is not None and "saga_cli.supervise" in found.cmdline():
                return None
        except psutil.Error:
            return None
        return found

    def find_supervisor(self) -> psutil.Process | None:
        """The supervisor keeping this service running, if there is one."""
        return process.find_process(self.files.supervisor_pid, *self.supervisor_markers)

    @property
    def supervisor_command(self) -> list[str]:
        """The command that runs `python -m <name>` under saga_cli.supervise, with this stack's run folder."""
        return [sys.executable, "-m", "saga_cli.supervise", f"{supervise.SERVICE_FLAG}={self.name}",
                "--run-dir", str(self.settings.run_dir), "--", sys.executable, "-m", self.name]

    @property
    def environment(self) -> dict[str, str]:
        """The service's database and Kafka are the stack's own (a stack on other ports takes its services along)."""
        prefix = self.name.upper()
        return {
            f"{prefix}_DATABASE_URL": os.environ.get(f"{prefix}_DATABASE_URL", self.settings.service_dsn(DATABASES[self.name])),
            f"{prefix}_HTTP_PORT": str(self.port),
            "SAGA_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "SAGA_KEYS_DIR": str(self.settings.keys_dir),
            # faust picks its event loop when first imported; uvloop halves the loop's own overhead
            # per message (BENCHMARKS.md). FAUST_LOOP=aio in the environment chooses asyncio's.
            "FAUST_LOOP": os.environ.get("FAUST_LOOP", "uvloop"),
        }

    def start(self) -> None:
        """Start the service under a supervisor and wait until it is healthy. When its supervisor
        runs already (the service is down between two restarts) it is woken to start the service
        now. StackError when the service exits before it is healthy, or is not healthy within
        start_timeout."""
        since, known = supervise.now(), self._recorded_pid()
        supervisor = self.find_supervisor()
        if supervisor is None:
            process.ensure_port_free(self.port, self.name)
            launched = self._launch_supervisor()
        else:
            launched = supervisor.pid
            self._wake(supervisor)
        process.wait_until(
            self.healthy,
            timeout=self.settings.start_timeout,
            what=self.name,
            log_file=self.log_file,
            alive=lambda: self._starting(launched, since, known),
            interval=0.5,
        )

    def supervise(self) -> None:
        """Put the running service under a supervisor of its own (it watches the process and
        restarts the service once it is gone). StackError if the supervisor does not start."""
        self._launch_supervisor()
        process.wait_until(lambda: self.find_supervisor() is not None, timeout=10, what=f"{self.name}'s supervisor",
                           log_file=self.log_file, interval=0.1)

    def stop(self) -> None:
        """Stop the supervisor (it stops the service: SIGTERM, SIGKILL after 30 s), then the
        service itself if it still runs."""
        supervisor = self.find_supervisor()
        if supervisor:
            process.terminate(supervisor, timeout=supervise.STOP_GRACE_S + 15)
        found = self.find()
        if found:
            process.terminate(found, timeout=30)

    def status(self) -> dict[str, Any]:
        """The service as `saga status --json` lists it: {"name", "state", "pid"} and, from its
        supervisor's state file, "restarts" (since its supervisor started), "last_exit" ({"code",
        "signal", "description", "at", "ran_s"} or null), "supervisor_pid" (null when none runs)
        and "next_start_at" (while waiting out a backoff, else null)."""
        found, supervisor = self.find(), self.find_supervisor()
        state = supervise.read_state(self.files.state) or {}
        waiting = supervisor is not None and state.get("state") == "backoff"
        return {
            "name": self.name,
            "state": "running" if found else "stopped",
            "pid": found.pid if found else None,
            "restarts": int(state.get("restarts") or 0),
            "last_exit": state.get("last_exit"),
            "supervisor_pid": supervisor.pid if supervisor else None,
            "next_start_at": state.get("next_start_at") if waiting else None,
        }

    def _launch_supervisor(self) -> int:
        return process.spawn(self.supervisor_command, self.log_file, None, env=self.environment)

    def _wake(self, supervisor: psutil.Process) -> None:
        """Cut the supervisor's backoff short (only once it says it is waiting: before its handler
        is installed, SIGUSR1 would end it)."""
        state = supervise.read_state(self.files.state) or {}
        if state.get("state") == "backoff" and state.get("supervisor_pid") == supervisor.pid:
            try:
                supervisor.send_signal(signal.SIGUSR1)
            except psutil.Error:
                pass

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _starting(self, launched: int, since: str, known: int | None) -> bool:
        """False once a service started after `since` has exited (its supervisor would restart it,
        but `saga up` says so at once; the exit of `known`, the pid there was before, is not one),
        or no supervisor is left to start it."""
        last_exit = (supervise.read_state(self.files.state) or {}).get("last_exit") or {}
        if str(last_exit.get("at") or "") > since and last_exit.get("pid") not in (None, known):
            return False
        if self.find_supervisor() is not None or self.find() is not None:
            return True
        try:  # launched, not yet holding its pid file
            return psutil.Process(launched).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def healthy(self) -> bool:
        """Whether GET /health answers 200 within 2 s."""
        try:
            return httpx.get(self.health_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def services(settings: StackSettings) -> list[Service]:
    """The three services (shared/descriptors.py), in order, over `settings`' stack."""
    return [Service(name, settings) for name in SERVICES]


def up(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Start each service that is not running, under its supervisor (idempotent); a service
    running without a supervisor gets one."""
    for service in services(settings):
        if service.find() is not None:
            if service.find_supervisor() is None:
                service.supervise()
                say(f"{service.name:<14} already running (now supervised)")
            else:
                say(f"{service.name:<14} already running")
            continue
        t0 = time.monotonic()
        say(f"{service.name:<14} starting…")
        service.start()
        say(f"{service.name:<14} running ({time.monotonic() - t0:.1f}s)")


def restart(settings: StackSettings, names: list[str], say: Callable[[str], None] = print) -> None:
    """Stop and start each service of `names` (all of SERVICES when empty), one after another in
    the given order: each is healthy again before the next stops, so the others keep consuming.
    A service that is not running is only started. StackError for a name not in SERVICES (before
    anything is stopped), or one that does not stop or start."""
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise StackError(f"unknown service {unknown[0]!r}: one of {', '.join(SERVICES)}")
    for name in dict.fromkeys(names or SERVICES):
        service = Service(name, settings)
        t0 = time.monotonic()
        if service.find() is not None:
            service.stop()
            if service.find() is not None:
                raise StackError(f"{name} did not stop")
            say(f"{name:<14} stopped, starting…")
        else:
            say(f"{name:<14} not running, starting…")
        service.start()
        say(f"{name:<14} running ({time.monotonic() - t0:.1f}s)")


def down(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    """Stop each service and its supervisor."""
    for service in services(settings):
        if service.find() is None and service.find_supervisor() is None:
            say(f"{service.name:<14} not running")
            continue
        service.stop()
        if service.find() is not None or service.find_supervisor() is not None:
            raise StackError(f"{service.name} did not stop")
        say(f"{service.name:<14} stopped")
