"""A fault scenario under saga load: a mixed load is placed while `inject` breaks something; then
every saga must end and I1–I6 must hold (0 violations is the only pass).

    async def inject(run: LoadRun) -> None:
        await run.placed_at_least(60)                 # the load is under way
        ... kill, stop, restart something ...
        run.injected("kill -9 kafka-connect (pid 123)")

    outcome = await run_under_load(settings, inject, sagas=250, per_second=20)

It prints what was injected and when (seconds since the load began), how many HTTP attempts
were retried, the peak number of sagas in flight, the outcome of each flow, the invariant
report and the scenario's run time. A happy order that waited past its deadline is cancelled
with `deadline_exceeded` (C3, C2, C1): that is the saga doing its job, not a failure.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from saga_cli.stack.config import StackSettings
from tests.support.invariants import Seeded, check_invariants
from tests.support.load import (
    Catalog, Placed, Placement, mixed_flows, outcomes, place_orders, unexpected, wait_terminal,
)


@dataclass
class LoadRun:
    """The load while it runs: what was placed so far, and the log of injected faults."""

    settings: StackSettings
    progress: Placement = field(default_factory=Placement)
    began: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)
    peak_in_flight: int = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def injected(self, what: str) -> None:
        line = f"+{self.elapsed:5.1f}s {what}"
        self.log.append(line)
        print(f"injected: {line}", flush=True)

    async def placed_at_least(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.progress.placed) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.progress.placed)} of {count} orders placed after {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def in_flight(self) -> int:
        """Sagas of this load placed and not yet terminal, from order_svc's database."""
        ids = [uuid.UUID(p.order_id) for p in self.progress.placed]
        connection = await asyncpg.connect(self.settings.service_dsn("orders"), timeout=5)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM orders WHERE order_id = ANY($1::uuid[]) AND status NOT IN ('CONFIRMED', 'CANCELLED')",
                ids)
        finally:
            await connection.close()

    async def watch_in_flight(self) -> None:
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                self.peak_in_flight = max(self.peak_in_flight, await self.in_flight())
            await asyncio.sleep(0.5)


@dataclass
class Outcome:
    placed: list[Placed]
    statuses: dict[str, tuple[str, str | None]]
    violations: list[str]
    seconds: float


async def run_under_load(
    settings: StackSettings,
    inject: Callable[[LoadRun], Awaitable[None]],
    *,
    sagas: int = 250,
    per_second: float = 20.0,
    catalog: Catalog | None = None,
    flows: Sequence[str] | None = None,
    extra_orders: Callable[[LoadRun], Awaitable[list[Placed]]] | None = None,
    seeded: Seeded | None = None,
    terminal_timeout: float = 180.0,
    place_timeout: float = 300.0,
) -> Outcome:
    """Place `sagas` mixed orders at `per_second` while `inject(run)` runs; wait for every saga to
    end; check I1–I6 and print everything. `extra_orders(run)`, if given, places more orders of
    its own meanwhile (their flows decide nothing here; `seeded` then covers their SKUs and
    customers too)."""
    catalog = catalog or Catalog.new(contended_units=40)
    await catalog.seed()
    flows = list(flows) if flows is not None else mixed_flows(sagas)
    run = LoadRun(settings)
    started_ms = int(time.time() * 1000)
    print(f"load: {len(flows)} sagas at {per_second:g}/s (catalog {catalog.tag})", flush=True)

    watcher = asyncio.create_task(run.watch_in_flight())
    load = asyncio.create_task(place_orders(catalog, flows, per_second=per_second, timeout=place_timeout,
                                            progress=run.progress))
    faults = asyncio.create_task(inject(run))
    more = asyncio.create_task(extra_orders(run)) if extra_orders else None
    try:
        placed = await load
        await faults
        extra = await more if more else []
    finally:
        for task in (load, faults, more, watcher):
            if task is not None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    print(f"placed {len(placed)} orders{f' and {len(extra)} more' if extra else ''} "
          f"({run.progress.retried} HTTP attempts retried) in {run.elapsed:.1f}s")

    order_ids = [p.order_id for p in [*placed, *extra]]
    statuses = await wait_terminal(settings, order_ids, timeout=terminal_timeout)
    print(f"every saga terminal {run.elapsed:.1f}s after the load began; peak in flight {run.peak_in_flight}")
    for (flow, status, reason), count in sorted(outcomes(placed, statuses).items(), key=str):
        print(f"  {flow:<13} {status:<10} {reason or '':<22} {count}")
    wrong = [line for line in unexpected(placed, statuses) if "deadline_exceeded" not in line]
    assert wrong == [], wrong

    violations = await check_invariants(settings, order_ids, seeded or catalog.seeded, since_ms=started_ms)
    seconds = time.monotonic() - run.began
    print(f"{len(run.log)} injection lines; {len(violations)} violations; scenario {seconds:.1f}s")
    return Outcome([*placed, *extra], statuses, violations, seconds)
