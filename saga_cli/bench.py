"""`saga bench`: open-loop load on the running saga, its latencies, throughput, resource use and invariants.

    saga bench --rate 100 --duration 60 --warmup 5            one run
    saga bench --find-max --rate 100 --duration 20            step the rate up until it saturates
    saga bench --compare --rate 100 --duration 60             Debezium default / tuned / polling relay,
                                                              and each transport alone with direct publishing
    … --json                                                  one JSON document on stdout

The machinery lives in saga_cli/benchmark/ (one concern per module); this module
parses the options, checks the stack is there, and prints. The benchmark talks to
the services over HTTP like any client, reads their databases read-only (as their
roles) and the topics afterwards; only `--compare` writes to a service database:
the relay's bookkeeping table and the transport test's outbox rows (both documented
in their modules, see BENCHMARKS.md).
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the benchmark's modules are imported when `saga bench` runs, not by every `saga` command
    from saga_cli.benchmark.progress import Progress
    from saga_cli.benchmark.runner import Plan, RunResult
from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC, not_reachable
from saga_cli.errors import CliError
from saga_cli.stack.config import StackSettings


def bench(
    rate: float = typer.Option(100.0, "--rate", help="Orders per second (open loop: sent on schedule, whatever the answers take)."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds of measured load."),
    warmup: float = typer.Option(5.0, "--warmup", help="Seconds of load before the measurement starts (not measured)."),
    mix: str = typer.Option("85,5,10", "--mix", help="Percent of happy, out-of-stock and declined orders."),
    seed: int = typer.Option(None, "--seed", help="Seed of the order generator (random by default)."),
    drain_timeout: float = typer.Option(60.0, "--drain-timeout", help="Seconds to wait for the last sagas after the load."),
    find_max: bool = typer.Option(False, "--find-max", help="Step the rate up (×--factor) from --rate until it saturates."),
    overload: bool = typer.Option(False, "--overload", help="--rate is the saturation rate: offer 1×, 1.5× and 2× of it "
                                                             "for --duration each; goodput, refusals, latency of the admitted."),
    factor: float = typer.Option(1.25, "--factor", help="--find-max: rate multiplier per step."),
    max_steps: int = typer.Option(10, "--max-steps", help="--find-max: most steps."),
    compare: bool = typer.Option(False, "--compare", help="Debezium default/tuned and a polling relay on the same load; "
                                                          "then each transport alone against direct publishing."),
    transport_rate: float = typer.Option(None, "--transport-rate", help="--compare: rows/s of the transport test "
                                                                        "(default: --rate × outbox rows per saga)."),
    transport_seconds: float = typer.Option(20.0, "--transport-seconds", help="--compare: seconds of the transport test."),
    burst: int = typer.Option(5000, "--burst", help="--compare: rows written at once for the transport throughput."),
    settle_below: float = typer.Option(None, "--settle", help="Before each run, wait (up to 10 min) until the "
                                                             "1-minute load average is below this."),
    plot: Path = typer.Option(None, "--plot", help="Where to write the latency PNG (default: SAGA_HOME/bench/latency.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Benchmark the saga: open-loop orders at --rate for --duration s; e2e and per-hop latency, throughput, CPU/RSS, invariants."""
    if rate <= 0 or duration <= 0 or warmup < 0 or drain_timeout <= 0:
        raise CliError("--rate and --duration must be above 0, --warmup 0 or more")
    if sum((find_max, compare, overload)) > 1:
        raise CliError("--find-max, --compare and --overload are separate benchmarks: give one of them")
    if find_max and factor <= 1:
        raise CliError("--factor must be above 1")
    from saga_cli.benchmark import suites
    from saga_cli.benchmark.catalog import Mix
    from saga_cli.benchmark.plot import latency_png
    from saga_cli.benchmark.progress import Progress
    from saga_cli.benchmark.runner import Plan

    settings = StackSettings()
    plan = Plan(rate=rate, duration=duration, warmup=warmup, mix=Mix.parse(mix), seed=seed, drain_timeout=drain_timeout,
                label="bench")
    plot_path = plot or settings.home / "bench" / "latency.png"
    _check_services()
    console = Console(stderr=True, highlight=False)
    progress = Progress(console)
    machine = _machine(settings)

    _use_uvloop()
    highlight = None
    if find_max:
        found = asyncio.run(suites.find_max(settings, plan, progress, factor=factor, max_steps=max_steps,
                                                settle_below=settle_below))
        best = next((s.result for s in reversed(found.steps) if s.passed), found.steps[-1].result)
        document = {**best.as_json(), "find_max": found.as_json()}
        series = [(f"{s.result.plan.rate:g}/s{'' if s.passed else ' (failed)'}", s.result.e2e_ms()) for s in found.steps]
        title = f"saga e2e latency, find-max: saturation {found.saturation_rate or 0:g} sagas/s"
    elif overload:
        table = asyncio.run(suites.overload(settings, plan, progress, settle_below=settle_below))
        best = table.runs[-1]
        document = {**best.as_json(), "overload": table.as_json()}
        series = [(f"{r.plan.rate:g}/s ({r.plan.rate / rate:g}×)", r.e2e_ms()) for r in table.runs]
        title = f"saga e2e latency of admitted sagas, offered 1×–2× of {rate:g} sagas/s"
    elif compare:
        rows_per_s = transport_rate or round(rate * suites.EVENTS_PER_SAGA)
        comparison = asyncio.run(suites.compare(settings, plan, progress, transport_rate=rows_per_s,
                                                transport_seconds=transport_seconds, burst=burst,
                                                settle_below=settle_below))
        best = comparison.runs["debezium-tuned"]
        document = {**best.as_json(), "compare": comparison.as_json()}
        series = [(name, result.e2e_ms()) for name, result in comparison.runs.items()]
        title = f"saga e2e latency at {rate:g} sagas/s: Debezium default vs tuned vs polling relay"
        highlight = "debezium-tuned"
    else:
        best = asyncio.run(_settled_run(settings, plan, progress, settle_below))
        document = best.as_json()
        series = [(f"{rate:g}/s", best.e2e_ms())]
        title = f"saga e2e latency at {rate:g} sagas/s for {duration:g}s"

    try:
        latency_png(plot_path, series, title, histogram=highlight)
    except ImportError:  # matplotlib is the `bench` extra: the figures stand without the picture
        console.print("bench: no plot drawn: matplotlib is not installed (pip install -e '.[bench]')")
        plot_path = None
    document.update(machine=machine, plot=str(plot_path) if plot_path else None)
    if as_json:
        print(json.dumps(document))
    else:
        _print_run(best, document)
        if find_max:
            _print_find_max(document["find_max"])
        if compare:
            _print_compare(document["compare"])
        if overload:
            _print_overload(document["overload"])
        if plot_path:
            Console().print(f"plot: {plot_path}")


async def _settled_run(settings: StackSettings, plan: Plan, progress: Progress, settle_below: float | None) -> RunResult:
    from saga_cli.benchmark import suites
    from saga_cli.benchmark.runner import run

    await suites.settle(progress, settle_below)
    return await run(settings, plan, progress)


def _use_uvloop() -> None:
    """The load generator on uvloop, like the services: it shares the machine's cores with what it measures."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _check_services() -> None:
    for service in (ORDER_SVC, INVENTORY_SVC, PAYMENT_SVC):
        try:
            answer = httpx.get(f"{service.url}/health", timeout=5)
        except httpx.HTTPError:
            raise CliError(not_reachable(service.name, service.url)) from None
        if answer.status_code != 200:
            raise CliError(f"{service.name} at {service.url} is not healthy ({answer.status_code}): {answer.text[:200]}")


def _machine(settings: StackSettings) -> dict:
    info = {"nproc": os.cpu_count(), "ram_gb": None, "python": platform.python_version(), "platform": platform.platform()}
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    try:
        info["kafka"] = httpx.get(f"{settings.connect_url}/", timeout=5).json().get("version")
        status = httpx.get(f"{settings.connect_url}/connectors/orders-outbox/status", timeout=5).json()
        info["debezium"] = status.get("connector", {}).get("version")
    except (httpx.HTTPError, ValueError):
        pass
    try:
        info["postgres"] = asyncio.run(_postgres_version(settings))
    except Exception:
        pass
    return info


async def _postgres_version(settings: StackSettings) -> str:
    from saga_cli.benchmark.invariants import connect_read_only

    connection = await connect_read_only(settings, "orders")
    try:
        return await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()


# --- human output ------------------------------------------------------------------------------

def _ms(value) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _print_run(result: RunResult, doc: dict) -> None:
    console = Console()
    e2e, hop = doc["e2e_ms"], doc["hop_ms"]
    table = Table(title=f"{doc['label']}: {doc['rate']:g} orders/s for {doc['duration_s']:g}s "
                        f"(load average {doc['load_average']['before'][0]:.2f} → {doc['load_average']['after'][0]:.2f})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("sagas/s reaching a terminal state", f"{doc['sagas_per_s']:.1f}")
    table.add_row(f"goodput: sagas/s finished within {doc['goodput_within_ms']:,.0f} ms", f"{doc['goodput_per_s']:.1f}")
    table.add_row("orders refused (503, admission control)", f"{doc['refused']}")
    table.add_row("measured sagas completed", f"{doc['completed']}/{doc['measured']}"
                  + (f" ({doc['failed']} requests failed)" if doc["failed"] else ""))
    table.add_row("admitted sagas given up at their deadline", f"{doc['deadline_exceeded']}")
    table.add_row("e2e p50 / p95 / p99 / max (ms)", " / ".join(_ms(e2e[k]) for k in ("p50", "p95", "p99", "max")))
    for kind, label in (("cdc", "CDC hop: outbox commit → Kafka"), ("consume", "consume hop: Kafka → inbox"),
                        ("hop", "whole hop: outbox → inbox")):
        table.add_row(f"{label} p50 / p99 (ms)", " / ".join(_ms(hop[kind][k]) for k in ("p50", "p99")))
    table.add_row("POST /orders p50 / p99 (ms)", " / ".join(_ms(doc["http_ms"][k]) for k in ("p50", "p99")))
    table.add_row("invariant violations", f"[{'green' if doc['violations'] == 0 else 'red'}]{doc['violations']}[/]")
    console.print(table)
    components = Table(title="resources over the measurement window")
    for column in ("component", "CPU s", "CPU %", "peak RSS MiB"):
        components.add_column(column, justify="left" if column == "component" else "right")
    for name, usage in doc["components"].items():
        components.add_row(name, f"{usage['cpu_s']:.1f}", f"{100 * usage['cpu_s'] / doc['duration_s']:.0f}",
                           f"{usage['peak_rss_mb']:.0f}")
    console.print(components)
    for line in doc["invariants"]:
        console.print(f"  {line}")
    for violation in doc["violation_details"][:10]:
        console.print(f"  [red]✗ {violation}[/red]")


def _print_overload(table: dict) -> None:
    out = Table(title=f"overload: offered multiples of {table['saturation_rate']:g} sagas/s, "
                      f"{table['duration_s']:g}s each")
    for column in ("offered ×", "offered/s", "admitted/s", "refused/s", "finished/s", "goodput/s",
                   "goodput % of saturation", "admitted e2e p50 / p99 (ms)", "deadline_exceeded", "violations"):
        out.add_column(column, justify="right")
    for row in table["rows"]:
        out.add_row(f"{row['factor']:g}", f"{row['offered_per_s']:g}", f"{row['admitted_per_s']:.1f}",
                    f"{row['refused_per_s']:.1f}", f"{row['finished_per_s']:.1f}", f"{row['goodput_per_s']:.1f}",
                    f"{row['goodput_of_saturation_pct']:.0f}",
                    " / ".join(_ms(row["e2e_ms"][k]) for k in ("p50", "p99")),
                    str(row["deadline_exceeded"]), str(row["violations"]))
    Console().print(out)


def _print_find_max(found: dict) -> None:
    table = Table(title=f"find-max: saturation at {found['saturation_rate'] or '—'} sagas/s")
    for column in ("rate", "sagas/s", "e2e p50", "e2e p99", "verdict"):
        table.add_column(column, justify="right" if column != "verdict" else "left")
    for step in found["steps"]:
        table.add_row(f"{step['rate']:g}", f"{step['sagas_per_s']:.1f}", _ms(step["e2e_ms"]["p50"]), _ms(step["e2e_ms"]["p99"]),
                      ("[green]pass[/green] " if step["passed"] else "[red]fail[/red] ") + step["why"])
    Console().print(table)


def _print_compare(comparison: dict) -> None:
    console = Console()
    runs = Table(title="the saga through each transport (ratios to Debezium tuned)")
    for column in ("transport", "sagas/s", "e2e p50", "e2e p99", "CDC hop p50", "CDC hop p99", "violations", "p99 ratio"):
        runs.add_column(column, justify="left" if column == "transport" else "right")
    for name, run_doc in comparison["runs"].items():
        runs.add_row(name, f"{run_doc['sagas_per_s']:.1f}", _ms(run_doc["e2e_ms"]["p50"]), _ms(run_doc["e2e_ms"]["p99"]),
                     _ms(run_doc["hop_ms"]["cdc"]["p50"]), _ms(run_doc["hop_ms"]["cdc"]["p99"]), str(run_doc["violations"]),
                     str(run_doc.get("ratio_to_tuned", {}).get("e2e_p99", "—")))
    console.print(runs)
    transports = Table(title="the transport alone: commit → consumer (ratios to direct publishing)")
    for column in ("transport", "rows", "p50", "p99", "burst rows/s", "throughput ratio"):
        transports.add_column(column, justify="left" if column == "transport" else "right")
    for name, t in comparison["transports"].items():
        transports.add_row(name, f"{t['received']}/{t['rows']}", _ms(t["latency_ms"].get("p50")), _ms(t["latency_ms"].get("p99")),
                           f"{t['burst_rows_per_s'] or '—'}", str(t.get("throughput_ratio_to_direct", "—")))
    console.print(transports)
