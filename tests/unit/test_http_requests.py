"""Every request value is checked before it reaches a handler or SQL (shared/service.py and
each service's app.py): a body over 64 KiB is a 413, anything else invalid a 422, each with a
one-line JSON detail; never a 500.

The services' real views are served in-process (aiohttp's test server on 127.0.0.1) with the
database replaced by a stand-in that records being reached: a refused request must not reach it.
A valid request does (the control), which shows the stand-in is where SQL would start.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from pydantic import TypeAdapter, ValidationError

from inventory_svc.app import create_runtime as inventory_runtime
from order_svc.app import create_runtime as order_runtime
from order_svc.domain import IdempotencyKey
from payment_svc.app import create_runtime as payment_runtime
from shared.events import CustomerId, Sku
from shared.service import MAX_BODY_BYTES, MAX_ERRORS_SHOWN, RequestRefused, request_value

pytestmark = pytest.mark.unit


class ReachedTheDatabase(Exception):
    """Raised by the stand-in database: the request got past every check."""


@dataclass
class Service:
    client: TestClient
    reached: list[str] = field(default_factory=list)

    async def send(self, method: str, path: str, **options: Any) -> tuple[int, Any, str]:
        """(status, JSON body, raw text) of one request; what reached the database is in `reached`."""
        self.reached.clear()
        answer = await self.client.request(method, path, **options)
        text = await answer.text()
        return answer.status, json.loads(text) if answer.content_type == "application/json" else None, text

    async def send_raw(self, head: bytes, body: bytes = b"") -> tuple[int, Any]:
        """A request written byte for byte (for what an HTTP client library would not send)."""
        self.reached.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.client.port)
        writer.write(head + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = await reader.read()
        writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


async def _served(create_runtime: Callable[[], Any]) -> AsyncIterator[Service]:
    runtime = create_runtime()
    service = Service(client=None)  # type: ignore[arg-type]

    async def database():
        service.reached.append("database")
        raise ReachedTheDatabase()

    runtime.request_uow = database  # what every view takes its unit of work from
    async with TestClient(TestServer(runtime.app.web.web_app, host="127.0.0.1")) as client:
        service.client = client
        yield service


@pytest_asyncio.fixture(scope="module")
async def order_svc() -> AsyncIterator[Service]:
    async for service in _served(order_runtime):
        yield service


@pytest_asyncio.fixture(scope="module")
async def inventory_svc() -> AsyncIterator[Service]:
    async for service in _served(inventory_runtime):
        yield service


@pytest_asyncio.fixture(scope="module")
async def payment_svc() -> AsyncIterator[Service]:
    async for service in _served(payment_runtime):
        yield service


def assert_refused(answer: tuple[int, Any, str], service: Service, status: int, loc: list | None = None) -> None:
    """`status` with a one-line JSON detail (naming `loc` for a 422), and nothing reached the database."""
    code, body, text = answer
    assert code == status, text[:500]
    assert "\n" not in text and len(text) < 20_000, text[:500]
    assert body["detail"], body
    if status == 413:
        assert body["detail"] == f"request body is larger than {MAX_BODY_BYTES} bytes"
    else:
        assert all(error["msg"] and error["type"] for error in body["detail"]), body
        if loc is not None:
            assert loc in [error["loc"] for error in body["detail"]], body
    assert service.reached == []


def an_order(**changes: Any) -> dict[str, Any]:
    return {"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "amount": "1.00", "currency": "EUR", **changes}


def raw_order(**changes: str) -> bytes:
    """An order as JSON text with some of its values replaced by raw JSON (e.g. `amount="1e400"`)."""
    parts = {"customer_id": '"c-1"', "items": '[{"sku": "SKU-1", "quantity": 1}]', "amount": '"1.00"', "currency": '"EUR"', **changes}
    return ("{" + ", ".join(f'"{name}": {value}' for name, value in parts.items()) + "}").encode()


# --- the control: a valid request gets to the database ------------------------------------------------

async def test_a_valid_request_reaches_the_database(order_svc: Service, inventory_svc: Service, payment_svc: Service) -> None:
    assert (await order_svc.send("POST", "/orders", json=an_order(), headers={"Idempotency-Key": "k-1"}))[0] == 500
    assert order_svc.reached == ["database"]
    assert (await inventory_svc.send("PUT", "/stock/SKU-1", json={"available": 5}))[0] == 500
    assert inventory_svc.reached == ["database"]
    assert (await payment_svc.send("GET", "/accounts/c-1"))[0] == 500
    assert payment_svc.reached == ["database"]


# --- bodies: size, encoding, shape --------------------------------------------------------------------

def chunks(data: bytes, size: int = 4096):
    async def stream():
        for start in range(0, len(data), size):
            yield data[start:start + size]
    return stream()


async def test_a_body_over_the_limit_is_413_by_its_content_length_or_by_counting(order_svc: Service) -> None:
    too_big = b" " * (MAX_BODY_BYTES + 1)

    assert_refused(await order_svc.send("POST", "/orders", data=too_big), order_svc, 413)
    assert_refused(await order_svc.send("POST", "/orders", data=chunks(too_big)), order_svc, 413)  # chunked: no Content-Length
    assert_refused(await order_svc.send("POST", "/orders", data=b"[" * 100_000), order_svc, 413)
    assert_refused(await order_svc.send("POST", "/orders", data=chunks(b"x" * 10_000_000)), order_svc, 413)


async def test_a_body_of_exactly_the_limit_is_read(order_svc: Service) -> None:
    body = json.dumps(an_order()).encode()
    padded = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"

    assert (await order_svc.send("POST", "/orders", data=padded))[0] == 500
    assert order_svc.reached == ["database"]


BAD_BODIES = {
    # name: (body bytes, what the one error says)
    "60,000 '['": (b"[" * 60_000, "nested too deeply"),
    "60,000 '{\"a\":'": (b'{"a":' * 12_000, "not valid JSON"),
    "invalid UTF-8": (b'{"customer_id": "c\xff"}', "not UTF-8: byte 18 is 0xff"),
    "UTF-16": ('{"customer_id": "c"}'.encode("utf-16"), "not UTF-8"),
    "a UTF-8 byte order mark": (b"\xef\xbb\xbf{}", "BOM"),
    "empty": (b"", "empty"),
    "only spaces": (b"  \n ", "empty"),
    "an array": (b"[1, 2]", "not an array"),
    "a string": (b'"order"', "not a string"),
    "null": (b"null", "not null"),
    "a number": (b"12", "not a number"),
    "NaN": (raw_order(amount="NaN"), "NaN is not a JSON number"),
    "Infinity": (raw_order(amount="-Infinity"), "-Infinity is not a JSON number"),
    "a 5,000-digit integer": (raw_order(amount="9" * 5_000), "more than 32 digits"),
    "a name twice": (raw_order(amount='"1.00"', currency='"EUR", "amount": "1000.00"'), "the name 'amount' appears twice"),
    "a name twice, nested": (raw_order(items='[{"sku": "A", "sku": "B", "quantity": 1}]'), "the name 'sku' appears twice"),
    "truncated": (b'{"customer_id": "c-1", "items": [', "not valid JSON"),
}


@pytest.mark.parametrize("body, says", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_a_body_that_is_not_one_json_object_is_422(order_svc: Service, inventory_svc: Service, payment_svc: Service, body: bytes, says: str) -> None:
    for service, method, path in ((order_svc, "POST", "/orders"), (inventory_svc, "PUT", "/stock/SKU-1"), (payment_svc, "PUT", "/accounts/c-1")):
        answer = await service.send(method, path, data=body, headers={"Content-Type": "application/json"})

        assert_refused(answer, service, 422, ["body"])
        assert says in answer[1]["detail"][0]["msg"], answer[1]


# --- orders: the event catalog's rules, before SQL -----------------------------------------------------

BAD_ORDERS = {
    # name: (the order's changes, the loc of the error)
    "101 items": ({"items": [{"sku": f"S-{n}", "quantity": 1} for n in range(101)]}, ["items"]),
    "a quantity over 1,000,000": ({"items": [{"sku": "S", "quantity": 1_000_001}]}, ["items", 0, "quantity"]),
    "a quantity of 2**63": ({"items": [{"sku": "S", "quantity": 2**63}]}, ["items", 0, "quantity"]),
    "an amount over NUMERIC(12,2)": ({"amount": "10000000000.00"}, ["amount"]),
    "an amount as an exponent": ({"amount": "1E+3"}, ["amount"]),
    "NUL in the customer id": ({"customer_id": "c\x00"}, ["customer_id"]),
    "NUL in a sku": ({"items": [{"sku": "S\x00", "quantity": 1}]}, ["items", 0, "sku"]),
    "a control character in the customer id": ({"customer_id": "c\x1b[2J"}, ["customer_id"]),
    "a newline at the end of a sku": ({"items": [{"sku": "S\n", "quantity": 1}]}, ["items", 0, "sku"]),
    "a lone surrogate in the customer id": ({"customer_id": "c\ud800"}, ["customer_id"]),
    "a 65-character customer id": ({"customer_id": "c" * 65}, ["customer_id"]),
    "a 10,000-character sku": ({"items": [{"sku": "s" * 10_000, "quantity": 1}]}, ["items", 0, "sku"]),
    "NUL in the currency": ({"currency": "EU\x00"}, ["currency"]),
    "NUL in an unknown field's name": ({"\x00": 1}, ["\x00"]),
    "an object for the customer id": ({"customer_id": {"$ne": ""}}, ["customer_id"]),
    "items as an object": ({"items": {"sku": "S", "quantity": 1}}, ["items"]),
}


@pytest.mark.parametrize("changes, loc", BAD_ORDERS.values(), ids=BAD_ORDERS.keys())
async def test_an_order_outside_the_catalogs_rules_is_422(order_svc: Service, changes: dict, loc: list) -> None:
    assert_refused(await order_svc.send("POST", "/orders", data=json.dumps(an_order(**changes))), order_svc, 422, loc)


@pytest.mark.parametrize("amount", ["1e400", "1.5", "-0", "1E2", "10000000000"])
async def test_an_amount_that_is_a_json_number_other_than_a_small_integer_is_422(order_svc: Service, amount: str) -> None:
    assert_refused(await order_svc.send("POST", "/orders", data=raw_order(amount=amount)), order_svc, 422, ["amount"])


async def test_a_body_with_thousands_of_errors_lists_the_first_few(order_svc: Service) -> None:
    body = an_order(items=[{"sku": "\x00", "quantity": -1}] * 1_500)

    status, answer, text = await order_svc.send("POST", "/orders", data=json.dumps(body))

    assert_refused((status, answer, text), order_svc, 422)
    assert len(answer["detail"]) == MAX_ERRORS_SHOWN + 1
    assert answer["detail"][-1]["type"] == "too_many_errors"


async def test_a_long_value_is_quoted_back_cut(order_svc: Service) -> None:
    status, answer, text = await order_svc.send("POST", "/orders", data=json.dumps(an_order(amount="9" * 50_000)))

    assert_refused((status, answer, text), order_svc, 422, ["amount"])
    assert len(text) < 1_000


BAD_KEYS = {
    "256 characters": "k" * 256,
    "a tab": "a\tb",
    "not ASCII": "clé",
    "empty": "",
    "only spaces": "   ",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_an_idempotency_key_that_is_not_printable_ascii_up_to_255_is_422(order_svc: Service, key: str) -> None:
    answer = await order_svc.send("POST", "/orders", json=an_order(), headers={"Idempotency-Key": key})

    assert_refused(answer, order_svc, 422, ["header", "Idempotency-Key"])


async def test_an_idempotency_key_of_invalid_utf8_or_given_twice_is_422(order_svc: Service) -> None:
    body = json.dumps(an_order()).encode()

    for head in (b"POST /orders HTTP/1.1\r\nIdempotency-Key: k\xffk",
                 b"POST /orders HTTP/1.1\r\nIdempotency-Key: k-1\r\nIdempotency-Key: k-2"):
        status, answer = await order_svc.send_raw(head, body)

        assert status == 422, answer
        assert answer["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert order_svc.reached == []


# --- ids in paths and queries ----------------------------------------------------------------------------

BAD_ORDER_IDS = ["not-a-uuid", "abc%00", "%FF%FE", "%0A%0D", "x" * 4_000, str(uuid.uuid4()) + "%00"]


@pytest.mark.parametrize("raw", BAD_ORDER_IDS, ids=["text", "NUL", "invalid UTF-8", "CR LF", "4,000 characters", "uuid then NUL"])
async def test_an_order_id_that_is_not_a_uuid_is_422(order_svc: Service, raw: str) -> None:
    for method, path in (("GET", f"/orders/{raw}"), ("GET", f"/orders/{raw}/timeline"), ("POST", f"/orders/{raw}/cancel")):
        answer = await order_svc.send(method, path)

        assert_refused(answer, order_svc, 422, ["path", "order_id"])
        assert len(answer[2]) < 500


@pytest.mark.parametrize("query, loc", [("status=%00", ["query", "status"]), ("limit=" + "9" * 5_000, ["query", "limit"]),
                                         ("limit=1001", ["query", "limit"]), ("limit=%FF", ["query", "limit"])])
async def test_a_bad_listing_query_is_422(order_svc: Service, query: str, loc: list) -> None:
    answer = await order_svc.send("GET", f"/orders?{query}")

    assert_refused(answer, order_svc, 422, loc)
    assert len(answer[2]) < 500


BAD_PATH_IDS = {
    "NUL": "A%00B",
    "invalid UTF-8": "a%FFb",
    "a space": "a%20b",
    "a newline": "a%0A",
    "65 characters": "a" * 65,
    "3,000 characters": "a" * 3_000,
    "a leading dot": ".a",
    "an escape sequence": "a%1B%5B2J",
}


@pytest.mark.parametrize("raw", BAD_PATH_IDS.values(), ids=BAD_PATH_IDS.keys())
async def test_a_sku_or_customer_outside_the_catalogs_rules_is_422_read_or_written(inventory_svc: Service, payment_svc: Service, raw: str) -> None:
    for service, path, body, loc in (
        (inventory_svc, f"/stock/{raw}", {"available": 1}, ["path", "sku"]),
        (payment_svc, f"/accounts/{raw}", {"balance": "1.00"}, ["path", "customer"]),
    ):
        assert_refused(await service.send("GET", path), service, 422, loc)
        assert_refused(await service.send("PUT", path, json=body), service, 422, loc)


@pytest.mark.parametrize("body, loc", [
    ({"available": -1}, ["available"]),
    ({"available": 1_000_000_001}, ["available"]),
    ({"available": 2**64}, ["available"]),
    ({"available": "5"}, ["available"]),
    ({"available": 1.5}, ["available"]),
    ({"available": True}, ["available"]),
    ({"available": 1, "sold": 5}, ["sold"]),
])
async def test_a_bad_stock_seed_is_422(inventory_svc: Service, body: dict, loc: list) -> None:
    assert_refused(await inventory_svc.send("PUT", "/stock/SKU-1", json=body), inventory_svc, 422, loc)


@pytest.mark.parametrize("body, loc", [
    ({"balance": "-1.00"}, ["balance"]),
    ({"balance": "10000000000.00"}, ["balance"]),
    (b'{"balance": 1e400}', ["balance"]),
    (b'{"balance": 1.5}', ["balance"]),
    ({"balance": "1.234"}, ["balance"]),
    ({"balance": "1.00", "currency": "eur"}, ["currency"]),
    ({"balance": "1.00", "currency": "EU\x00"}, ["currency"]),
])
async def test_a_bad_account_seed_is_422(payment_svc: Service, body: dict | bytes, loc: list) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body)
    assert_refused(await payment_svc.send("PUT", "/accounts/c-1", data=data), payment_svc, 422, loc)


async def test_seeds_over_the_body_limit_are_413(inventory_svc: Service, payment_svc: Service) -> None:
    big = b" " * (MAX_BODY_BYTES + 1)

    assert_refused(await inventory_svc.send("PUT", "/stock/SKU-1", data=big), inventory_svc, 413)
    assert_refused(await payment_svc.send("PUT", "/accounts/c-1", data=chunks(big)), payment_svc, 413)


@pytest.mark.parametrize("raw", ["abc%00", "%FF", "x" * 4_000])
async def test_a_dead_letter_id_that_is_not_a_uuid_is_422(order_svc: Service, inventory_svc: Service, raw: str) -> None:
    for service in (order_svc, inventory_svc):
        status, answer, text = await service.send("POST", f"/deadletters/{raw}/replay")

        assert status == 422 and "\n" not in text, text[:300]
        assert answer["detail"].startswith("not a dead letter id: ")
        assert service.reached == []


# --- the helpers on their own ------------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, good, bad", [
    (TypeAdapter(Sku), ["A", "SKU-1.x_y", "a" * 64], ["", ".a", "a b", "a\x00", "a\n", "é", "a\udcff", "a" * 65]),
    (TypeAdapter(CustomerId), ["c", "a@b.c", "c" * 64], ["", "@c", "c d", "c\x00", "c\n", "c\udcff", "c" * 65]),
    (TypeAdapter(IdempotencyKey), ["k", "a b", "~" * 255, str(uuid.uuid4())], ["", " k", "k ", "a\tb", "k\x00", "é", "k\udcff", "k" * 256]),
])
def test_request_value_refuses_what_the_type_refuses_at_the_given_location(adapter: TypeAdapter, good: list, bad: list) -> None:
    for value in good:
        assert request_value(adapter, value, "path", "x") == value
    for value in bad:
        with pytest.raises(RequestRefused) as refused:
            request_value(adapter, value, "path", "x")
        assert refused.value.status == 422
        assert refused.value.detail[0]["loc"][:2] == ["path", "x"], value
        assert isinstance(refused.value, ValueError) and not isinstance(refused.value, ValidationError)
