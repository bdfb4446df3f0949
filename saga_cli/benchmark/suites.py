"""Several runs in one go: stepping the rate up to saturation, and the transports side by side.

find_max: runs of `step_duration` s at rising rates (×`factor` each step) until one fails:
terminal throughput below 97 % of the offered rate, sagas left unfinished after the
drain, or latency not converging (runner.RunResult.converging). The saturation rate is
the last rate that passed.

compare: the same plan through (a) Debezium with default connector and producer
settings, (b) Debezium as shipped (tuned), (c) the polling relay in Debezium's place;
then each transport alone, (a)–(c) and (d) direct publishing after the commit
(benchmark/transport.py), at the same row rate. Ratios are against (b) for the saga
runs and against (d) for the transports.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace

from saga_cli.benchmark import transport
from saga_cli.benchmark.connectors import Transports
from saga_cli.benchmark.progress import Progress
from saga_cli.benchmark.relay import PollingRelay
from saga_cli.benchmark.runner import GOODPUT_WITHIN_MS, Plan, RunResult, run
from saga_cli.stack.config import StackSettings

PASS_THROUGHPUT = 0.97
SAGA_VARIANTS = ("debezium-default", "debezium-tuned", "relay")
TRANSPORTS = ("debezium-default", "debezium-tuned", "relay", "direct")
EVENTS_PER_SAGA = 4.9
"""Outbox rows per saga of the default mix: the transports' default row rate is the saga rate
times this (saga_cli/bench.py). The flows' rows (docs/contract/flows.md, What each flow emits:
5 happy, 3 out of stock, 5 declined) give .85·5 + .05·3 + .10·5 = 4.9; measured 29,733 rows for
6,067 sagas in the 100/s run of BENCHMARKS.md."""


@dataclass
class Step:
    """One step of find_max: its run, whether it passed (`judge`) and why."""

    result: RunResult
    passed: bool
    why: str


@dataclass
class FindMax:
    """The steps of find_max, in rising rate."""

    steps: list[Step] = field(default_factory=list)

    @property
    def saturation_rate(self) -> float | None:
        """The highest rate (orders per second) that passed; None when none did."""
        passed = [s.result.plan.rate for s in self.steps if s.passed]
        return max(passed) if passed else None

    def as_json(self) -> dict:
        """{"saturation_rate", "steps": [{"rate", "sagas_per_s", "e2e_ms", "passed", "why", "violations"}]}."""
        return {
            "saturation_rate": self.saturation_rate,
            "steps": [{"rate": s.result.plan.rate, "sagas_per_s": round(s.result.sagas_per_s, 1),
                       "e2e_ms": s.result.as_json()["e2e_ms"], "passed": s.passed, "why": s.why,
                       "violations": len(s.result.invariants.violations)} for s in self.steps],
        }


def judge(result: RunResult) -> tuple[bool, str]:
    """(passed, why) for one step: every saga ended in the drain, terminal throughput at least
    PASS_THROUGHPUT (97 %) of the offered rate, and latency converging (RunResult.converging)."""
    offered = result.plan.rate
    if not result.all_terminal:
        return False, f"sagas still in flight {result.plan.drain_timeout:.0f}s after the load stopped"
    if result.sagas_per_s < PASS_THROUGHPUT * offered:
        return False, f"terminal throughput {result.sagas_per_s:.1f}/s < {PASS_THROUGHPUT:.0%} of {offered:g}/s"
    converging, detail = result.converging()
    if not converging:
        return False, f"latency not converging ({detail})"
    return True, f"{result.sagas_per_s:.1f}/s, {detail}"


async def settle(progress: Progress, below: float | None, timeout: float = 600.0) -> None:
    """Wait until the 1-minute load average is under `below` (at most `timeout` s): a run starts on a
    machine that the previous run, or anyone else, has stopped loading. No-op when `below` is None."""
    if below is None:
        return
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        await asyncio.sleep(5)
    progress.console.print(f"[dim]load average {os.getloadavg()[0]:.2f} (waited for < {below:g})[/dim]")


async def find_max(settings: StackSettings, plan: Plan, progress: Progress, *, factor: float, max_steps: int,
                   settle_below: float | None = None) -> FindMax:
    """Runs of `plan` at rising rates (×`factor`, at most `max_steps`) until one fails `judge`; each run
    starts once the load average is under `settle_below`."""
    found = FindMax()
    rate = plan.rate
    for _ in range(max_steps):
        await settle(progress, settle_below)
        result = await run(settings, replace(plan, rate=round(rate, 1), label=f"step {len(found.steps) + 1}"), progress)
        passed, why = judge(result)
        found.steps.append(Step(result, passed, why))
        progress.note(f"{rate:g}/s {'passed' if passed else 'failed'}: {why}")
        if not passed:
            break
        rate *= factor
    return found


OVERLOAD_FACTORS = (1.0, 1.5, 2.0)
"""Offered load as multiples of the saturation rate, for the overload table."""


@dataclass
class Overload:
    """The overload table: one run per factor of `saturation_rate` (BENCHMARKS.md, "Overload")."""

    saturation_rate: float
    duration: float
    runs: list[RunResult] = field(default_factory=list)

    def as_json(self) -> dict:
        """{"saturation_rate", "duration_s", "goodput_within_ms", "rows"}: one row per run with its factor,
        rates per second offered, admitted, refused, finished and goodput, e2e ms, deadline_exceeded,
        violations and failed requests."""
        rows = []
        for result in self.runs:
            doc = result.as_json()
            measured_s = result.plan.duration
            rows.append({
                "factor": round(result.plan.rate / self.saturation_rate, 2),
                "offered_per_s": result.plan.rate,
                "admitted_per_s": round(len(result.measured) / measured_s, 2),
                "refused_per_s": round(result.counters.refused / (result.plan.duration + result.warmed_s), 2),
                "finished_per_s": doc["sagas_per_s"],
                "goodput_per_s": doc["goodput_per_s"],
                "goodput_of_saturation_pct": round(100 * doc["goodput_per_s"] / self.saturation_rate, 1),
                "e2e_ms": doc["e2e_ms"],
                "deadline_exceeded": doc["deadline_exceeded"],
                "violations": doc["violations"],
                "failed": doc["failed"],
            })
        return {"saturation_rate": self.saturation_rate, "duration_s": self.duration,
                "goodput_within_ms": GOODPUT_WITHIN_MS, "rows": rows}


async def overload(settings: StackSettings, plan: Plan, progress: Progress, *,
                   factors: tuple[float, ...] = OVERLOAD_FACTORS, settle_below: float | None = None) -> Overload:
    """Offer `plan.rate` (the saturation rate) times each factor for `plan.duration` seconds."""
    table = Overload(plan.rate, plan.duration)
    for factor in factors:
        await settle(progress, settle_below)
        rate = round(plan.rate * factor, 1)
        result = await run(settings, replace(plan, rate=rate, label=f"{factor:g}× saturation"), progress)
        table.runs.append(result)
        progress.note(f"{factor:g}× ({rate:g}/s): goodput {result.goodput_per_s:.1f}/s, "
                      f"refused {result.counters.refused}")
    return table


@dataclass
class Comparison:
    """The compare suite's results: saga runs and transport measurements by name, the connector
    tuning each Debezium variant ran with, the relay's stats."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    transports: dict[str, transport.TransportResult] = field(default_factory=dict)
    tuning: dict = field(default_factory=dict)
    relay_stats: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        """{"runs", "transports", "tuning", "relay"}: saga runs with ratios to debezium-tuned, transports
        with ratios to direct."""
        base = self.runs.get("debezium-tuned")
        runs = {}
        for name, result in self.runs.items():
            doc = result.as_json()
            entry = {"sagas_per_s": doc["sagas_per_s"], "e2e_ms": doc["e2e_ms"],
                     "hop_ms": {k: doc["hop_ms"][k] for k in ("p50", "p99", "cdc", "consume")},
                     "violations": doc["violations"], "components": doc["components"],
                     "load_average": doc["load_average"]}
            if base is not None and base.e2e_ms():
                b = base.as_json()
                entry["ratio_to_tuned"] = {
                    "sagas_per_s": _ratio(doc["sagas_per_s"], b["sagas_per_s"]),
                    "e2e_p50": _ratio(doc["e2e_ms"]["p50"], b["e2e_ms"]["p50"]),
                    "e2e_p99": _ratio(doc["e2e_ms"]["p99"], b["e2e_ms"]["p99"]),
                }
            runs[name] = entry
        floor = self.transports.get("direct")
        transports = {}
        for name, result in self.transports.items():
            entry = result.as_json()
            if floor is not None:
                entry["throughput_ratio_to_direct"] = _ratio(result.burst_rows_per_s, floor.burst_rows_per_s)
                entry["p50_ratio_to_direct"] = _ratio(result.latency_ms.get("p50"), floor.latency_ms.get("p50"))
            transports[name] = entry
        return {"runs": runs, "transports": transports, "tuning": self.tuning, "relay": self.relay_stats}


def _ratio(value, base):
    return round(value / base, 2) if value is not None and base else None


async def compare(settings: StackSettings, plan: Plan, progress: Progress, *, transport_rate: float,
                  transport_seconds: float, burst: int, settle_below: float | None = None) -> Comparison:
    """The saga runs of `plan` through each of SAGA_VARIANTS, then each of TRANSPORTS alone at
    `transport_rate` rows per second for `transport_seconds` s plus a `burst` of rows (the
    module's docstring); the shipped connector configs are restored whatever happens."""
    transports = Transports(settings)
    comparison = Comparison()
    try:
        for variant in SAGA_VARIANTS:
            await settle(progress, settle_below)
            labelled = replace(plan, label=variant)
            if variant == "relay":
                comparison.runs[variant], comparison.relay_stats = await _with_relay(settings, transports, labelled, progress)
            else:
                comparison.tuning[variant] = await asyncio.to_thread(transports.debezium, variant.split("-")[1])
                comparison.runs[variant] = await run(settings, labelled, progress)
        await transport.ensure_topic(settings.kafka_bootstrap)
        for name in TRANSPORTS:
            await settle(progress, settle_below)
            progress.note(f"transport {name}: {transport_rate:g} rows/s for {transport_seconds:g}s, then {burst} rows at once")
            if name.startswith("debezium"):
                await asyncio.to_thread(transports.debezium, name.split("-")[1])
                comparison.transports[name] = await transport.measure(settings, name, transport_rate, transport_seconds, burst)
            else:
                async with transports.handover():
                    relay = PollingRelay(settings, databases=("orders",)) if name == "relay" else None
                    if relay:
                        await relay.start()
                    try:
                        comparison.transports[name] = await transport.measure(settings, name, transport_rate,
                                                                              transport_seconds, burst)
                    finally:
                        if relay:
                            await relay.stop()
    finally:
        await asyncio.to_thread(transports.restore)
    return comparison


async def _with_relay(settings: StackSettings, transports: Transports, plan: Plan, progress: Progress):
    async with transports.handover():
        relay = PollingRelay(settings)
        await relay.start()
        try:
            result = await run(settings, plan, progress)
            await relay.idle_for(1.0)
        finally:
            await relay.stop()
    stats = {"published": relay.stats.published, "polls": relay.stats.polls, "empty_polls": relay.stats.empty_polls,
             "by_database": relay.stats.by_database, "poll_interval_ms": relay.poll_interval * 1000, "batch": relay.batch,
             "duplicates_after_resume": await _republished(settings, result)}
    return result, stats


async def _republished(settings: StackSettings, result: RunResult, settle_s: float = 5.0) -> int:
    """Records of the relay's run published twice once Debezium is back (0 when the slot advance worked)."""
    from saga_cli.benchmark.invariants import read_topics

    await asyncio.sleep(settle_s)
    keys = {p.order_id for p in result.counters.placements}
    messages = await read_topics(settings.kafka_bootstrap, keys, int(result.window[0] * 1000) - 60_000)
    ids = [m.event_id for m in messages if m.event_id]
    return len(ids) - len(set(ids))
