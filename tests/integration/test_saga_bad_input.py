"""Bad input is refused at the door: 422 with the validation errors over HTTP (413 for a body over
64 KiB), one line and exit 1 from the CLI, and nothing written or published. Unknown ids are 404,
finished orders cannot be cancelled. Hostile input — NUL and control characters, invalid UTF-8,
absurd sizes and numbers, JSON nested 60,000 deep, repeated names — gets its exact status with a
one-line JSON detail, never a 500, and nothing of it reaches PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from tests.support.kafka import TopicReader
from tests.support.saga import (
    ORDER_TOPIC,
    SERVICE_URLS,
    balance,
    cancel_order,
    database,
    get_order,
    new_customer,
    new_sku,
    order_body,
    order_history,
    orders_of_customer,
    place_order,
    post_order,
    run_saga_async,
    saga_events,
    seed_account,
    seed_stock,
    stock,
    wait_for_status,
)

pytestmark = pytest.mark.integration

MISSING = object()

BAD_ORDERS = {
    # name: (changes to a valid body, the loc of the error that names the problem)
    "zero quantity": ({"items": [{"sku": "SKU-1", "quantity": 0}]}, ["items", 0, "quantity"]),
    "negative quantity": ({"items": [{"sku": "SKU-1", "quantity": -1}]}, ["items", 0, "quantity"]),
    "fractional quantity": ({"items": [{"sku": "SKU-1", "quantity": 1.5}]}, ["items", 0, "quantity"]),
    "quantity as text": ({"items": [{"sku": "SKU-1", "quantity": "1"}]}, ["items", 0, "quantity"]),
    "negative amount": ({"amount": "-1.00"}, ["amount"]),
    "zero amount": ({"amount": "0.00"}, ["amount"]),
    "amount with 3 decimals": ({"amount": "1.234"}, ["amount"]),
    "amount not a number": ({"amount": "abc"}, ["amount"]),
    "amount as a binary float": ({"amount": 1.1}, ["amount"]),
    "unknown currency": ({"currency": "XYZ"}, ["currency"]),
    "lower-case currency": ({"currency": "eur"}, ["currency"]),
    "empty items": ({"items": []}, ["items"]),
    "same sku twice": ({"items": [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-1", "quantity": 2}]}, ["items"]),
    "unknown field": ({"coupon": "FREE"}, ["coupon"]),
    "unknown item field": ({"items": [{"sku": "SKU-1", "quantity": 1, "colour": "red"}]}, ["items", 0, "colour"]),
    "missing amount": ({"amount": MISSING}, ["amount"]),
}

BAD_CLI_ORDERS = {
    # name: (arguments after --customer C, a word the one-line error contains)
    "zero quantity": (["--item", "SKU-1:0", "--amount", "1.00"], "quantity"),
    "negative quantity": (["--item", "SKU-1:-1", "--amount", "1.00"], "quantity"),
    "negative amount": (["--item", "SKU-1:1", "--amount", "-1.00"], "--amount"),
    "zero amount": (["--item", "SKU-1:1", "--amount", "0"], "amount"),
    "amount with 3 decimals": (["--item", "SKU-1:1", "--amount", "1.234"], "--amount"),
    "amount not a number": (["--item", "SKU-1:1", "--amount", "abc"], "--amount"),
    "unknown currency": (["--item", "SKU-1:1", "--amount", "1.00", "--currency", "XYZ"], "currency"),
    "no items": (["--amount", "1.00"], "--item"),
}


def _bad_body(customer: str, changes: dict) -> dict:
    body = order_body(customer, {"SKU-1": 1}, "1.00")
    for name, value in changes.items():
        if value is MISSING:
            del body[name]
        else:
            body[name] = value
    return body


@pytest.mark.parametrize("changes, loc", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
async def test_an_invalid_order_is_refused_with_its_validation_errors(services, changes, loc):
    customer = new_customer()

    answer = await post_order(_bad_body(customer, changes))

    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert loc in [error["loc"] for error in errors], errors
    assert all(error["msg"] and error["type"] for error in errors)
    assert await orders_of_customer(services.settings, customer) == 0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{{"customer_id": "{customer}", "items": [', id="truncated"),
        pytest.param("{{'customer_id': '{customer}'}}", id="single quotes"),
        pytest.param('["{customer}"]', id="not an object"),
        pytest.param("", id="empty"),
    ],
)
async def test_a_body_that_is_not_an_order_object_is_refused(services, raw):
    customer = new_customer()

    answer = await post_order(None, raw=raw.format(customer=customer).encode())

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] and all(error["msg"] for error in answer.json()["detail"])
    assert await orders_of_customer(services.settings, customer) == 0


@pytest.mark.parametrize("args, mention", BAD_CLI_ORDERS.values(), ids=BAD_CLI_ORDERS.keys())
async def test_cli_refuses_an_invalid_order_in_one_line(services, args, mention):
    customer = new_customer()

    done = await run_saga_async("order", "place", "--customer", customer, *args)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("saga: ") and mention in done.stderr
    assert "Traceback" not in done.stderr
    assert await orders_of_customer(services.settings, customer) == 0


async def test_cli_refuses_an_unknown_option_as_a_usage_error(services):
    customer = new_customer()

    done = await run_saga_async("order", "place", "--customer", customer, "--item", "SKU-1:1", "--amount", "1.00", "--coupon", "FREE")

    assert done.returncode == 2  # click's usage errors (docs/cli.md), not a failed request
    assert "No such option: --coupon" in done.stderr
    assert "Traceback" not in done.stderr
    assert await orders_of_customer(services.settings, customer) == 0


async def test_refused_orders_publish_nothing(services):
    # (the CLI's refusals reach order_svc as these same requests, or not at all)
    refused: list[str] = []

    def customer() -> str:
        refused.append(new_customer())
        return refused[-1]

    async with TopicReader(services.settings.kafka_bootstrap, ORDER_TOPIC) as reader:
        answers = await asyncio.gather(
            *(post_order(_bad_body(customer(), changes)) for changes, _ in BAD_ORDERS.values()),
            post_order(None, raw=f'{{"customer_id": "{customer()}", "items": ['.encode()),
        )
        # a valid order placed after them: once its ORDER_CREATED is out, theirs would be too
        marker = await place_order(new_customer(), {new_sku(): 1}, "1.00")
        await saga_events(reader, marker, until="ORDER_CREATED")

    assert {answer.status_code for answer in answers} == {422}
    assert [r for r in reader.records if (r.value or {}).get("customer_id") in refused] == []
    for name in refused:
        assert await orders_of_customer(services.settings, name) == 0


async def test_unknown_order_id_is_404_and_a_malformed_one_422(services):
    unknown = str(uuid.uuid4())

    assert (await get_order(unknown)).status_code == 404
    assert (await cancel_order(unknown)).status_code == 404
    malformed = await get_order("not-a-uuid")
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "order_id"]
    assert (await cancel_order("not-a-uuid")).status_code == 422
    shown = await run_saga_async("order", "show", unknown, "--json")
    assert (shown.returncode, shown.stdout, shown.stderr.strip()) == (1, "", f"saga: order {unknown} not found")


async def test_a_finished_order_cannot_be_cancelled(services):
    settings = services.settings
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 1)
    await seed_account(customer, "100.00")
    confirmed = await place_order(customer, {sku: 1}, "10.00")
    assert (await wait_for_status(confirmed))["status"] == "CONFIRMED"
    cancelled = await place_order(customer, {sku: 1}, "10.00")  # the only unit is sold: out of stock
    assert (await wait_for_status(cancelled))["status"] == "CANCELLED"
    history = await order_history(settings, confirmed)

    for order_id, status in ((confirmed, "CONFIRMED"), (cancelled, "CANCELLED")):
        answer = await cancel_order(order_id)
        assert answer.status_code == 409, answer.text
        assert status in answer.json()["detail"]
    by_cli = await run_saga_async("order", "cancel", confirmed)

    assert by_cli.returncode == 1
    assert by_cli.stderr.startswith(f"saga: order {confirmed} cannot be cancelled") and len(by_cli.stderr.splitlines()) == 1
    assert (await wait_for_status(confirmed))["status"] == "CONFIRMED"
    assert await order_history(settings, confirmed) == history
    assert json.loads((await run_saga_async("order", "show", confirmed, "--json")).stdout)["status"] == "CONFIRMED"


# --- hostile requests: the exact status, one line of JSON, nothing written, the services unmoved ------------

MAX_BODY = 64 * 1024  # shared/service.py MAX_BODY_BYTES, as a client sees it


def one_line_refusal(answer: httpx.Response, status: int, loc: list | None = None) -> None:
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert "\n" not in answer.text and len(answer.text) < 5_000, answer.text[:300]
    detail = answer.json()["detail"]
    if status == 413:
        assert detail == f"request body is larger than {MAX_BODY} bytes"
    elif loc is not None:
        assert loc in [error["loc"] for error in detail], detail


def a_body(customer: str, **raw: str) -> bytes:
    """An order's JSON text with some values given as raw JSON, e.g. amount="1e400"."""
    parts = {"customer_id": json.dumps(customer), "items": '[{"sku": "SKU-1", "quantity": 1}]', "amount": '"1.00"',
             "currency": '"EUR"', **raw}
    return ("{" + ", ".join(f'"{name}": {value}' for name, value in parts.items()) + "}").encode()


async def chunked(data: bytes):
    for start in range(0, len(data), 16_384):
        yield data[start:start + 16_384]


HOSTILE_ORDERS = {
    # name: (the body for a customer, the status, the loc of the error)
    "a body of 64 KiB + 1": (lambda c: a_body(c) + b" " * MAX_BODY, 413, None),
    "100,000 '['": (lambda c: b"[" * 100_000, 413, None),
    "60,000 '[' (too deep for json)": (lambda c: b"[" * 60_000, 422, ["body"]),
    "invalid UTF-8": (lambda c: a_body(c).replace(b'"EUR"', b'"EU\xff"'), 422, ["body"]),
    "a name twice": (lambda c: a_body(c, currency='"EUR", "amount": "9999.00"'), 422, ["body"]),
    "NaN": (lambda c: a_body(c, amount="NaN"), 422, ["body"]),
    "an array": (lambda c: json.dumps([c]).encode(), 422, ["body"]),
    "a 5,000-digit quantity": (lambda c: a_body(c, items='[{"sku": "S", "quantity": ' + "9" * 5_000 + "}]"), 422, ["body"]),
    "\\u0000 in the customer id": (lambda c: a_body(c[:-1] + "\x00"), 422, ["customer_id"]),
    "\\u0000 in a sku": (lambda c: a_body(c, items='[{"sku": "S\\u0000", "quantity": 1}]'), 422, ["items", 0, "sku"]),
    "a lone surrogate in a sku": (lambda c: a_body(c, items='[{"sku": "S\\ud800", "quantity": 1}]'), 422, ["items", 0, "sku"]),
    "101 items": (lambda c: a_body(c, items=json.dumps([{"sku": f"S{n}", "quantity": 1} for n in range(101)])), 422, ["items"]),
    "a quantity of 1,000,001": (lambda c: a_body(c, items='[{"sku": "S", "quantity": 1000001}]'), 422, ["items", 0, "quantity"]),
    "a quantity of 2**63": (lambda c: a_body(c, items=f'[{{"sku": "S", "quantity": {2**63}}}]'), 422, ["items", 0, "quantity"]),
    "an amount over NUMERIC(12,2)": (lambda c: a_body(c, amount='"10000000000.00"'), 422, ["amount"]),
    "an amount of 1e400": (lambda c: a_body(c, amount="1e400"), 422, ["amount"]),
}


@pytest.mark.parametrize("body, status, loc", HOSTILE_ORDERS.values(), ids=HOSTILE_ORDERS.keys())
async def test_a_hostile_order_is_refused_with_its_status_and_writes_nothing(services, body, status, loc):
    customer = new_customer()

    answer = await post_order(None, raw=body(customer))

    one_line_refusal(answer, status, loc)
    assert await orders_of_customer(services.settings, customer) == 0


async def test_a_body_over_the_limit_without_a_length_is_refused_once_it_passes_it(services):
    customer = new_customer()
    async with httpx.AsyncClient(base_url=SERVICE_URLS["order_svc"].url, timeout=30) as http:
        answer = await http.post("/orders", content=chunked(a_body(customer) + b" " * 10_000_000))

    assert "content-length" not in answer.request.headers
    one_line_refusal(answer, 413)
    assert await orders_of_customer(services.settings, customer) == 0


HOSTILE_KEYS = {
    "256 characters": "k" * 256,
    "3,000 characters (more than its unique index holds)": "k" * 3_000,
    "a tab": "k\tk",
    "not ASCII": "clé".encode(),
    "invalid UTF-8": b"k\xffk",
}


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
async def test_a_hostile_idempotency_key_is_422_and_places_nothing(services, key):
    customer = new_customer()

    answer = await post_order(order_body(customer, {"SKU-1": 1}, "1.00"), {"Idempotency-Key": key})

    one_line_refusal(answer, 422, ["header", "Idempotency-Key"])
    assert await orders_of_customer(services.settings, customer) == 0


async def test_an_order_with_a_hostile_traceparent_is_placed_with_a_trace_of_its_own(services):
    customer = new_customer()
    garbage = "00-" + "z" * 4_000

    answer = await post_order(order_body(customer, {"SKU-1": 1}, "1.00"), {"traceparent": garbage})

    assert answer.status_code == 201, answer.text  # the header is parsed, never stored: a new trace begins
    async with database(services.settings, "orders") as db:
        stored = await db.fetchval("SELECT traceparent FROM outbox WHERE saga_id = $1", answer.json()["order_id"])
    assert len(stored) == 55 and stored.startswith("00-") and "z" not in stored


HOSTILE_IDS = {
    # name: the path segment after a unique, valid prefix
    "NUL": "%00",
    "invalid UTF-8": "%FF%FE",
    "a space": "%20x",
    "CR LF": "%0D%0A",
    "an escape sequence": "%1B%5B2J",
    "3,000 characters": "x" * 3_000,
}


@pytest.mark.parametrize("tail", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
async def test_a_hostile_sku_or_customer_in_the_path_is_422_and_writes_nothing(services, tail):
    sku, customer = new_sku(), new_customer()

    async with httpx.AsyncClient(base_url=SERVICE_URLS["inventory_svc"].url, timeout=10) as http:
        stock_answers = [await http.put(f"/stock/{sku}{tail}", json={"available": 1}), await http.get(f"/stock/{sku}{tail}")]
    async with httpx.AsyncClient(base_url=SERVICE_URLS["payment_svc"].url, timeout=10) as http:
        account_answers = [await http.put(f"/accounts/{customer}{tail}", json={"balance": "1.00"}), await http.get(f"/accounts/{customer}{tail}")]

    for answer in stock_answers:
        one_line_refusal(answer, 422, ["path", "sku"])
    for answer in account_answers:
        one_line_refusal(answer, 422, ["path", "customer"])
    async with database(services.settings, "inventory") as db:
        assert await db.fetchval("SELECT count(*) FROM stock WHERE starts_with(sku, $1)", sku) == 0
    async with database(services.settings, "payments") as db:
        assert await db.fetchval("SELECT count(*) FROM accounts WHERE starts_with(customer_id, $1)", customer) == 0


@pytest.mark.parametrize("service, path, body, loc", [
    ("inventory_svc", "/stock/{sku}", b'{"available": -1}', ["available"]),
    ("inventory_svc", "/stock/{sku}", b'{"available": 1000000001}', ["available"]),
    ("inventory_svc", "/stock/{sku}", b'{"available": 1, "available": 2}', ["body"]),
    ("inventory_svc", "/stock/{sku}", b" " * (MAX_BODY + 1), None),
    ("payment_svc", "/accounts/{customer}", b'{"balance": "10000000000.00"}', ["balance"]),
    ("payment_svc", "/accounts/{customer}", b'{"balance": 1e400}', ["balance"]),
    ("payment_svc", "/accounts/{customer}", b'{"balance": "1.00", "currency": "EU\\u0000"}', ["currency"]),
    ("payment_svc", "/accounts/{customer}", b"[" * 60_000, ["body"]),
], ids=["negative stock", "stock over 1e9", "available twice", "stock body over 64 KiB",
        "balance over NUMERIC(12,2)", "balance 1e400", "NUL in the currency", "60,000 '['"])
async def test_a_hostile_seed_is_refused_and_writes_nothing(services, service, path, body, loc):
    sku, customer = new_sku(), new_customer()

    async with httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10) as http:
        answer = await http.put(path.format(sku=sku, customer=customer), content=body)

    one_line_refusal(answer, 413 if loc is None else 422, loc)
    assert await stock(services.settings, sku) is None
    assert await balance(services.settings, customer) is None


@pytest.mark.parametrize("raw", ["%00", "%FF", "x" * 3_000, f"{uuid.UUID(int=0)}%00"], ids=["NUL", "invalid UTF-8", "3,000 characters", "uuid then NUL"])
async def test_a_hostile_order_or_dead_letter_id_is_422(services, raw):
    answers = [await get_order(raw), await cancel_order(raw)]
    for service in SERVICE_URLS:
        async with httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10) as http:
            answers.append(await http.post(f"/deadletters/{raw}/replay", content=b"[" * 100_000))

    for answer in answers[:2]:
        one_line_refusal(answer, 422, ["path", "order_id"])
    for answer in answers[2:]:
        one_line_refusal(answer, 422)
        assert answer.json()["detail"].startswith("not a dead letter id: ")


async def test_after_every_hostile_request_the_services_still_place_orders(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 1)
    await seed_account(customer, "10.00")
    for body, _, _ in HOSTILE_ORDERS.values():
        await post_order(None, raw=body(new_customer()))

    order_id = await place_order(customer, {sku: 1}, "10.00")

    assert (await wait_for_status(order_id))["status"] == "CONFIRMED"
