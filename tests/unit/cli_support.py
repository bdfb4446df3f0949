"""Helpers for the CLI's unit tests: run `saga` in-process, and a tiny real HTTP server.

The server answers as docs/contract/interfaces.md says a service does, so tests check the request
the CLI sends and how it renders answers; it tests the CLI, not a service.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def run_saga(capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """`saga ARGS…` through the console script's own entry point (`saga_cli.main.run`)."""
    from saga_cli.main import run

    saved_argv = sys.argv
    sys.argv = ["saga", *args]
    exit_code = 0
    try:
        run()
    except SystemExit as done:
        exit_code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved_argv
    captured = capsys.readouterr()
    return Outcome(exit_code, captured.out, captured.err)


def assert_one_line_error(outcome: Outcome, *fragments: str) -> None:
    assert outcome.exit_code == 1, outcome
    assert outcome.stdout == ""
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("saga: ")
    assert "Traceback" not in outcome.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeService:
    """Answers (method, path) with a canned (status, JSON body); 404 for anything else."""

    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        self.routes[(method, path)] = (status, body)


def serve(fake: FakeService) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake.requests.append(
                Request(self.command, self.path, dict(self.headers.items()), json.loads(raw) if raw else None)
            )
            status, body = fake.routes.get((self.command, self.path), (404, {"detail": "Not Found"}))
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server
