"""Switching the outbox transport for a benchmark run: Debezium's connectors with other settings, or none at all.

`Transports.debezium(variant)` PUTs each connector's config: "tuned" is the shipped
file in connect/outbox-connector.json as is; "default" is the same file without the keys that
tune latency (TUNING_KEYS), i.e. Debezium's and Kafka's own defaults for them.

`Transports.handover()` hands the outbox to another publisher (the polling relay, the
direct publisher) and back, keeping each record published once:

  1. the system is quiet (the previous run drained; every outbox row published);
  2. each connector is STOPPED (KIP-875: PUT /connectors/{name}/stop). Pausing is not
     enough: a paused task keeps its replication connection open and Debezium goes on
     reading the WAL into its queue, to publish it all on resume;
  3. the other publisher publishes every outbox row created from then on;
  4. when it is done: the slots are advanced to the current WAL position
     (pg_replication_slot_advance, as the superuser) and each connector's stored
     offset is moved to the same position (KIP-875: PATCH /connectors/{name}/offsets;
     Debezium refuses to start from an offset its slot has passed), so Debezium,
     resumed, starts after the rows the other publisher already published;
  5. the connectors are resumed and the shipped configs put back.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from saga_cli.errors import CliError
from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect, ConnectorSpec
from saga_cli.stack.errors import StackError
from saga_cli.stack.postgres import Postgres

TUNING_KEYS = (
    "poll.interval.ms",
    "max.batch.size",
    "max.queue.size",
)
"""Connector keys whose shipped values are tuning (every `producer.override.*` key is, too)."""


class Transports:
    """Which publisher carries the outbox to Kafka during a benchmark run (the module's steps);
    over the stack's Kafka Connect worker and PostgreSQL."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.connect = Connect(settings)
        self.postgres = Postgres(settings)

    def specs(self) -> list[ConnectorSpec]:
        """Every outbox connector with its database and slot (Connect.specs)."""
        return self.connect.specs()

    # --- Debezium with one set of settings or another ------------------------------------
    def debezium(self, variant: str) -> dict[str, dict[str, str]]:
        """Put every connector's `variant` config ("tuned" | "default"); return name → the keys that differ from defaults."""
        tuned: dict[str, dict[str, str]] = {}
        for spec in self.specs():
            config = dict(spec.config)
            tuning = {k: v for k, v in config.items() if k in TUNING_KEYS or k.startswith("producer.override.")}
            if variant == "default":
                config = {k: v for k, v in config.items() if k not in tuning}
            self._put_config(spec.name, config)
            tuned[spec.name] = tuning if variant == "tuned" else {}
        for spec in self.specs():
            self._wait_running(spec.name)
        return tuned

    def restore(self) -> None:
        """The shipped configs, every connector running."""
        for spec in self.specs():
            status = self.connect.connector_status(spec.name)
            if status.get("connector", {}).get("state") in ("STOPPED", "PAUSED"):
                self._request("PUT", f"/connectors/{spec.name}/resume")
            if any(task.get("state") == "FAILED" for task in status.get("tasks", [])):
                self._request("POST", f"/connectors/{spec.name}/restart?includeTasks=true&onlyFailed=true")
        self.debezium("tuned")

    # --- another publisher in Debezium's place ---------------------------------------------
    @asynccontextmanager
    async def handover(self) -> AsyncIterator[None]:
        """Debezium stopped (its slots free) inside the block; slots advanced and Debezium back after it."""
        specs = self.specs()
        for spec in specs:
            self._request("PUT", f"/connectors/{spec.name}/stop")
        for spec in specs:
            self._wait_state(spec.name, "STOPPED")
        await self._wait_slots_inactive(specs)
        try:
            yield
        finally:
            await self.realign(specs)
            for spec in specs:
                self._request("PUT", f"/connectors/{spec.name}/resume")
            self.debezium("tuned")

    async def realign(self, specs: list[ConnectorSpec]) -> None:
        """With the connectors STOPPED: each slot advanced to the current WAL position, and the connector's
        stored offset (KIP-875: PATCH /connectors/{name}/offsets) moved to it too — Debezium refuses to start
        from an offset older than its slot's confirmed position."""
        confirmed = await self._advance_slots(specs)
        for spec in specs:
            stored = self._request("GET", f"/connectors/{spec.name}/offsets").json().get("offsets", [])
            if not stored:
                continue
            lsn = confirmed[spec.slot]
            offsets = [{"partition": entry["partition"],
                        "offset": {**entry["offset"], "lsn": lsn, "lsn_proc": lsn, "lsn_commit": lsn}}
                       for entry in stored]
            response = self._request("PATCH", f"/connectors/{spec.name}/offsets", json={"offsets": offsets})
            if response.status_code >= 400:
                raise CliError(f"connector {spec.name}: its offset could not be moved to the slot: {response.text[:300]}")

    async def _wait_slots_inactive(self, specs: list[ConnectorSpec], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        connection = await asyncpg.connect(self.postgres.superuser_dsn)
        try:
            while True:
                active = await connection.fetchval(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY($1::text[]) AND active",
                    [spec.slot for spec in specs])
                if active == 0:
                    return
                if time.monotonic() > deadline:
                    raise CliError(f"{active} replication slot(s) still in use {timeout:.0f}s after the connectors stopped")
                await asyncio.sleep(0.2)
        finally:
            await connection.close()

    async def _advance_slots(self, specs: list[ConnectorSpec]) -> dict[str, int]:
        """Slot name → its confirmed position (as an integer LSN) after the advance."""
        confirmed = {}
        for spec in specs:  # a logical slot is advanced from its own database
            dsn = urlunsplit(urlsplit(self.postgres.superuser_dsn)._replace(path=f"/{spec.database}"))
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", spec.slot)
                confirmed[spec.slot] = await connection.fetchval(
                    "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = $1", spec.slot)
            finally:
                await connection.close()
        return {slot: int(lsn) for slot, lsn in confirmed.items()}

    # --- REST ------------------------------------------------------------------------------
    def _put_config(self, name: str, config: dict[str, str]) -> None:
        response = self._request("PUT", f"/connectors/{name}/config", json=config)
        if response.status_code >= 400:
            raise CliError(f"connector {name} refused its benchmark config: {response.text[:300]}")

    def _state(self, name: str) -> str:
        return self.connect.connector_status(name).get("connector", {}).get("state", "MISSING")

    def _wait_state(self, name: str, state: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self._state(name) != state:
            if time.monotonic() > deadline:
                raise CliError(f"connector {name} is not {state} after {timeout:.0f}s")
            time.sleep(0.2)

    def _wait_running(self, name: str) -> None:
        try:
            self.connect.wait_running(name, timeout=60)
        except StackError as error:
            raise CliError(str(error)) from None

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return httpx.request(method, f"{self.settings.connect_url}{path}", timeout=30, **kwargs)
        except httpx.HTTPError as error:
            raise CliError(f"kafka-connect REST at {self.settings.connect_url} does not answer: {error}") from None
