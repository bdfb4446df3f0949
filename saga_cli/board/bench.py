"""How fast the saga board answers with tens of thousands of sagas on the topics.

    .venv/bin/python -m saga_cli.board.bench --sagas 30000 [--kafka-port 19092] [--repeat 30] [--json]

It starts a private Kafka broker of its own (KRaft, the stack's jars, a temporary folder,
listening on 127.0.0.1 only), so the running stack's topics and services never see a record of
it; writes `--sagas` synthetic sagas to its four topics — the flows of docs/contract/flows.md in the load's mix
(85 % happy, 5 % out of stock, 8 % declined, 2 % cancelled after payment), one in 750 left in
flight (stuck) and 1 % with a dead letter, each record with the key and headers the services' events
carry, timestamps spread over the last hour — then serves the board against it, in this process,
and measures:

- how long the board takes to read them (its index, at start), and this process's memory then;
- each kind of request the page makes, `--repeat` times: the list (all, in flight, stuck,
  confirmed, cancelled; a reason, a customer, a time range, an id prefix), the dead letters and
  one saga read by key and time — milliseconds over loopback HTTP, p50 / p95 / max;
- the page itself in headless Chromium when it is installed: from navigation to the list drawn,
  and from a click on a saga to its lanes drawn.

The broker is stopped (its own pid) and its folder removed at the end, whatever happens.
Bounded: at most MAX_SAGAS sagas, all to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiohttp import web
from aiokafka import AIOKafkaProducer

from saga_cli.stack.config import StackSettings
from saga_cli.stack.kafka import Kafka

MAX_SAGAS = 200_000
HOST = "127.0.0.1"
SPREAD_MS = 3_600_000
"""The sagas' start times are spread over this long before now (an hour)."""
IN_FLIGHT_EVERY = 750
"""One saga in this many is left in flight (ORDER_CREATED and INVENTORY_RESERVED only): stuck,
as they all started more than the order deadline ago."""
MIX = (("happy", 0.85), ("stock_short", 0.05), ("declined", 0.08), ("cancelled_after_payment", 0.02))
FLOWS = {
    "happy": [("events.order", "ORDER_CREATED"), ("events.inventory", "INVENTORY_RESERVED"),
              ("events.payment", "PAYMENT_COMPLETED"), ("events.order", "ORDER_CONFIRMED"),
              ("events.inventory", "INVENTORY_COMMITTED")],
    "stock_short": [("events.order", "ORDER_CREATED"), ("events.inventory", "INVENTORY_REJECTED"),
                    ("events.order", "ORDER_CANCELLED")],
    "declined": [("events.order", "ORDER_CREATED"), ("events.inventory", "INVENTORY_RESERVED"),
                 ("events.payment", "PAYMENT_FAILED"), ("events.inventory", "INVENTORY_RELEASED"),
                 ("events.order", "ORDER_CANCELLED")],
    "cancelled_after_payment": [("events.order", "ORDER_CREATED"), ("events.inventory", "INVENTORY_RESERVED"),
                                ("events.payment", "PAYMENT_COMPLETED"), ("events.order", "ORDER_CONFIRMATION_FAILED"),
                                ("events.payment", "PAYMENT_REFUNDED"), ("events.inventory", "INVENTORY_RELEASED"),
                                ("events.order", "ORDER_CANCELLED")],
}
REASONS = {"stock_short": "out_of_stock", "declined": "insufficient_funds", "cancelled_after_payment": "cancelled_by_customer"}
CUSTOMERS = 500


def main() -> int:
    """`python -m saga_cli.board.bench`: parse the options (the module's docstring), run, print the
    report (one JSON document with --json); 0. Exits 2 when --sagas is outside 1–MAX_SAGAS."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sagas", type=int, default=30_000, help=f"sagas to write (1–{MAX_SAGAS})")
    parser.add_argument("--kafka-port", type=int, default=19092, help="the private broker's port (and the next one)")
    parser.add_argument("--repeat", type=int, default=30, help="times each request is timed")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    options = parser.parse_args()
    if not 1 <= options.sagas <= MAX_SAGAS:
        parser.error(f"--sagas must be from 1 to {MAX_SAGAS}")
    report = asyncio.run(run(options.sagas, options.kafka_port, options.repeat))
    if options.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


async def run(sagas: int, kafka_port: int, repeat: int) -> dict[str, Any]:
    """Write `sagas` sagas to a private broker on 127.0.0.1:`kafka_port`, serve the board on it and
    time it; the report {"sagas", "records", "write_s", "index_s", "rss_mb", "requests": {name:
    {p50_ms, p95_ms, max_ms, rows}}, "browser": {...} or null}."""
    home = Path(tempfile.mkdtemp(prefix="saga-board-bench-"))
    real = StackSettings()
    (home / "lib").symlink_to(real.home / "lib", target_is_directory=True)
    settings = StackSettings(home=home, kafka_port=kafka_port, kafka_controller_port=kafka_port + 1,
                             kafka_heap="512m", keys_dir=home / "keys")
    broker = Kafka(settings)
    try:
        await asyncio.to_thread(broker.start)
        bootstrap = f"{HOST}:{kafka_port}"
        started = time.monotonic()
        written, samples = await write_sagas(bootstrap, sagas)
        write_s = time.monotonic() - started
        return {"sagas": sagas, "records": written, "write_s": round(write_s, 1),
                **await measure_board(bootstrap, samples, repeat)}
    finally:
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(home, ignore_errors=True)


# --- the sagas ---------------------------------------------------------------------------------

def saga_records(order_id: str, flow: str, customer: str, start_ms: int, rng: random.Random,
                 in_flight: bool) -> Iterator[tuple[str, int, dict[str, str], dict[str, Any]]]:
    """(topic, timestamp ms, headers, payload) of each record of one saga of `flow`."""
    steps = FLOWS[flow][:2] if in_flight else FLOWS[flow]
    at = start_ms
    cause = ""
    trace = uuid.uuid4().hex
    for number, (topic, event_type) in enumerate(steps):
        event_id = str(uuid.uuid4())
        payload: dict[str, Any] = {"event_type": event_type, "schema_version": 1, "order_id": order_id,
                                   "occurred_at": datetime.fromtimestamp(at / 1000, timezone.utc).isoformat()}
        if event_type == "ORDER_CREATED":
            payload.update(customer_id=customer, items=[{"sku": f"SKU-{rng.randrange(50)}", "quantity": 1}],
                           amount=f"{rng.randrange(100, 9000) / 100:.2f}", currency="EUR")
        if event_type in ("ORDER_CANCELLED", "ORDER_CONFIRMATION_FAILED", "INVENTORY_REJECTED", "PAYMENT_FAILED"):
            payload["reason"] = REASONS[flow]
        # the customer's cancellation has no cause on the topics (flow 4)
        causation = "" if event_type == "ORDER_CONFIRMATION_FAILED" else cause
        headers = {"id": event_id, "eventType": event_type, "sagaId": order_id, "causationId": causation,
                   "traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01", "signature": "bench"}
        yield topic, at, headers, payload
        cause = event_id
        at += rng.randrange(5, 60) if number else rng.randrange(10, 40)


def dead_letter(order_id: str, at_ms: int, refused: str) -> tuple[str, int, dict[str, str], dict[str, Any]]:
    """A DEAD_LETTER record as a service publishes one (saga_cli/dlq.dead_letter_from reads it)."""
    payload = {"dead_letter_id": str(uuid.uuid4()), "consumer": "order_svc", "topic": "events.payment",
               "partition": 0, "offset": 0, "error": "unauthenticated: no signature",
               "at": datetime.fromtimestamp(at_ms / 1000, timezone.utc).isoformat(),
               "key": order_id, "event_type": refused, "event_id": str(uuid.uuid4())}
    headers = {"id": str(uuid.uuid4()), "eventType": "DEAD_LETTER", "sagaId": order_id,
               "causationId": payload["event_id"], "signature": "bench"}
    return "events.deadletter", at_ms, headers, payload


async def write_sagas(bootstrap: str, count: int) -> tuple[int, dict[str, Any]]:
    """Write `count` sagas; (records written, samples of what was written for the queries)."""
    rng = random.Random(16)
    now_ms = int(time.time() * 1000)
    flows = [name for name, _ in MIX]
    weights = [share for _, share in MIX]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1)
    await producer.start()
    written = 0
    samples: dict[str, Any] = {"ids": [], "customer": "bench-7"}
    try:
        pending = []
        for number in range(count):
            order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            start_ms = now_ms - SPREAD_MS + (SPREAD_MS * number) // count - 60_000
            in_flight = number % IN_FLIGHT_EVERY == IN_FLIGHT_EVERY - 1
            flow = rng.choices(flows, weights)[0]
            records = list(saga_records(order_id, flow, f"bench-{rng.randrange(CUSTOMERS)}", start_ms, rng, in_flight))
            if rng.random() < 0.01:
                records.append(dead_letter(order_id, records[-1][1] + 5, "PAYMENT_COMPLETED"))
            for topic, at, headers, payload in records:
                pending.append(await producer.send(
                    topic, json.dumps(payload).encode(), key=order_id.encode(), timestamp_ms=at,
                    headers=[(name, value.encode()) for name, value in headers.items()]))
                written += 1
            if number % 97 == 0:
                samples["ids"].append(order_id)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    samples["range"] = (now_ms - SPREAD_MS // 2, now_ms - SPREAD_MS // 2 + 300_000)
    return written, samples


# --- the board ---------------------------------------------------------------------------------

async def measure_board(bootstrap: str, samples: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Serve the board on a free loopback port against `bootstrap` and time it: {"index_s", "rss_mb",
    "requests": {name: {p50_ms, p95_ms, max_ms, rows}}, "browser"}. RuntimeError when it has not read
    the topics within 10 minutes; an HTTP error status raises httpx.HTTPStatusError."""
    from saga_cli.board.server import STATE_KEY, create_app

    port = _free_port()
    app = create_app(None, 30.0, port, bootstrap)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    url = f"http://{HOST}:{port}"
    try:
        began = time.monotonic()
        while not app[STATE_KEY].caught_up:
            if time.monotonic() - began > 600:
                raise RuntimeError("the board did not read the topics within 10 minutes")
            await asyncio.sleep(0.05)
        index_s = time.monotonic() - began
        rss_mb = psutil.Process().memory_info().rss / 2**20
        since, until = samples["range"]
        prefix = samples["ids"][len(samples["ids"]) // 2][:6]
        requests = {
            "list: all (newest 100)": "/api/sagas?status=all&limit=100",
            "list: in flight": "/api/sagas?status=in_flight",
            "list: stuck": "/api/sagas?status=stuck",
            "list: confirmed": "/api/sagas?status=confirmed",
            "list: cancelled, reason insufficient_funds": "/api/sagas?status=cancelled&reason=insufficient_funds",
            "list: one customer": f"/api/sagas?customer={samples['customer']}",
            "list: a five-minute range": f"/api/sagas?since={since}&until={until}",
            "list: search by id prefix": f"/api/sagas?q={prefix}",
            "dead letters": "/api/deadletters?limit=100",
        }
        timings = {}
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for name, path in requests.items():
                timings[name] = await _time_requests(http, [path] * repeat)
            ids = (samples["ids"] * repeat)[:repeat]
            timings["one saga (lanes, read by key and time)"] = await _time_requests(http, [f"/api/sagas/{i}" for i in ids])
        browser = await asyncio.to_thread(_browser_timings, url, samples["ids"][-1], repeat=min(repeat, 10))
        return {"index_s": round(index_s, 2), "rss_mb": round(rss_mb), "requests": timings, "browser": browser}
    finally:
        await runner.cleanup()


async def _time_requests(http: httpx.AsyncClient, paths: list[str]) -> dict[str, Any]:
    took, rows = [], None
    for path in paths:
        started = time.perf_counter()
        answer = await http.get(path)
        took.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        body = answer.json()
        rows = len(body.get("sagas") or body.get("dead_letters") or body.get("steps") or [])
    return _stats(took) | {"rows": rows}


def _browser_timings(url: str, order_id: str, repeat: int) -> dict[str, Any] | None:
    """Navigation → list drawn, and opening a saga → its lanes drawn, in headless Chromium (ms);
    None when Chromium, its driver or selenium is missing."""
    browser_path, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not browser_path or not driver_path:
        return None
    profile = tempfile.mkdtemp(prefix="saga-board-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        lists, sagas = [], []
        for _ in range(repeat):
            driver.get("about:blank")
            started = time.perf_counter()
            driver.get(f"{url}/")
            _until(driver, "return document.querySelectorAll('#sagas tbody tr').length >= 100")
            lists.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            driver.execute_script(f"location.hash = 'saga={order_id}'")
            _until(driver, f"return document.querySelector('#saga[data-order-id=\"{order_id}\"] .step') !== null")
            sagas.append((time.perf_counter() - started) * 1000)
        return {"page to list drawn": _stats(lists), "open a saga to lanes drawn": _stats(sagas)}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _until(driver, script: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page did not get there within {timeout:.0f}s: {script}")
        time.sleep(0.005)


def _stats(took_ms: list[float]) -> dict[str, float]:
    ordered = sorted(took_ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1), "max_ms": round(ordered[-1], 1)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def print_report(report: dict[str, Any]) -> None:
    """Print `run`'s report as a table: one line per request (p50, p95, max ms, rows), then the browser's."""
    print(f"{report['sagas']} sagas, {report['records']} records written in {report['write_s']} s; "
          f"the board read them in {report['index_s']} s ({report['rss_mb']} MB resident)")
    print(f"{'request':<48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'rows':>6}")
    for name, figures in report["requests"].items():
        print(f"{name:<48} {figures['p50_ms']:>8} {figures['p95_ms']:>8} {figures['max_ms']:>8} {figures['rows']:>6}")
    for name, figures in (report["browser"] or {}).items():
        print(f"{'browser: ' + name:<48} {figures['p50_ms']:>8} {figures['p95_ms']:>8} {figures['max_ms']:>8}")


if __name__ == "__main__":
    raise SystemExit(main())
