"""One benchmark run: seed a fresh catalog, place orders open-loop, drain, measure, check the invariants.

    result = await run(settings, Plan(rate=100, duration=60, warmup=5), progress)

Each run seeds its own SKUs and customers, so its invariant check (I1–I6 over exactly
its sagas) is independent of earlier runs. Resources are sampled over the measurement
window only (not warmup, not the drain), the steady state the figures describe. The warm-up
lasts `warmup` seconds and, on a stack whose JVMs are still compiling their hot paths (just
started), longer: until they settle (saga_cli/benchmark/warmup.py).
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import aiohttp

from saga_cli import services as service_processes
from saga_cli.benchmark import invariants
from saga_cli.benchmark.catalog import EXPECTED, BenchCatalog, Mix
from saga_cli.benchmark.load import LoadCounters, Phase, open_loop
from saga_cli.benchmark.measure import HopSamples, SagaTiming, TerminalCounter, read_hops, read_timings
from saga_cli.benchmark.progress import Progress
from saga_cli.benchmark.resources import ComponentUsage, ResourceSampler
from saga_cli.benchmark.stats import summary
from saga_cli.benchmark.warmup import LONGEST_S, JitWatch
from saga_cli.stack import Stack
from saga_cli.stack.config import StackSettings

HTTP_TIMEOUT_S = 10.0
GOODPUT_WITHIN_MS = 1000.0
"""Goodput counts the sagas that finished within this many milliseconds of being placed (and
were not given up at their deadline): the overload target for admitted sagas' e2e p99."""


@dataclass(frozen=True)
class Plan:
    """One run: `rate` orders per second for `duration` seconds measured after `warmup` seconds
    (longer while the stack's JVMs are still compiling, at most `warmup_longest` more), in the flows' `mix`; `seed` for the random draws (None: fresh); `drain_timeout` seconds for
    the sagas to finish after the last order; `label` names it in reports."""

    rate: float
    duration: float
    warmup: float = 5.0
    warmup_longest: float = LONGEST_S
    mix: Mix = field(default_factory=Mix)
    seed: int | None = None
    drain_timeout: float = 60.0
    label: str = "run"


@dataclass
class RunResult:
    """What one run measured: the load's counters, the measurement window (epoch seconds), the sagas'
    timings and hops, the invariant report, each component's usage, the load averages before and
    after, the seconds the drain took and whether every saga ended."""

    plan: Plan
    counters: LoadCounters
    window: tuple[float, float]
    timings: dict[str, SagaTiming]
    hops: HopSamples
    invariants: invariants.Report
    usage: dict[str, ComponentUsage]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    drained_s: float
    all_terminal: bool
    warmed_s: float = 0.0
    """Seconds of warm-up load the run had: `plan.warmup`, or more on a stack still warming up."""

    @property
    def measured(self) -> list[str]:
        """The ids of the orders placed in the measurement phase."""
        return measured_ids(self.counters)

    def e2e_ms(self, order_ids=None) -> list[float]:
        """End-to-end milliseconds of the terminal sagas among `order_ids` (default: the measured ones)."""
        ids = self.measured if order_ids is None else order_ids
        return [t.e2e_ms for i in ids if (t := self.timings.get(i)) is not None and t.e2e_ms is not None]

    @property
    def sagas_per_s(self) -> float:
        """Sagas of this run that reached a terminal state inside the measurement window, per second."""
        start, end = self.window
        done = sum(1 for t in self.timings.values() if t.terminal_at is not None and start <= t.terminal_at < end)
        return done / (end - start) if end > start else 0.0

    @property
    def completed(self) -> int:
        """Measured sagas that reached CONFIRMED or CANCELLED."""
        return sum(1 for i in self.measured if (t := self.timings.get(i)) and t.terminal_at is not None)

    @property
    def goodput_per_s(self) -> float:
        """Sagas placed in the measurement window that finished within GOODPUT_WITHIN_MS and were
        not given up at their deadline, per second of the window."""
        good = sum(1 for i in self.measured if (t := self.timings.get(i)) is not None and t.e2e_ms is not None
                   and t.e2e_ms <= GOODPUT_WITHIN_MS and t.reason != "deadline_exceeded")
        return good / self.plan.duration if self.plan.duration > 0 else 0.0

    @property
    def deadline_exceeded(self) -> int:
        """Admitted sagas of the measurement window given up at their deadline."""
        return sum(1 for i in self.measured if (t := self.timings.get(i)) is not None and t.reason == "deadline_exceeded")

    def converging(self) -> tuple[bool, str]:
        """Whether latency stayed level through the window: the p99 of the last third of the measured sagas
        (by creation) is at most 1.5× that of the first third, or within 100 ms of it."""
        ordered = sorted((t for i in self.measured if (t := self.timings.get(i))), key=lambda t: t.created_at)
        third = len(ordered) // 3
        if third < 10:
            return True, "too few sagas to tell"
        first = summary(t.e2e_ms if t.e2e_ms is not None else float("inf") for t in ordered[:third])["p99"]
        last = summary(t.e2e_ms if t.e2e_ms is not None else float("inf") for t in ordered[-third:])["p99"]
        ok = last <= max(1.5 * first, first + 100)
        return ok, f"p99 first third {first:.0f} ms, last third {last:.0f} ms"

    def unexpected(self) -> list[str]:
        """One line per terminal saga that did not end as its flow must (catalog.EXPECTED)."""
        flows = {p.order_id: p.flow for p in self.counters.placements}
        return [f"order {o} ({flows[o]}) ended {t.status} {t.reason or ''}".strip() for o, t in self.timings.items()
                if t.terminal_at is not None and (t.status, t.reason if t.status == "CANCELLED" else None) != EXPECTED[flows[o]]]

    def as_json(self) -> dict:
        """The run as `saga bench --json` reports it: the plan, the counts, rates per second, latency
        summaries in ms (end to end, per flow, per hop, HTTP), the invariants and the components' usage."""
        hops = self.hops
        cdc, consume, hop = summary(hops.cdc), summary(hops.consume), summary(hops.hop)
        by_flow = {}
        flows = {p.order_id: p.flow for p in self.counters.placements}
        for flow in EXPECTED:
            by_flow[flow] = summary(self.e2e_ms([i for i in self.measured if flows[i] == flow]))
        return {
            "label": self.plan.label,
            "rate": self.plan.rate,
            "duration_s": self.plan.duration,
            "warmup_s": round(self.warmed_s, 1),
            "mix": self.plan.mix.as_json(),
            "sent": self.counters.sent,
            "placed": self.counters.placed,
            "failed": self.counters.failed,
            "refused": self.counters.refused,
            "errors": self.counters.errors,
            "late_sends": self.counters.late,
            "measured": len(self.measured),
            "completed": self.completed,
            "sagas_per_s": round(self.sagas_per_s, 2),
            "goodput_per_s": round(self.goodput_per_s, 2),
            "goodput_within_ms": GOODPUT_WITHIN_MS,
            "deadline_exceeded": self.deadline_exceeded,
            "all_terminal": self.all_terminal,
            "drain_s": round(self.drained_s, 1),
            "e2e_ms": summary(self.e2e_ms()),
            "e2e_ms_by_flow": by_flow,
            "hop_ms": {"p50": hop["p50"], "p99": hop["p99"], "hop": hop, "cdc": cdc, "consume": consume,
                       "cdc_by_event_type": {k: summary(v) for k, v in sorted(hops.cdc_by_type.items())},
                       "consume_by_consumer": {k: summary(v) for k, v in sorted(hops.consume_by_consumer.items())},
                       "unpublished": hops.unpublished},
            "http_ms": summary(p.answered_ms for p in self.counters.placements if p.phase == "measure"),
            "converging": dict(zip(("ok", "detail"), self.converging())),
            "violations": len(self.invariants.violations),
            "violation_details": self.invariants.violations[:50],
            "unexpected_outcomes": self.unexpected()[:50],
            "invariants": self.invariants.lines,
            "components": {name: usage.as_json() for name, usage in self.usage.items()},
            "load_average": {"before": list(self.load_before), "after": list(self.load_after)},
        }


def measured_ids(counters: LoadCounters) -> list[str]:
    """The ids of the orders placed in the measurement phase (not the warm-up)."""
    return [p.order_id for p in counters.placements if p.phase == "measure"]


def jit_watch(settings: StackSettings) -> JitWatch:
    """A JitWatch of the native stack's two JVMs (Kafka, Kafka Connect); one not running locally
    (containers, another host) is not watched."""
    stack = Stack(settings)

    def pid_of(find):
        return lambda: (process.pid if (process := find()) is not None else None)

    return JitWatch({"kafka": pid_of(stack.kafka.find), "kafka-connect": pid_of(stack.connect.find)})


def resource_sampler(settings: StackSettings) -> ResourceSampler:
    """A sampler (every 0.5 s) of postgres (with its backends, PSS), kafka, kafka-connect and each service."""
    stack = Stack(settings)
    sampler = ResourceSampler(interval=0.5)
    sampler.add("postgres", stack.postgres.find, with_children=True, proportional=True)
    sampler.add("kafka", stack.kafka.find)
    sampler.add("kafka-connect", stack.connect.find)
    for service in service_processes.services(settings):
        sampler.add(service.name, service.find)
    return sampler


async def run(settings: StackSettings, plan: Plan, progress: Progress) -> RunResult:
    """Seed a fresh catalog, place orders per `plan` (open loop), drain, check the invariants and read
    the timings: the RunResult. CliError when seeding fails."""
    rng = random.Random(plan.seed)
    catalog = BenchCatalog.new()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await catalog.seed(session)
        started = datetime.now(timezone.utc)
        since_ms = int(started.timestamp() * 1000)
        counters = LoadCounters()
        counter = TerminalCounter(settings, catalog.customers, started)
        sampler = resource_sampler(settings)
        window = [0.0, 0.0]
        usage: dict[str, ComponentUsage] = {}
        load_before = os.getloadavg()
        sampling: list[asyncio.Task] = []

        def on_phase(phase: str, wall: float) -> None:
            """Follow the load's phases: the measurement window (epoch seconds) and resource sampling start
            with 'measure' and end with 'done'."""
            progress.phase(phase)
            if phase == "measure":
                window[0] = wall
                sampling.append(asyncio.create_task(asyncio.to_thread(sampler.start)))
            elif phase == "done":
                window[1] = wall

        watch = jit_watch(settings)

        def warm() -> bool:
            """Whether the JVMs settled; while they have not, the progress line says which compiles most."""
            if watch.settled():
                return True
            if (busiest := watch.busiest()) is not None:
                progress.phase(f"warmup ({busiest[0]} JIT {busiest[1]:.0%})")
            return False

        watch.settled()  # the first sample: a window is full by the end of a warm-up of WINDOW_S or more
        phases = [Phase("warmup", plan.warmup, warm if plan.warmup > 0 else None, plan.warmup_longest),
                  Phase("measure", plan.duration)]
        watcher = asyncio.create_task(_watch(progress, counters, counter))
        try:
            progress.start(plan.label, plan.rate, plan.warmup + plan.duration)
            lasted = await open_loop(session, catalog, plan.mix, plan.rate, phases, rng, counters, on_phase)
            await asyncio.gather(*sampling)
            usage = await asyncio.to_thread(sampler.stop)
            load_after = os.getloadavg()
            drain_began = time.monotonic()
            all_terminal = await _drain(counters, counter, plan.drain_timeout)
            drained_s = time.monotonic() - drain_began
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await counter.close()
            progress.stop()
    order_ids = [p.order_id for p in counters.placements]
    progress.note("measuring…")
    report = await invariants.check(settings, order_ids, catalog.seeded, since_ms=since_ms,
                                    timeout=10.0 if all_terminal else 1.0)
    timings = await read_timings(settings, order_ids)
    hops = await read_hops(settings, measured_ids(counters), started, report.messages)  # the window's sagas, like e2e
    return RunResult(plan, counters, (window[0], window[1]), timings, hops, report, usage,
                     load_before, load_after, drained_s, all_terminal, lasted.get("warmup", 0.0))


async def _watch(progress: Progress, counters: LoadCounters, counter: TerminalCounter) -> None:
    while True:
        try:
            terminal = await counter.count()
        except Exception:  # the progress line is best effort; the figures come from the end
            terminal = None
        progress.update(counters, terminal)
        await asyncio.sleep(0.5)


async def _drain(counters: LoadCounters, counter: TerminalCounter, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await counter.count() >= counters.placed:
            return True
        await asyncio.sleep(0.25)
    return False
