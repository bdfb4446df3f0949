"""Bad input is refused at the door: 422 with the validation errors over HTTP, one line and exit 1
from the CLI, and nothing written or published. Unknown ids are 404, finished orders cannot be cancelled."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.support.kafka import TopicReader
from tests.support.saga import (
    ORDER_TOPIC,
    cancel_order,
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
