"""While the database is unavailable every view of the three services answers 503 with Retry-After
and a one-line JSON detail naming it (shared/service.py: `request_uow`, `answer_unavailable`);
never a 500, and never after a long wait.

The services' real views are served in-process (aiohttp's test server on 127.0.0.1). The database is
a stand-in pool whose connections are refused, a PostgreSQL port nobody listens on, or a listener
that accepts connections and never answers (a host gone silent): the real unit of work and pool code
run against each.
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from inventory_svc.app import create_runtime as inventory_runtime
from order_svc.app import create_runtime as order_runtime
from payment_svc.app import create_runtime as payment_runtime
from shared import service as service_module
from shared.errors import TransientError
from shared.service import RETRY_AFTER_S
from shared.settings import InventorySettings, OrderSettings, PaymentSettings

pytestmark = pytest.mark.unit

ORDER = {"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "amount": "1.00", "currency": "EUR"}
AN_ID = str(uuid.uuid4())

VIEWS: dict[str, tuple[Callable[..., Any], list[tuple[str, str, dict[str, Any] | None]]]] = {
    "order_svc": (order_runtime, [
        ("POST", "/orders", ORDER),
        ("GET", "/orders", None),
        ("GET", f"/orders/{AN_ID}", None),
        ("GET", f"/orders/{AN_ID}/timeline", None),
        ("POST", f"/orders/{AN_ID}/cancel", None),
        ("POST", f"/deadletters/{AN_ID}/replay", None),
        ("POST", "/deadletters/replay", {}),
    ]),
    "inventory_svc": (inventory_runtime, [
        ("GET", "/stock", None),
        ("GET", "/stock/SKU-1", None),
        ("PUT", "/stock/SKU-1", {"available": 5}),
        ("POST", f"/deadletters/{AN_ID}/replay", None),
        ("POST", "/deadletters/replay", {}),
    ]),
    "payment_svc": (payment_runtime, [
        ("GET", "/accounts", None),
        ("GET", "/accounts/c-1", None),
        ("PUT", "/accounts/c-1", {"balance": "10.00", "currency": "EUR"}),
        ("POST", f"/deadletters/{AN_ID}/replay", None),
        ("POST", "/deadletters/replay", {}),
    ]),
}
SETTINGS = {"order_svc": OrderSettings, "inventory_svc": InventorySettings, "payment_svc": PaymentSettings}


class RefusingPool:
    """A pool whose every connection is refused, as asyncpg's is while PostgreSQL is stopped."""

    def __init__(self) -> None:
        self.acquired = 0

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[Any]:
        self.acquired += 1
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 15432)")
        yield


@asynccontextmanager
async def served(runtime: Any) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(runtime.app.web.web_app, host="127.0.0.1")) as client:
        yield client


async def send(client: TestClient, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, str], str]:
    answer = await client.request(method, path, json=body, headers={"Idempotency-Key": "k-1"} if body is not None else {})
    return answer.status, dict(answer.headers), await answer.text()


def assert_unavailable(answer: tuple[int, dict[str, str], str], says: str = "database unavailable: ") -> dict[str, Any]:
    status, headers, text = answer
    assert status == 503, text[:500]
    assert headers["Retry-After"] == str(RETRY_AFTER_S)
    assert headers["Content-Type"].startswith("application/json")
    assert "\n" not in text.strip()
    body = json.loads(text)
    assert list(body) == ["detail"] and body["detail"].startswith(says), body
    return body


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("service", VIEWS)
async def test_every_view_answers_503_with_retry_after_while_connections_are_refused(service: str) -> None:
    create_runtime, views = VIEWS[service]
    runtime = create_runtime()
    runtime._pool = pool = RefusingPool()

    async with served(runtime) as client:
        for method, path, body in views:
            answer = await send(client, method, path, body)

            detail = assert_unavailable(answer)["detail"]
            assert "ConnectionRefusedError" in detail and "15432" in detail, (method, path, detail)
    assert pool.acquired >= len(views)  # each request did try the database


async def test_a_conflict_worth_retrying_says_the_database_is_busy() -> None:
    runtime = inventory_runtime()

    async def deadlocked():
        try:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        except asyncpg.exceptions.DeadlockDetectedError as error:
            raise TransientError("DeadlockDetectedError: deadlock detected") from error

    runtime.request_uow = deadlocked
    async with served(runtime) as client:
        assert_unavailable(await send(client, "PUT", "/stock/SKU-1", {"available": 5}),
                           says="database busy: DeadlockDetectedError: deadlock detected")


async def test_a_database_nobody_listens_on_is_a_503_at_once() -> None:
    port = closed_port()
    runtime = order_runtime(OrderSettings(database_url=f"postgresql://order_svc:order_svc@127.0.0.1:{port}/orders"))

    async with served(runtime) as client:
        started = time.monotonic()
        answer = await send(client, "POST", "/orders", ORDER)
        took = time.monotonic() - started

    detail = assert_unavailable(answer)["detail"]
    assert str(port) in detail, detail
    assert took < 2.0, f"took {took:.1f}s"


@asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a host gone silent)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("min_size", [1, 0], ids=["making the pool", "acquiring a connection"])
async def test_a_database_that_never_answers_is_a_503_within_the_wait(monkeypatch: pytest.MonkeyPatch, min_size: int) -> None:
    monkeypatch.setattr(service_module, "DATABASE_WAIT_S", 0.5)
    async with silent_listener() as port:
        settings = PaymentSettings(database_url=f"postgresql://payment_svc:payment_svc@127.0.0.1:{port}/payments",
                                   db_pool_min_size=min_size)
        runtime = payment_runtime(settings)
        if min_size == 0:  # the pool exists (it connects nothing yet); the connection is what hangs
            await runtime.pool()
        async with served(runtime) as client:
            started = time.monotonic()
            answers = await asyncio.gather(*(send(client, "GET", "/accounts/c-1", None) for _ in range(3)))
            took = time.monotonic() - started

    for answer in answers:
        assert_unavailable(answer)
    assert took < 0.5 + 1.5, f"took {took:.1f}s"


async def test_other_failures_are_not_hidden_as_unavailable() -> None:
    runtime = payment_runtime()

    async def broken():
        raise RuntimeError("a bug")

    runtime.request_uow = broken
    async with served(runtime) as client:
        status, headers, _ = await send(client, "GET", "/accounts", None)
    assert status == 500 and "Retry-After" not in headers
