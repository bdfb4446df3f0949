"""One happy saga is one trace tree across the three services, exported over OTLP/HTTP to a
receiver this test runs.

The stack's own services stay as they are (tracing off). The test starts two more instances of
each service with OTEL_* set to export to its receiver; they join their services' consumer
groups, and with the stack's instance each group holds a third of the partitions. A saga's
events all carry its order id as key, so they share one partition number on every topic: the
test places orders on a traced order_svc until one lands on a partition whose records the
traced instances consume at every hop of the happy path (the others run untraced, as usual).
Then it reads the trace: the request's server span, a consumer span per hop (a child of the
producer span whose context the outbox row carried), the transactions, the outbox writes.
"""
from __future__ import annotations

import asyncio
import gzip
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from saga_cli.kafka import partition_for_key
from saga_cli.services import DATABASES, SERVICES
from shared.tracing import TraceHeaders, parse_traceparent
from tests.faults.test_scale_out import SecondInstance, assigned, wait_for
from tests.support.saga import new_customer, new_sku, order_body, seed_account, seed_stock, wait_for_status

pytestmark = pytest.mark.integration

CALLER_SPAN = "c0ffee00c0ffee00"
"""The span id of the traceparent each POST carries (a trace of its own per order): the server span's parent."""
TRACESTATE = "sagatest=t61rcWkgMzE"

HAPPY_HOPS = {"inventory_svc": "events.order", "payment_svc": "events.inventory", "order_svc": "events.payment"}
"""Who consumes what on the happy path: ORDER_CREATED and ORDER_CONFIRMED, INVENTORY_RESERVED, PAYMENT_COMPLETED."""

HAPPY_EVENTS = 5
"""ORDER_CREATED, INVENTORY_RESERVED, PAYMENT_COMPLETED, ORDER_CONFIRMED, INVENTORY_COMMITTED."""


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    links: tuple[str, ...]


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP protobuf, ExportTraceServiceRequest) on 127.0.0.1: every span kept."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ReceivedSpan(span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                                                   span.name, service, tuple(link.span_id.hex() for link in span.links)))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


def traced_env(receiver: OtlpReceiver, name: str) -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": name, "OTEL_BSP_SCHEDULE_DELAY": "100"}


async def partitions_traced(instances: dict[str, list[SecondInstance]]) -> set[int]:
    """The partition numbers whose happy-path records the traced instances consume, at every hop."""
    good = None
    for name, topic in HAPPY_HOPS.items():
        held = set()
        for instance in instances[name]:
            held |= {int(tp.rsplit("/", 1)[1]) for tp in await assigned(instance.url) or [] if tp.startswith(topic + "/")}
        good = held if good is None else good & held
    return good or set()


async def outbox_traces(settings, order_id: str) -> list[TraceHeaders]:
    found = []
    for database in DATABASES.values():
        connection = await asyncpg.connect(settings.service_dsn(database))
        try:
            found += [TraceHeaders(row["traceparent"], row["tracestate"]) for row in await connection.fetch(
                "SELECT traceparent, tracestate FROM outbox WHERE saga_id = $1", order_id)]
        finally:
            await connection.close()
    return found


async def test_one_happy_saga_is_one_trace_tree_across_the_three_services(services):
    settings = services.settings
    receiver = OtlpReceiver()
    await receiver.start()
    instances = {name: [SecondInstance(name, settings, env=traced_env(receiver, name)) for _ in range(2)]
                 for name in SERVICES}
    try:
        for group in instances.values():
            for instance in group:
                instance.start()
        good: set[int] = set()
        for attempt in range(4):  # another assignment when none of the partitions is traced at every hop
            for name, group in instances.items():
                async def joined(group=group) -> bool:
                    return all([await assigned(instance.url) for instance in group])
                await wait_for(joined, f"{name}: the traced instances holding partitions", 90)
            await asyncio.sleep(2)  # the groups settle
            good = await partitions_traced(instances)
            if good:
                break
            blocking = list(HAPPY_HOPS)[attempt % len(HAPPY_HOPS)]
            for instance in instances[blocking]:
                instance.stop()
                instance.start()
        assert good, "no partition is consumed by the traced instances at every hop of the happy path"

        sku, customer = new_sku(), new_customer()
        await seed_stock(sku, 1000)
        await seed_account(customer, "10000.00")
        order_id, caller_trace = None, None
        async with httpx.AsyncClient(base_url=instances["order_svc"][0].url, timeout=10) as http:
            for _ in range(40):
                caller_trace = uuid.uuid4().hex
                answer = await http.post("/orders", json=order_body(customer, {sku: 1}, "10.00"),
                                         headers={"traceparent": f"00-{caller_trace}-{CALLER_SPAN}-01",
                                                  "tracestate": TRACESTATE})
                assert answer.status_code == 201, answer.text
                placed = answer.json()["order_id"]
                if partition_for_key(placed.encode(), 3) in good:
                    order_id = placed
                    break
        assert order_id is not None, f"no order of 40 landed on partitions {sorted(good)}"
        assert (await wait_for_status(order_id))["status"] == "CONFIRMED"

        # every event of the saga was written with a recorded producer span's context and the caller's tracestate;
        # CONFIRMED comes before the saga's last event (INVENTORY_COMMITTED): wait for all five rows
        began = time.monotonic()
        while len(written := await outbox_traces(settings, order_id)) < HAPPY_EVENTS:
            assert time.monotonic() - began < 30, f"{len(written)} of the saga's {HAPPY_EVENTS} outbox rows"
            await asyncio.sleep(0.1)
        assert {headers.tracestate for headers in written} == {TRACESTATE}
        trace_id = parse_traceparent(written[0].traceparent).trace_id
        assert trace_id == caller_trace, "the saga continues the caller's trace"
        created = {parse_traceparent(headers.traceparent).span_id for headers in written}

        def whole() -> bool:
            names = {(span.service, span.name) for span in receiver.trace(trace_id)}
            recorded = {span.span_id for span in receiver.trace(trace_id)}
            return created <= recorded and {("order_svc", "process events.payment"),
                                            ("inventory_svc", "process events.order")} <= names

        began = time.monotonic()
        while not whole():
            assert time.monotonic() - began < 30, f"the trace is incomplete: {receiver.trace(trace_id)}"
            await asyncio.sleep(0.25)
        await asyncio.sleep(1)  # the last spans of the saga's tail (INVENTORY_COMMITTED) arrive
        spans = receiver.trace(trace_id)
        by_id = {span.span_id: span for span in spans}
        children = defaultdict(list)
        for span in spans:
            children[span.parent_id].append(span)

        # one tree: a single root, the request, whose parent is the caller's span; every other parent recorded
        roots = [span for span in spans if span.parent_id not in by_id]
        assert [(root.service, root.name, root.parent_id) for root in roots] == [
            ("order_svc", "POST /orders", CALLER_SPAN)]
        assert {span.service for span in spans} == set(SERVICES)

        def only(service: str, name: str, parent: ReceivedSpan) -> ReceivedSpan:
            found = [span for span in children[parent.span_id] if (span.service, span.name) == (service, name)]
            assert len(found) == 1, f"{service} {name} under {parent.name}: {found}"
            return found[0]

        def transaction(consumer: ReceivedSpan, event_type: str) -> ReceivedSpan:
            """The event's handler span: under its consumer span, alone or inside a group-commit batch."""
            return only(consumer.service, f"handle {event_type}", consumer)

        request = roots[0]
        start = only("order_svc", "start saga", request)
        only("order_svc", "outbox write", start)
        order_created = only("order_svc", "create events.order", start)
        reserve = transaction(only("inventory_svc", "process events.order", order_created), "ORDER_CREATED")
        reserved = only("inventory_svc", "create events.inventory", reserve)
        charge = transaction(only("payment_svc", "process events.inventory", reserved), "INVENTORY_RESERVED")
        completed = only("payment_svc", "create events.payment", charge)
        confirm = transaction(only("order_svc", "process events.payment", completed), "PAYMENT_COMPLETED")
        confirmed = only("order_svc", "create events.order", confirm)
        commit = transaction(only("inventory_svc", "process events.order", confirmed), "ORDER_CONFIRMED")
        only("inventory_svc", "create events.inventory", commit)
        assert created == {span.span_id for span in spans if span.name.startswith("create ")}
    finally:
        for group in instances.values():
            for instance in group:
                instance.stop()
        await receiver.stop()
