"""A test's own SKUs and customers, orders placed through order_svc's HTTP API, and waiting for them to end.

    catalog = Catalog.new()                       # random names: no other test touches them
    await catalog.seed(services)                  # PUT /stock/{sku}, PUT /accounts/{customer}
    placed = await place_orders(catalog, mixed_flows(300))
    await wait_terminal(settings, [p.order_id for p in placed], timeout=120)

Flows (what the saga does with the order):
  happy         plenty of stock, a rich customer                   → CONFIRMED
  out_of_stock  a SKU with nothing on hand                         → CANCELLED out_of_stock
  declined      a customer whose balance is below the amount       → CANCELLED insufficient_funds
  contended     a SKU with fewer units than orders asking for it   → CONFIRMED or CANCELLED out_of_stock
  cancelled     happy, then the customer cancels right away        → either, depending on the race
Placing retries (with the same Idempotency-Key) while order_svc is down or restarting.
Also here, the way a user reaches the system: `saga(...)` / `saga_json(...)` run the CLI
as a process, `health(service)` and `metric(service, name, **labels)` read the services'
own endpoints.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from saga_cli.stack.config import StackSettings
from tests.support.invariants import Seeded

FLOWS = ("happy", "out_of_stock", "declined", "contended", "cancelled")
EXPECTED = {
    "happy": ("CONFIRMED", None),
    "out_of_stock": ("CANCELLED", "out_of_stock"),
    "declined": ("CANCELLED", "insufficient_funds"),
}
"""flow → (status, reason) it must end in; the other flows race by design."""


def service_url(name: str) -> str:
    port = os.environ.get(f"{name.upper()}_HTTP_PORT", {"order_svc": "8001", "inventory_svc": "8002", "payment_svc": "8003"}[name])
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Catalog:
    tag: str
    contended_units: int = 20

    @classmethod
    def new(cls, contended_units: int = 20) -> "Catalog":
        return cls(uuid.uuid4().hex[:8], contended_units)

    @property
    def plenty(self) -> str:
        return f"plenty-{self.tag}"

    @property
    def none(self) -> str:
        return f"none-{self.tag}"

    @property
    def scarce(self) -> str:
        return f"scarce-{self.tag}"

    @property
    def rich(self) -> str:
        return f"rich-{self.tag}"

    @property
    def poor(self) -> str:
        return f"poor-{self.tag}"

    @property
    def seeded(self) -> Seeded:
        return Seeded(
            stock={self.plenty: 100_000, self.none: 0, self.scarce: self.contended_units},
            balances={self.rich: Decimal("1000000.00"), self.poor: Decimal("5.00")},
        )

    async def seed(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for sku, units in self.seeded.stock.items():
                answer = await client.put(f"{service_url('inventory_svc')}/stock/{sku}", json={"available": units})
                answer.raise_for_status()
            for customer, balance in self.seeded.balances.items():
                answer = await client.put(f"{service_url('payment_svc')}/accounts/{customer}",
                                          json={"balance": f"{balance:.2f}", "currency": "EUR"})
                answer.raise_for_status()

    def order(self, flow: str) -> dict:
        sku, customer, quantity, amount = {
            "happy": (self.plenty, self.rich, random.randint(1, 3), "12.50"),
            "cancelled": (self.plenty, self.rich, 1, "20.00"),
            "out_of_stock": (self.none, self.rich, 1, "10.00"),
            "declined": (self.plenty, self.poor, 1, "10.00"),
            "contended": (self.scarce, self.rich, 1, "7.00"),
        }[flow]
        return {"customer_id": customer, "items": [{"sku": sku, "quantity": quantity}], "amount": amount, "currency": "EUR"}


@dataclass(frozen=True)
class Placed:
    order_id: str
    flow: str


def mixed_flows(count: int, weights: Sequence[int] = (5, 2, 2, 2, 1), seed: int | None = None) -> list[str]:
    """`count` flows drawn with `weights` over FLOWS (happy-heavy by default)."""
    chooser = random.Random(seed)
    return chooser.choices(FLOWS, weights=weights, k=count)


@dataclass
class Placement:
    """Orders placed so far, and how many HTTP attempts failed and were retried."""

    placed: list[Placed] = field(default_factory=list)
    retried: int = 0


async def place_orders(
    catalog: Catalog,
    flows: Iterable[str],
    *,
    concurrency: int = 8,
    per_second: float | None = None,
    timeout: float = 180.0,
    progress: Placement | None = None,
) -> list[Placed]:
    """Place one order per flow (at most `per_second` per second), each retried with its own
    Idempotency-Key until order_svc answers; customer-cancel the `cancelled` ones."""
    progress = progress if progress is not None else Placement()
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + timeout
    interval = 1.0 / per_second if per_second else 0.0

    async with httpx.AsyncClient(base_url=service_url("order_svc"), timeout=10) as client:
        async def one(flow: str) -> None:
            async with gate:
                body = catalog.order(flow)
                key = str(uuid.uuid4())
                answer = await _until_answered(client, "POST", "/orders", deadline, progress, json=body,
                                               headers={"Idempotency-Key": key})
                order_id = answer.json()["order_id"]
                progress.placed.append(Placed(order_id, flow))
                if flow == "cancelled":
                    await _until_answered(client, "POST", f"/orders/{order_id}/cancel", deadline, progress)

        tasks = []
        for flow in flows:
            tasks.append(asyncio.create_task(one(flow)))
            if interval:
                await asyncio.sleep(interval)
        await asyncio.gather(*tasks)
    return list(progress.placed)


async def _until_answered(client: httpx.AsyncClient, method: str, path: str, deadline: float, progress: Placement,
                          **kwargs) -> httpx.Response:
    """The first answer that is not a server outage (2xx, or 409 for a cancel that came too late)."""
    while True:
        try:
            answer = await client.request(method, path, **kwargs)
            if answer.status_code < 500:
                if answer.status_code >= 400 and answer.status_code != 409:
                    raise AssertionError(f"{method} {path} answered {answer.status_code}: {answer.text}")
                return answer
        except httpx.TransportError:
            pass
        progress.retried += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"order_svc did not answer {method} {path} before the deadline")
        await asyncio.sleep(0.25)


async def order_statuses(settings: StackSettings, order_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """order id → (status, reason), read from order_svc's database as its role."""
    connection = await asyncpg.connect(settings.service_dsn("orders"))
    try:
        rows = await connection.fetch("SELECT order_id, status, reason FROM orders WHERE order_id = ANY($1::uuid[])",
                                      [uuid.UUID(o) for o in order_ids])
    finally:
        await connection.close()
    return {str(r["order_id"]): (r["status"], r["reason"]) for r in rows}


async def wait_terminal(settings: StackSettings, order_ids: Sequence[str], timeout: float) -> dict[str, tuple[str, str | None]]:
    """Poll until every order is CONFIRMED or CANCELLED; fail with the stragglers after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = await order_statuses(settings, order_ids)
        open_orders = [o for o in order_ids if statuses.get(o, ("MISSING",))[0] not in ("CONFIRMED", "CANCELLED")]
        if not open_orders:
            return statuses
        if time.monotonic() > deadline:
            sample = ", ".join(f"{o} {statuses.get(o, ('MISSING',))[0]}" for o in open_orders[:5])
            raise AssertionError(f"{len(open_orders)} of {len(order_ids)} sagas not terminal after {timeout:.0f}s: {sample}")
        await asyncio.sleep(0.5)


def outcomes(placed: Sequence[Placed], statuses: dict[str, tuple[str, str | None]]) -> Counter:
    """(flow, status, reason) → count, for the report."""
    return Counter((p.flow, *statuses.get(p.order_id, ("MISSING", None))) for p in placed)


def unexpected(placed: Sequence[Placed], statuses: dict[str, tuple[str, str | None]]) -> list[str]:
    """Orders of a deterministic flow that did not end as that flow must."""
    return [f"{p.order_id} ({p.flow}) ended {statuses.get(p.order_id)}" for p in placed
            if p.flow in EXPECTED and statuses.get(p.order_id) != EXPECTED[p.flow]]


# --- the saga CLI and the services' own endpoints, as a user sees them -------------------------

SAGA = str(Path(sys.executable).with_name("saga"))


def saga(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`saga ARGS…` as a process of its own, with this process's environment (the stack's ports)."""
    return subprocess.run([SAGA, *args], capture_output=True, text=True, timeout=timeout)


async def saga_json(*args: str) -> object:
    done = await asyncio.to_thread(saga, *args, "--json")
    assert done.returncode == 0, f"saga {' '.join(args)} failed: {done.stderr}"
    return json.loads(done.stdout)


async def health(service: str) -> int:
    """The status GET /health answers (0 when it does not answer at all)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{service_url(service)}/health")).status_code
    except httpx.HTTPError:
        return 0


async def metric(service: str, name: str, /, **labels: str) -> float:
    """The sum of a Prometheus metric's samples on the service's GET /metrics matching `labels`."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{service_url(service)}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):  # a metric without labels
            sample_labels, value = "", line[len(name) + 1:]
        elif line.startswith(name + "{"):
            sample_labels, value = line[len(name) + 1:].rsplit("} ", 1)
        else:
            continue
        found = dict(part.split("=", 1) for part in sample_labels.split(",") if part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total
