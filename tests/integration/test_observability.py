"""What the running services tell about sagas: GET /metrics parsed by prometheus_client's
own parsers after a saga ran (Prometheus text by default, OpenMetrics with exemplars that carry
the saga's trace id when asked for), one JSON log line per consumed message in each service's
log with the saga, event, causation and trace ids, and nothing but JSON lines in those logs."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support.saga import (
    SAGA_TIMEOUT,
    SERVICE_URLS,
    database,
    new_customer,
    new_sku,
    place_order,
    seed_account,
    seed_stock,
    wait_for_status,
)

pytestmark = pytest.mark.integration

EVERY_SERVICE = {
    "saga_events_handled": "counter",
    "saga_handler_duration_seconds": "histogram",
    "saga_retries": "counter",
    "saga_dead_letters": "counter",
}
ORDER_SVC_ONLY = {
    "saga_sagas_finished": "counter",
    "saga_sagas_in_flight": "gauge",
    "saga_sagas_stuck": "gauge",
}
HANDLED_BY = {
    "order_svc": {"PAYMENT_COMPLETED"},
    "inventory_svc": {"ORDER_CREATED", "ORDER_CONFIRMED"},
    "payment_svc": {"INVENTORY_RESERVED"},
}
LOG_KEYS = {"saga_id", "event_id", "causation_id", "event_type", "outcome", "duration_ms", "trace_id"}


async def scrape(service: str) -> dict:
    """The service's /metrics as prometheus_client parses it: family name → family."""
    async with httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(answer.text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), "a family is exposed twice"
    for family in families:  # the scrape target is the service: Prometheus adds job and instance
        assert not any("service" in s.labels for s in family.samples), f"{family.name} repeats the scrape target"
    return {family.name: family for family in families}


def sample(families: dict, family: str, sample_name: str, **labels: str) -> float:
    return sum(s.value for s in families[family].samples if s.name == sample_name and s.labels == labels)


def started_at(families: dict) -> float:
    return sample(families, "process_start_time_seconds", "process_start_time_seconds")


async def confirmed_saga() -> str:
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    order_id = await place_order(customer, {sku: 1}, "10.00")
    await wait_for_status(order_id, ["CONFIRMED"])
    return order_id


async def test_metrics_scrape_cleanly_and_count_the_finished_saga(services):
    for attempt in range(3):  # a service restarted by someone else's test counts from zero again: once more
        before = await scrape("order_svc")
        await confirmed_saga()
        deadline = time.monotonic() + 10
        while True:  # the counter moves right after the commit that GET /orders/{id} already shows
            after = await scrape("order_svc")
            grown = sample(after, "saga_sagas_finished", "saga_sagas_finished_total", status="CONFIRMED", reason="") - \
                sample(before, "saga_sagas_finished", "saga_sagas_finished_total", status="CONFIRMED", reason="")
            if grown >= 1 or started_at(after) != started_at(before) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if started_at(after) == started_at(before):
            break
    assert grown >= 1

    for family, kind in {**EVERY_SERVICE, **ORDER_SVC_ONLY}.items():
        assert after[family].type == kind, family
    assert sample(after, "saga_sagas_in_flight", "saga_sagas_in_flight") >= 0
    assert sample(after, "saga_sagas_stuck", "saga_sagas_stuck") >= 0
    for service, handled in HANDLED_BY.items():
        families = await scrape(service)
        for family, kind in EVERY_SERVICE.items():
            assert families[family].type == kind, (service, family)
        for event_type in handled:
            labels = {"event_type": event_type, "outcome": "handled"}
            assert sample(families, "saga_events_handled", "saga_events_handled_total", **labels) >= 1
            assert sample(families, "saga_handler_duration_seconds", "saga_handler_duration_seconds_count",
                          event_type=event_type) >= 1
        if service != "order_svc":
            assert "saga_sagas_finished" not in families or not families["saga_sagas_finished"].samples


def log_file(services, service: str) -> Path:
    return services.settings.log_dir / f"{service}.log"


def handled_lines(path: Path, offset: int, order_id: str) -> list[dict]:
    """The JSON lines written since `offset` that close a message of saga `order_id`."""
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    found = []
    for line in text.splitlines():
        if not line.startswith("{") or order_id not in line:
            continue
        record = json.loads(line)
        if record.get("message") == "message handled" and record.get("saga_id") == order_id:
            found.append(record)
    return found


async def test_each_consumed_message_is_one_json_log_line(services):
    if getattr(services, "kind", "native") != "native":
        pytest.skip("the services' logs are files only on the native stack (`docker compose logs` otherwise)")
    offsets = {service: log_file(services, service).stat().st_size for service in HANDLED_BY}

    order_id = await confirmed_saga()
    async with database(services.settings, "orders") as db:
        traceparent = await db.fetchval(
            "SELECT traceparent FROM outbox WHERE saga_id = $1 AND event_type = 'ORDER_CREATED'", order_id)
    trace = traceparent.split("-")[1]

    deadline = time.monotonic() + SAGA_TIMEOUT
    for service, handled in HANDLED_BY.items():
        while True:
            lines = handled_lines(log_file(services, service), offsets[service], order_id)
            seen = {line["event_type"] for line in lines if line["outcome"] == "handled"}
            if handled <= seen:
                break
            assert time.monotonic() < deadline, f"{service} logged {sorted(seen)} of saga {order_id}, expected {sorted(handled)}"
            await asyncio.sleep(0.2)
        for line in lines:
            assert LOG_KEYS <= line.keys(), line
            assert (line["service"], line["trace_id"], line["level"]) == (service, trace, "info")
            assert line["outcome"] in {"handled", "ignored", "duplicate"}
            uuid.UUID(line["event_id"])
            assert line["duration_ms"] >= 0
            assert (line["causation_id"] is None) == (line["event_type"] == "ORDER_CREATED"), line
        handled_ids = [line["event_id"] for line in lines if line["outcome"] == "handled"]
        assert len(handled_ids) == len(set(handled_ids)), "an event handled twice (a redelivery logs `duplicate`)"



OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def scrape_openmetrics(service: str) -> dict:
    """The service's /metrics asked for as OpenMetrics (the way Prometheus asks), parsed by
    prometheus_client's OpenMetrics parser: family name → family."""
    accept = f"{OPENMETRICS};q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    async with httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10) as http:
        answer = await http.get("/metrics", headers={"Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(OPENMETRICS), answer.headers["content-type"]
    assert answer.text.endswith("# EOF\n")
    return {family.name: family for family in openmetrics_families(answer.text)}


def exemplar_trace_ids(families: dict, event_type: str) -> set[str]:
    """The trace ids of the exemplars on the handler histogram's buckets for `event_type`."""
    return {s.exemplar.labels["trace_id"] for s in families["saga_handler_duration_seconds"].samples
            if s.name == "saga_handler_duration_seconds_bucket" and s.labels.get("event_type") == event_type
            and s.exemplar is not None}


async def test_openmetrics_links_the_handler_latency_to_the_saga_trace(services):
    """A bucket keeps the last observation's exemplar: another saga handled meanwhile may take its
    place, so a few sagas are tried before giving up."""
    for attempt in range(5):
        order_id = await confirmed_saga()
        async with database(services.settings, "orders") as db:
            traceparent = await db.fetchval(
                "SELECT traceparent FROM outbox WHERE saga_id = $1 AND event_type = 'ORDER_CREATED'", order_id)
        trace = traceparent.split("-")[1]
        families = await scrape_openmetrics("inventory_svc")
        found = exemplar_trace_ids(families, "ORDER_CREATED")
        assert found, "no exemplar on saga_handler_duration_seconds{event_type=ORDER_CREATED}"
        assert all(len(trace_id) == 32 and int(trace_id, 16) for trace_id in found), found
        if trace in found:
            break
    else:
        raise AssertionError(f"the trace {trace} of saga {order_id} is on no bucket of inventory_svc's histogram")
    assert families["saga_handler_duration_seconds"].type == "histogram"
    assert families["saga_handler_duration_seconds"].unit == "seconds"

    plain = await scrape("inventory_svc")  # the text format has no exemplars: the same histogram, without them
    assert all(s.exemplar is None for s in plain["saga_handler_duration_seconds"].samples)


def lines_since_last_start(path: Path) -> list[str]:
    """The lines of a service's log written since its supervisor last started it."""
    lines = path.read_text("utf-8", "replace").splitlines()
    starts = [n for n, line in enumerate(lines) if '"logger": "saga_cli.supervise"' in line and "started the service" in line]
    assert starts, f"no start of the service in {path}"
    return lines[starts[-1] + 1:]


async def test_every_line_a_service_writes_is_json(services):
    """faust, mode, aiokafka and aiohttp log through the same JSON handler as the services."""
    if getattr(services, "kind", "native") != "native":
        pytest.skip("the services' logs are files only on the native stack (`docker compose logs` otherwise)")
    await confirmed_saga()
    for service in HANDLED_BY:
        lines = lines_since_last_start(log_file(services, service))
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{service} wrote a line that is not JSON: {line[:200]!r}") from None
        loggers = {record.get("logger", "") for record in records}
        assert any(name.split(".")[0] in {"faust", "mode", "aiokafka"} for name in loggers), sorted(loggers)
        assert all(record.get("service") == service for record in records if record.get("logger") != "saga_cli.supervise")
