"""The benchmark's own SKUs and customers (random names), seeded over HTTP, and the orders it places.

Flows and what they end in:
  happy         1–3 items of well-stocked SKUs, a rich customer       → CONFIRMED
  out_of_stock  one of the items is a SKU with nothing on hand        → CANCELLED out_of_stock
  declined      well-stocked SKUs, a customer who cannot pay          → CANCELLED insufficient_funds
"""
from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import aiohttp

from saga_cli.benchmark.invariants import Seeded
from saga_cli.endpoints import INVENTORY_SVC, PAYMENT_SVC
from saga_cli.errors import CliError

FLOWS = ("happy", "out_of_stock", "declined")
EXPECTED = {
    "happy": ("CONFIRMED", None),
    "out_of_stock": ("CANCELLED", "out_of_stock"),
    "declined": ("CANCELLED", "insufficient_funds"),
}
"""flow → the (status, reason) its saga must end in."""

UNITS_ON_HAND = 1_000_000_000
RICH_BALANCE = Decimal("1000000000.00")
POOR_BALANCE = Decimal("1.00")


@dataclass(frozen=True)
class Mix:
    """Shares of the flows, in percent of the orders placed."""

    happy: float = 85.0
    out_of_stock: float = 5.0
    declined: float = 10.0

    @classmethod
    def parse(cls, text: str) -> "Mix":
        """'85,5,10' (happy, out_of_stock, declined); CliError when it is not three shares adding up to 100."""
        try:
            shares = [float(part) for part in text.split(",")]
        except ValueError:
            raise CliError(f"--mix {text!r}: give three numbers, e.g. 85,5,10 (happy, out of stock, declined)") from None
        if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 100) > 0.01:
            raise CliError(f"--mix {text!r}: three shares (happy, out of stock, declined) that add up to 100")
        return cls(*shares)

    def as_json(self) -> dict[str, float]:
        """{flow: share in percent}."""
        return {"happy": self.happy, "out_of_stock": self.out_of_stock, "declined": self.declined}

    def draw(self, rng: random.Random) -> str:
        """One flow name, drawn from `rng` with the shares as weights."""
        return rng.choices(FLOWS, weights=(self.happy, self.out_of_stock, self.declined))[0]


@dataclass(frozen=True)
class BenchCatalog:
    """One run's names, all tagged `bench-<tag>-`: `skus` well stocked, `empty_sku` with nothing on
    hand, `rich` customers who can pay any order, `poor` ones (1.00 EUR) who cannot."""

    tag: str
    skus: tuple[str, ...]
    empty_sku: str
    rich: tuple[str, ...]
    poor: tuple[str, ...]

    @classmethod
    def new(cls, skus: int = 50, customers: int = 50) -> "BenchCatalog":
        """Fresh random names: no test or earlier run touches them, so the seeded levels are known."""
        tag = uuid.uuid4().hex[:8]
        return cls(
            tag=tag,
            skus=tuple(f"bench-{tag}-sku{i}" for i in range(skus)),
            empty_sku=f"bench-{tag}-none",
            rich=tuple(f"bench-{tag}-rich{i}" for i in range(customers)),
            poor=tuple(f"bench-{tag}-poor{i}" for i in range(max(1, customers // 5))),
        )

    @property
    def customers(self) -> tuple[str, ...]:
        """Every customer, rich then poor."""
        return self.rich + self.poor

    @property
    def seeded(self) -> Seeded:
        """What `seed` sets: UNITS_ON_HAND of each SKU (0 of `empty_sku`), RICH_BALANCE or POOR_BALANCE EUR
        per customer."""
        stock = {sku: UNITS_ON_HAND for sku in self.skus}
        stock[self.empty_sku] = 0
        balances = {customer: RICH_BALANCE for customer in self.rich}
        balances.update({customer: POOR_BALANCE for customer in self.poor})
        return Seeded(stock=stock, balances=balances)

    async def seed(self, session: aiohttp.ClientSession, concurrency: int = 8) -> None:
        """PUT /stock/{sku} and PUT /accounts/{customer} on the services, as any client would."""
        gate = asyncio.Semaphore(concurrency)
        seeded = self.seeded

        async def put(url: str, body: dict, what: str) -> None:
            """PUT `body` to `url`, at most `concurrency` at once; CliError on an answer ≥ 300 or no connection."""
            async with gate:
                try:
                    async with session.put(url, json=body) as answer:
                        if answer.status >= 300:
                            raise CliError(f"seeding {what} failed: {answer.status} {(await answer.text())[:200]}")
                except aiohttp.ClientConnectionError:
                    raise CliError(f"seeding {what}: {url.split('/')[2]} is not reachable (is it running? try `saga up`)") from None

        await asyncio.gather(
            *(put(f"{INVENTORY_SVC.url}/stock/{sku}", {"available": units}, f"stock {sku}") for sku, units in seeded.stock.items()),
            *(put(f"{PAYMENT_SVC.url}/accounts/{customer}", {"balance": f"{balance:.2f}", "currency": "EUR"},
                  f"account {customer}") for customer, balance in seeded.balances.items()),
        )

    def order(self, flow: str, rng: random.Random) -> dict:
        """The body of POST /orders for one order of `flow`."""
        items = [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in rng.sample(self.skus, rng.randint(1, 3))]
        customer = rng.choice(self.rich)
        if flow == "out_of_stock":
            items[-1] = {"sku": self.empty_sku, "quantity": 1}
        elif flow == "declined":
            customer = rng.choice(self.poor)
        amount = Decimal(rng.randint(500, 9999)) / 100
        return {"customer_id": customer, "items": items, "amount": f"{amount:.2f}", "currency": "EUR"}


def expected_outcome(flow: str) -> tuple[str, str | None]:
    """The (status, reason) a saga of `flow` must end in (EXPECTED); KeyError for an unknown flow."""
    return EXPECTED[flow]


def unexpected_outcomes(flows: Sequence[tuple[str, str, tuple[str, str | None] | None]]) -> list[str]:
    """(order id, flow, (status, reason)) that did not end as their flow must."""
    return [f"order {order_id} ({flow}) ended {outcome}" for order_id, flow, outcome in flows
            if outcome is not None and outcome != EXPECTED[flow]]
