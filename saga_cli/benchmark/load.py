"""Open-loop load: orders placed at a fixed arrival rate, whatever the system's answers take.

The i-th order is due at start + i / rate and is sent at that moment without waiting
for earlier ones (a closed loop would slow down with the system and hide its queueing).
Each POST /orders is its own task; a late start (the event loop itself behind) is
counted, never made up by sending faster. Nothing is retried: a failed request is a
failed order, reported as such; an order refused by admission control (503 with
Retry-After: order_svc/admission.py) is counted apart as refused.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from saga_cli.benchmark.catalog import BenchCatalog, Mix
from saga_cli.endpoints import ORDER_SVC

LATE_AFTER_S = 0.050
"""A request that starts this much after its due time counts as late."""


@dataclass
class Placed:
    """One order order_svc placed (201) during the run."""

    order_id: str
    flow: str
    phase: str
    """'warmup' or 'measure'."""
    due_wall: float
    """When it was due (epoch seconds)."""
    answered_ms: float
    """From due time to order_svc's answer."""


@dataclass
class LoadCounters:
    """What the open loop sent and how each request ended, updated as the answers come in."""

    sent: int = 0
    placed: int = 0
    failed: int = 0
    refused: int = 0
    """Answered 503: not admitted (admission control, or a dependency down: `errors` has none of these)."""
    late: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    placements: list[Placed] = field(default_factory=list)

    @property
    def in_request(self) -> int:
        """Requests sent and not answered yet."""
        return self.sent - self.placed - self.failed - self.refused

    def fail(self, reason: str) -> None:
        """Count one failed request under `reason` (e.g. "HTTP 422", an exception's name)."""
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1


@dataclass(frozen=True)
class Phase:
    """One stretch of the open loop, named `name` ('warmup', 'measure'): at least `seconds` of
    load; with `settled`, the load goes on past `seconds` — at most `longest` more — until
    `settled()` answers True (asked after each further second of sends)."""

    name: str
    seconds: float
    settled: Callable[[], bool] | None = None
    longest: float = 0.0


async def open_loop(
    session: aiohttp.ClientSession,
    catalog: BenchCatalog,
    mix: Mix,
    rate: float,
    phases: list[Phase],
    rng: random.Random,
    counters: LoadCounters,
    on_phase: Callable[[str, float], None] = lambda phase, wall: None,
) -> dict[str, float]:
    """Place orders at `rate` per second through `phases` back to back; return, once every
    request has been answered (or failed), how many seconds of load each phase got {name: s}."""
    loop = asyncio.get_running_loop()
    url = f"{ORDER_SVC.url}/orders"
    pending: set[asyncio.Task] = set()
    start = loop.time()
    start_wall = time.time()
    index = 0
    lasted: dict[str, float] = {}
    for phase in phases:
        on_phase(phase.name, start_wall + index / rate)
        began = index
        end = index + round(phase.seconds * rate)
        latest = end + round(phase.longest * rate) if phase.settled is not None else end
        ask_at = end
        while index < latest:
            if index >= ask_at:
                if phase.settled is not None and phase.settled():
                    break
                ask_at = index + max(1, round(rate))
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > LATE_AFTER_S:
                counters.late += 1
            task = asyncio.create_task(_place(session, url, catalog, mix.draw(rng), rng, phase.name,
                                              start_wall + index / rate, counters))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
        lasted[phase.name] = (index - began) / rate
    on_phase("done", start_wall + index / rate)
    if pending:
        await asyncio.gather(*pending)
    return lasted


async def _place(session: aiohttp.ClientSession, url: str, catalog: BenchCatalog, flow: str, rng: random.Random,
                 phase: str, due_wall: float, counters: LoadCounters) -> None:
    counters.sent += 1
    body = catalog.order(flow, rng)
    try:
        async with session.post(url, json=body) as answer:
            document = await answer.json(content_type=None)
            if answer.status == 503:
                counters.refused += 1
                return
            if answer.status != 201:
                counters.fail(f"HTTP {answer.status}")
                return
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        counters.fail(type(error).__name__)
        return
    counters.placed += 1
    counters.placements.append(
        Placed(document["order_id"], flow, phase, due_wall, (time.time() - due_wall) * 1000))
