"""The stack as the test suite uses it: brought up once per session, stopped at the end if the session started it."""
from __future__ import annotations

import os
from dataclasses import dataclass

from saga_cli.stack.config import StackSettings
from saga_cli.stack.stack import Stack


@dataclass
class RunningStack:
    """The session's stack, and whether this process started it and the services (then it stops them)."""

    stack: Stack
    started_here: bool
    services_started_here: bool = False

    @property
    def settings(self) -> StackSettings:
        """The stack's settings."""
        return self.stack.settings

    @property
    def pg_superuser_dsn(self) -> str:
        """The stack's PostgreSQL as the superuser (Postgres.superuser_dsn)."""
        return self.stack.postgres.superuser_dsn

    def ensure_services(self) -> None:
        """The three services as their own processes (what `saga up` adds to the stack)."""
        from saga_cli import services

        if any(service.find() is None for service in services.services(self.settings)):
            self.services_started_here = True
        services.up(self.settings, say=lambda line: print(f"[services] {line}", flush=True))

    def stop_if_started_here(self) -> None:
        """Stop the services and the stack if this session started them (services first); nothing with
        SAGA_TEST_KEEP_STACK=1."""
        if os.environ.get("SAGA_TEST_KEEP_STACK") == "1":
            return
        from saga_cli import services

        if self.services_started_here or self.started_here:
            services.down(self.settings, say=lambda line: None)
        if self.started_here:
            self.stack.down(say=lambda line: None)


_running: RunningStack | None = None


def ensure_stack() -> RunningStack:
    """Bring the native stack up (idempotent) and remember whether this process started any of it."""
    global _running
    if _running is None:
        stack = Stack()
        was_running = all(component.find() is not None for component in stack.components)
        seconds = stack.up(say=lambda line: print(f"[stack] {line}", flush=True))
        print(f"[stack] up in {seconds:.1f}s", flush=True)
        _running = RunningStack(stack, started_here=not was_running)
    return _running


def running() -> RunningStack | None:
    """The stack `ensure_stack` brought up in this process, or None before it ran."""
    return _running
