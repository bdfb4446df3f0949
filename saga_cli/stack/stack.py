"""The stack as a whole: bring parts up in order, report them, bring them down in reverse."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect
from saga_cli.stack.errors import ConnectUnavailable, StackError
from saga_cli.stack.install import ensure_jars, java_executable, pg_bin_dir, write_tool_scripts
from saga_cli.stack.kafka import Kafka
from saga_cli.stack.postgres import Postgres

T = TypeVar("T")

SETUP_RETRY_INTERVAL = 1.0
"""Seconds between two tries of a setup step whose server is still starting."""

SETUP_TRANSIENT: dict[str, tuple[type[BaseException], ...]] = {
    # refused or unresolved (OSError, timeouts included), "the database system is starting up / shutting down"
    "postgres": (OSError, asyncpg.CannotConnectNowError, asyncpg.exceptions.ConnectionDoesNotExistError),
    # no broker reachable yet, or one without its controller ("replication factor larger than available brokers")
    "kafka": (OSError, KafkaError),
    # the REST API does not answer yet, or answers 409 / 5xx (saga_cli.stack.connect.register_connectors)
    "kafka-connect": (ConnectUnavailable,),
}
"""The errors of each setup step that say its server is still starting, per server."""


@dataclass(frozen=True)
class ComponentStatus:
    """One component as `saga status` shows it: "running" or "stopped", its pid, and details
    (connectors and their failures for kafka-connect, replication slots for postgres)."""

    name: str
    state: str  # "running" | "stopped"
    pid: int | None
    detail: dict | None = None

    def as_json(self) -> dict:
        """{"name", "state", "pid"} and the details' keys."""
        out = {"name": self.name, "state": self.state, "pid": self.pid}
        if self.detail:
            out.update(self.detail)
        return out


class Stack:
    """PostgreSQL, then Kafka, then Kafka Connect with the three outbox connectors."""

    def __init__(self, settings: StackSettings | None = None):
        self.settings = settings or StackSettings()
        self.postgres = Postgres(self.settings)
        self.kafka = Kafka(self.settings)
        self.connect = Connect(self.settings)

    @property
    def components(self):
        """(postgres, kafka, kafka-connect): the order they start in."""
        return (self.postgres, self.kafka, self.connect)

    def up(self, say: Callable[[str], None] = print) -> float:
        """Start what is not running; idempotent. Returns the seconds it took."""
        began = time.monotonic()
        self.install(say)
        self.ensure_keys(say)
        for component in self.components:
            if component.find() is not None:
                say(f"{component.name:<14} already running")
                if component is self.postgres:
                    self.postgres.prepare()
                continue
            t0 = time.monotonic()
            say(f"{component.name:<14} starting…")
            component.start()
            say(f"{component.name:<14} running ({time.monotonic() - t0:.1f}s)")
        t0 = time.monotonic()
        say("connectors     registering…")
        names = self.connect.register_connectors()
        say(f"connectors     {', '.join(names)} RUNNING ({time.monotonic() - t0:.1f}s)")
        return time.monotonic() - began

    def setup(self, say: Callable[[str], None] = print) -> None:
        """Prepare servers this machine does not run (compose.yaml): databases, roles, schemas,
        publications, topics, connectors — what `up` does after starting each part.

        Servers started a moment ago may not answer yet (a fresh PostgreSQL volume runs its init
        server with TCP off, Kafka waits for its controller, Connect scans plugins and reads its
        topics), so each step, idempotent, is tried again every SETUP_RETRY_INTERVAL seconds while it
        fails the way a starting server does (SETUP_TRANSIENT), for up to `start_timeout` seconds
        (SAGA_START_TIMEOUT) each; then the last error is raised. Other errors, a connector config
        Connect refuses or a connector that FAILED (ConnectorsFailed), are raised at once."""
        import asyncio

        self.ensure_keys(say)
        self._until_it_answers("postgres", self.postgres.prepare, say)
        say("postgres       databases, roles, schemas and publications ready")
        self._until_it_answers("kafka", lambda: asyncio.run(self.kafka.create_topics()), say)
        say("kafka          topics ready")
        names = self._until_it_answers("kafka-connect", self.connect.register_connectors, say)
        say(f"connectors     {', '.join(names)} RUNNING")

    def _until_it_answers(self, name: str, step: Callable[[], T], say: Callable[[str], None]) -> T:
        """step() again while it fails as a starting server does, up to start_timeout; says once that it waits."""
        def waiting(attempt: RetryCallState) -> None:
            """Say, before the first retry only, that `name` does not answer yet and for how long it is tried."""
            if attempt.attempt_number == 1:
                error = attempt.outcome.exception()
                say(f"{name:<14} not answering yet ({type(error).__name__}: {str(error)[:200]}); "
                    f"trying again for up to {self.settings.start_timeout:.0f}s")

        retrying = Retrying(stop=stop_after_delay(self.settings.start_timeout), wait=wait_fixed(SETUP_RETRY_INTERVAL),
                            retry=retry_if_exception_type(SETUP_TRANSIENT[name]), before_sleep=waiting, reraise=True)
        return retrying(step)

    def ensure_keys(self, say: Callable[[str], None] = print) -> None:
        """Every service's signing key under `keys_dir` (made once; shared/auth.py)."""
        from shared import auth

        made = auth.ensure_keys(self.settings.keys_dir)
        if made:
            say(f"keys           signing keys made for {', '.join(made)} in {self.settings.keys_dir}")

    def install(self, say: Callable[[str], None] = print) -> None:
        """Make sure of what `up` needs on this machine: <home>, Java 17+, PostgreSQL's binaries, the jars
        (Maven, once per pom change) and Kafka's tool scripts. StackError naming what is missing."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        java = java_executable(self.settings)
        pg_bin_dir(self.settings)
        ensure_jars(self.settings, say)
        write_tool_scripts(self.settings, java)

    def down(self, say: Callable[[str], None] = print) -> None:
        """Stop what runs, Kafka Connect first and PostgreSQL last; StackError when one is still there after."""
        for component in reversed(self.components):
            if component.find() is None:
                say(f"{component.name:<14} not running")
                continue
            t0 = time.monotonic()
            component.stop()
            if component.find() is not None:
                raise StackError(f"{component.name} did not stop")
            say(f"{component.name:<14} stopped ({time.monotonic() - t0:.1f}s)")

    def status(self) -> list[ComponentStatus]:
        """Each component's ComponentStatus, in start order."""
        statuses = []
        for component in self.components:
            found = component.find()
            detail = None
            if component is self.connect and found is not None:
                detail = self._connectors()
            if component is self.postgres and found is not None:
                detail = {"slots": self._slots()}
            statuses.append(ComponentStatus(component.name, "running" if found else "stopped", found.pid if found else None, detail))
        return statuses

    def _connectors(self) -> dict:
        """Each connector's state, and for each FAILED one what is wrong and the command that recovers it."""
        try:
            return {"connectors": self.connect.connector_states(),
                    "connector_failures": [failure.as_json(self.connect.log_file)
                                           for failure in self.connect.connector_failures()]}
        except StackError:
            return {"connectors": {}}

    def _slots(self) -> list[dict]:
        """Per connector slot: active, lag_bytes (behind confirmed_flush_lsn), retained_wal_bytes (from restart_lsn)."""
        try:
            return [slot.as_json() for slot in self.postgres.replication_slots()]
        except (OSError, asyncpg.PostgresError):
            return []
