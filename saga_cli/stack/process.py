"""Start, find and stop the stack's own processes, and wait for them with a deadline."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

from saga_cli.stack.errors import StackError


def find_process(pid_file: Path, *markers: str) -> psutil.Process | None:
    """The live process recorded in pid_file, if its command line still carries all our markers.

    The markers (paths or -D flags of ours) keep `down` from ever touching a process
    that merely reuses an old pid, or one of another checkout's stack.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return None
        cmdline = process.cmdline()
        if all(marker in cmdline for marker in markers):
            return process
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        pass
    return None


def spawn(cmd: list[str], log_file: Path, pid_file: Path | None, env: dict[str, str] | None = None) -> int:
    """Start cmd detached (own session, stdin closed, output appended to log_file) and record its
    pid in pid_file (None: the process records its own)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{process.pid}\n")
    return process.pid


def terminate(process: psutil.Process, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after timeout."""
    try:
        process.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    if _gone_within(process, timeout):
        return
    try:
        process.kill()
    except psutil.NoSuchProcess:
        return
    if not _gone_within(process, 10):
        raise StackError(f"pid {process.pid} did not stop")


def _gone_within(process: psutil.Process, timeout: float) -> bool:
    """Whether the process ended within timeout. A zombie has ended: it only waits to be
    reaped by its parent (which may be a test runner that started it, not us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(process.pid)
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host`:`port` (0.5 s to answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, component: str) -> None:
    """StackError naming the port, `component` and the owner when found, if the port is in use."""
    if port_in_use(port):
        owner = _port_owner(port)
        raise StackError(f"port {port} needed by {component} is taken{f' by {owner}' if owner else ''}")


def _port_owner(port: int) -> str | None:
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error:
        pass
    return None


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log_file: Path,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ready() until it is true; fail with a one-line reason pointing to log_file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and not alive():
            raise StackError(f"{what} exited while starting; see {log_file}")
        time.sleep(interval)
    raise StackError(f"{what} did not come up within {timeout:.0f}s; see {log_file}")
