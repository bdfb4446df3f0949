"""PostgreSQL stopped for a few seconds: the services answer 503 with Retry-After, at once, and
work again by themselves once it is back.

While PostgreSQL is down (pg_ctl stop -m fast; the outage is kept under 15 s, because other tests
share the stack) POST /orders, GET /stock/{sku} and GET /accounts/{customer} each answer 503 with a
Retry-After of whole seconds and one line of JSON naming the database, well within the services'
DATABASE_WAIT_S, never a 500; `saga order place` says what is down, when to try again and the command
that retries with the same Idempotency-Key (exit 75). Once PostgreSQL is started again the same key
places the order, its saga completes, and every service is healthy again without a restart.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from shared.service import DATABASE_WAIT_S
from tests.support import saga
from tests.support.saga import post_order, run_saga_async, wait_for_status, wait_until_healthy

pytestmark = pytest.mark.faults

OUTAGE_LIMIT_S = 15.0


def assert_unavailable(answer, took: float) -> None:
    assert answer.status_code == 503, f"{answer.status_code}: {answer.text[:300]}"
    assert answer.headers["Retry-After"].isdigit(), answer.headers
    assert "\n" not in answer.text.strip()
    assert answer.json()["detail"].startswith("database unavailable: "), answer.text
    assert took < DATABASE_WAIT_S + 2, f"answered after {took:.1f}s"


async def timed(request):
    started = time.monotonic()
    answer = await request
    return answer, time.monotonic() - started


async def test_post_orders_answers_503_while_postgres_is_stopped_and_works_once_it_is_back(services) -> None:
    postgres = services.stack.postgres
    sku, customer = saga.new_sku(), saga.new_customer()
    await saga.seed_stock(sku, 5)
    await saga.seed_account(customer, "100.00")
    body = saga.order_body(customer, {sku: 1}, "10.00")
    key = str(uuid.uuid4())
    await wait_until_healthy(*saga.SERVICE_URLS)

    stopped_at = time.monotonic()
    try:
        await asyncio.to_thread(postgres.stop, "fast")
        assert postgres.find() is None
        print(f"injected: pg_ctl stop -m fast in {time.monotonic() - stopped_at:.1f}s")

        answers = [await timed(post_order(body, headers={"Idempotency-Key": key})) for _ in range(3)]
        async with saga._client("inventory_svc") as http:
            answers.append(await timed(http.get(f"/stock/{sku}")))
        async with saga._client("payment_svc") as http:
            answers.append(await timed(http.get(f"/accounts/{customer}")))
        cli = await run_saga_async("order", "place", "--customer", customer, "--item", f"{sku}:1", "--amount", "10.00",
                                   "--idempotency-key", key)
    finally:
        started = time.monotonic()
        await asyncio.to_thread(postgres.start)
        outage = time.monotonic() - stopped_at
        print(f"postgres started again in {time.monotonic() - started:.1f}s; outage {outage:.1f}s")

    for answer, took in answers:
        print(f"  {answer.request.method} {answer.request.url.path}: {answer.status_code} in {took * 1000:.0f} ms, "
              f"Retry-After {answer.headers.get('Retry-After')}: {answer.text.strip()}")
        assert_unavailable(answer, took)
    print(f"  saga order place: exit {cli.returncode}: {cli.stderr.strip()}")
    assert cli.returncode == 75 and cli.stdout == ""
    (line,) = cli.stderr.splitlines()
    assert line.startswith("saga: order_svc is unavailable: database unavailable: ") and "; try again in " in line
    assert line.endswith(f"saga order place --customer {customer} --item {sku}:1 --amount 10.00 --idempotency-key {key}")
    assert outage < OUTAGE_LIMIT_S

    # back: the same key places the order once the pool connects again (no restart)
    deadline = time.monotonic() + 30
    while (answer := await post_order(body, headers={"Idempotency-Key": key})).status_code == 503:
        assert time.monotonic() < deadline, f"still 503 30 s after PostgreSQL is back: {answer.text}"
        await asyncio.sleep(0.5)
    assert answer.status_code == 201, answer.text
    print(f"order placed {time.monotonic() - stopped_at - outage:.1f}s after PostgreSQL was back")
    order = await wait_for_status(answer.json()["order_id"])
    assert order["status"] == "CONFIRMED", order

    await wait_until_healthy(*saga.SERVICE_URLS)
    status = await run_saga_async("status", "--json")
    assert status.returncode == 0, status.stderr
    components = {c["name"]: c for c in json.loads(status.stdout)["components"]}
    assert all(c["state"] == "running" for c in components.values()), components
    assert all(components[name]["restarts"] == 0 or components[name]["last_exit"] for name in saga.SERVICE_URLS)
