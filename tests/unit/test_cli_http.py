"""The client commands against a tiny real HTTP server answering as the services do
(docs/contract/interfaces.md).

These check what the CLI sends and how it renders answers (200, 404, 409, 422, 5xx,
nobody listening); they test the CLI, not the services.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_support import FakeService, assert_one_line_error, closed_port, run_saga, serve
from saga_cli import orders
from saga_cli.http_client import ServiceClient

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def kafka_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed_port()}")


def _fake(monkeypatch: pytest.MonkeyPatch, env_var: str) -> Iterator[FakeService]:
    fake = FakeService()
    server = serve(fake)
    monkeypatch.setenv(env_var, fake.url)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def order_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    yield from _fake(monkeypatch, "SAGA_ORDER_URL")


@pytest.fixture
def inventory_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    yield from _fake(monkeypatch, "SAGA_INVENTORY_URL")


@pytest.fixture
def payment_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    yield from _fake(monkeypatch, "SAGA_PAYMENT_URL")


def new_id() -> str:
    return str(uuid.uuid4())


# --- order place ---------------------------------------------------------------


def test_place_posts_the_spec_body_and_prints_the_order_id(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order_svc.answer("POST", "/orders", 201, {"order_id": order_id, "status": "PENDING"})

    outcome = run_saga(
        capsys, "order", "place", "--customer", "c-1", "--item", "WIDGET:2", "--item", "GADGET:1",
        "--amount", "40", "--currency", "USD", "--idempotency-key", "k-1",
    )

    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, f"{order_id}\n", "")
    (request,) = order_svc.requests
    assert (request.method, request.path) == ("POST", "/orders")
    assert request.body == {
        "customer_id": "c-1",
        "items": [{"sku": "WIDGET", "quantity": 2}, {"sku": "GADGET", "quantity": 1}],
        "amount": "40.00",
        "currency": "USD",
    }
    assert request.headers["Idempotency-Key"] == "k-1"


def test_place_json_prints_order_id_and_status_and_defaults_to_eur(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order_svc.answer("POST", "/orders", 201, {"order_id": order_id, "status": "PENDING"})

    outcome = run_saga(capsys, "order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "9.99", "--json")

    (request,) = order_svc.requests
    assert json.loads(outcome.stdout) == {"order_id": order_id, "status": "PENDING", "idempotency_key": request.headers["Idempotency-Key"]}
    assert request.body["currency"] == "EUR"
    assert uuid.UUID(request.headers["Idempotency-Key"]).version == 4  # a new key when none is given


def test_place_renders_a_pydantic_422_as_one_line(order_svc: FakeService, capsys) -> None:
    order_svc.answer("POST", "/orders", 422, {"detail": [
        {"type": "greater_than", "loc": ["body", "items", 0, "quantity"], "msg": "Input should be greater than 0"},
        {"type": "value_error", "loc": ["body", "customer_id"], "msg": "Value error,\nunknown customer"},
    ]})

    outcome = run_saga(capsys, "order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "1")

    assert_one_line_error(
        outcome,
        "order_svc rejected the request: items.0.quantity: Input should be greater than 0; "
        "customer_id: Value error, unknown customer",
    )


def test_place_renders_a_field_map_422_as_one_line(order_svc: FakeService, capsys) -> None:
    order_svc.answer("POST", "/orders", 422, {"errors": {"amount": "must match the items"}})

    outcome = run_saga(capsys, "order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "1")

    assert_one_line_error(outcome, "order_svc rejected the request: amount: must match the items")


def test_a_server_error_is_one_line_with_the_services_detail(order_svc: FakeService, capsys) -> None:
    order_svc.answer("POST", "/orders", 500, {"detail": "something broke"})

    outcome = run_saga(capsys, "order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "1")

    assert_one_line_error(outcome, "order_svc answered 500 Internal Server Error to POST /orders: something broke")


# --- 503: what is down, and when to try again ---------------------------------------------------------

DOWN = "database unavailable: ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 15432)"


def unavailable(retry_after: str | None, status: int = 503):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": DOWN}, headers={"Retry-After": retry_after} if retry_after else {})

    return answer


@pytest.mark.parametrize("args", [["stock", "show", "A"], ["account", "set", "c-1", "10.00"], ["order", "show", "x"]],
                         ids=["stock show", "account set", "order show"])
def test_a_503_says_what_is_down_and_when_to_try_again(inventory_svc: FakeService, payment_svc: FakeService,
                                                     order_svc: FakeService, capsys, args: list[str]) -> None:
    for fake in (inventory_svc, payment_svc, order_svc):
        for method, path in (("GET", "/stock/A"), ("PUT", "/accounts/c-1"), ("GET", "/orders/x")):
            fake.answer(method, path, 503, {"detail": DOWN})

    outcome = run_saga(capsys, *args)

    assert outcome.exit_code == 75 and outcome.stdout == ""
    (line,) = outcome.stderr.splitlines()
    assert line.startswith("saga: ") and line.endswith(f"is unavailable: {DOWN}; try again later")


def test_place_on_a_503_says_when_and_how_to_retry_with_the_same_key(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = unavailable("5")

    outcome = run_saga(capsys, *PLACE)

    key = order_svc_mock.requests[0].headers["Idempotency-Key"]
    assert (outcome.exit_code, outcome.stdout) == (75, "")
    assert outcome.stderr == (f"saga: order_svc is unavailable: {DOWN}; try again in 5s with: "
                              f"saga {' '.join(PLACE)} --idempotency-key {key}\n")


def test_place_json_on_a_503(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = unavailable("7")

    outcome = run_saga(capsys, *PLACE, "--json")

    document = json.loads(outcome.stdout)
    key = order_svc_mock.requests[0].headers["Idempotency-Key"]
    assert outcome.exit_code == 75
    assert {k: document[k] for k in ("order_id", "status", "idempotency_key", "retry", "retry_after")} == {
        "order_id": None, "status": "unavailable", "idempotency_key": key, "retry_after": 7,
        "retry": f"saga {' '.join(PLACE)} --json --idempotency-key {key}",
    }
    assert DOWN in document["error"]


@pytest.mark.parametrize("header, says", [
    ("30", "try again in 30s"),
    ("Wed, 21 Oct 2015 07:28:00 GMT", "try again in 0s"),  # a date in the past: now
    ("soon", "try again later"),
    (None, "try again later"),
])
def test_retry_after_as_seconds_or_a_date(order_svc_mock, capsys, header: str | None, says: str) -> None:
    order_svc_mock.answer = unavailable(header)

    outcome = run_saga(capsys, *PLACE)

    assert outcome.exit_code == 75 and f"; {says} with: saga order place" in outcome.stderr


def test_a_429_says_the_service_is_overloaded(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = unavailable("2", status=429)

    outcome = run_saga(capsys, *PLACE)

    assert outcome.exit_code == 75
    assert outcome.stderr.startswith(f"saga: order_svc is overloaded: {DOWN}; try again in 2s with: ")


# --- order place: an unknown outcome is said, with the command that retries safely ------------------

PLACE = ("order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "1")


@pytest.fixture
def order_svc_mock(monkeypatch: pytest.MonkeyPatch):
    """order_svc replaced by an httpx.MockTransport calling `answer(request)` (set by the test):
    this tests the CLI's own handling, not a server. The requests it got are in `.requests`."""

    class Mock:
        requests: list[httpx.Request] = []
        answer = staticmethod(lambda request: httpx.Response(201, json={"order_id": new_id(), "status": "PENDING"}))

    def handle(request: httpx.Request) -> httpx.Response:
        Mock.requests.append(request)
        return Mock.answer(request)

    transport = httpx.MockTransport(handle)
    monkeypatch.setattr(orders, "ServiceClient", lambda service: ServiceClient(service, transport=transport))
    monkeypatch.setenv("SAGA_ORDER_URL", "http://127.0.0.1:8001")
    Mock.requests = []
    return Mock


def raises(error: type[httpx.HTTPError], message: str):
    def answer(request: httpx.Request) -> httpx.Response:
        raise error(message, request=request)

    return answer


def test_a_timeout_says_the_outcome_is_unknown_and_how_to_retry_with_the_same_key(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = raises(httpx.ReadTimeout, "timed out")

    outcome = run_saga(capsys, *PLACE)

    (request,) = order_svc_mock.requests
    key = request.headers["Idempotency-Key"]
    assert (outcome.exit_code, outcome.stdout) == (75, "")
    assert outcome.stderr == (
        "saga: outcome unknown: order_svc at http://127.0.0.1:8001 did not answer POST /orders within 10s, "
        f"so the order may or may not have been placed; retry safely with: saga {' '.join(PLACE)} --idempotency-key {key}\n"
    )


def test_json_says_the_outcome_is_unknown_too(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = raises(httpx.WriteTimeout, "timed out")

    outcome = run_saga(capsys, *PLACE, "--json")

    key = order_svc_mock.requests[0].headers["Idempotency-Key"]
    document = json.loads(outcome.stdout)
    assert outcome.exit_code == 75
    assert {k: document[k] for k in ("order_id", "status", "idempotency_key", "retry")} == {
        "order_id": None, "status": "unknown", "idempotency_key": key,
        "retry": f"saga {' '.join(PLACE)} --json --idempotency-key {key}",
    }
    assert "did not answer POST /orders" in document["error"]
    assert len(outcome.stderr.splitlines()) == 1 and "retry safely with: " in outcome.stderr


@pytest.mark.parametrize(
    "error, message",
    [
        (httpx.RemoteProtocolError, "Server disconnected without sending a response."),
        (httpx.ReadError, "[Errno 104] Connection reset by peer"),
        (httpx.WriteError, "[Errno 32] Broken pipe"),
    ],
)
def test_a_connection_dropped_after_sending_is_an_unknown_outcome_too(order_svc_mock, capsys, error, message) -> None:
    order_svc_mock.answer = raises(error, message)

    outcome = run_saga(capsys, *PLACE)

    assert outcome.exit_code == 75
    assert outcome.stderr.startswith(f"saga: outcome unknown: order_svc at http://127.0.0.1:8001 dropped the connection before answering POST /orders ({message})")
    assert len(outcome.stderr.splitlines()) == 1


def test_a_given_key_is_sent_and_the_retry_is_the_same_command(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = raises(httpx.ReadTimeout, "timed out")
    args = ("order", "place", "--idempotency-key", "it's mine; $(no)", "--customer", "a b", "--item", "A:1", "--amount", "1")

    outcome = run_saga(capsys, *args)

    assert order_svc_mock.requests[0].headers["Idempotency-Key"] == "it's mine; $(no)"
    retry = outcome.stderr.split("retry safely with: ", 1)[1].rstrip("\n")
    assert shlex.split(retry) == ["saga", *args]


def test_the_retried_command_sends_the_same_key(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = raises(httpx.ReadTimeout, "timed out")
    first = run_saga(capsys, *PLACE)
    order_id = new_id()
    order_svc_mock.answer = lambda request: httpx.Response(200, json={"order_id": order_id, "status": "PENDING"})

    again = run_saga(capsys, *shlex.split(first.stderr.split("retry safely with: ", 1)[1])[1:])

    assert (again.exit_code, again.stdout) == (0, f"{order_id}\n")
    assert len({request.headers["Idempotency-Key"] for request in order_svc_mock.requests}) == 1


def test_nothing_sent_is_not_an_unknown_outcome(order_svc_mock, capsys) -> None:
    order_svc_mock.answer = raises(httpx.ConnectError, "[Errno 111] Connection refused")

    outcome = run_saga(capsys, *PLACE)

    assert_one_line_error(outcome, "order_svc is not reachable at http://127.0.0.1:8001")
    assert "retry" not in outcome.stderr


def test_saga_http_timeout_sets_the_timeout(order_svc_mock, capsys, monkeypatch) -> None:
    timeouts = []

    def slow(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        raise httpx.ReadTimeout("timed out", request=request)

    order_svc_mock.answer = slow
    monkeypatch.setenv("SAGA_HTTP_TIMEOUT", "0.5")

    outcome = run_saga(capsys, *PLACE)

    assert "did not answer POST /orders within 0.5s" in outcome.stderr
    assert timeouts == [{"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5}]


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_saga_http_timeout_is_one_line(order_svc_mock, capsys, monkeypatch, value: str) -> None:
    monkeypatch.setenv("SAGA_HTTP_TIMEOUT", value)

    outcome = run_saga(capsys, *PLACE)

    assert_one_line_error(outcome, f"SAGA_HTTP_TIMEOUT must be a number of seconds greater than 0, got {value!r}")
    assert order_svc_mock.requests == []


@pytest.mark.parametrize("key, shown", [
    ("a\x00b", "'a\\x00b'"),
    ("tab\there", "'tab\\there'"),
    ("clé", "'clé'"),
    ("k" * 256, "'" + "k" * 40 + "'… (256 characters)"),
])
def test_an_idempotency_key_order_svc_would_refuse_is_refused_before_sending(order_svc_mock, capsys, key: str, shown: str) -> None:
    outcome = run_saga(capsys, *PLACE, "--idempotency-key", key)

    assert_one_line_error(outcome, f"--idempotency-key must be 1-255 printable ASCII characters (letters, digits, punctuation, spaces), got {shown}")
    assert order_svc_mock.requests == []


def test_an_answer_without_order_id_is_an_error(order_svc: FakeService, capsys) -> None:
    order_svc.answer("POST", "/orders", 201, {"status": "PENDING"})

    outcome = run_saga(capsys, "order", "place", "--customer", "c-1", "--item", "A:1", "--amount", "1")

    assert_one_line_error(outcome, "did not answer with its order_id")


# --- order show / cancel -----------------------------------------------------


def an_order(order_id: str) -> dict:
    return {
        "order_id": order_id, "status": "CANCELLED", "reason": "out_of_stock", "customer_id": "c-1",
        "amount": "40.00", "currency": "EUR", "items": [{"sku": "WIDGET", "quantity": 2}],
        "history": [
            {"status": "PENDING", "at": "2024-05-01T12:00:00.000Z", "event_id": new_id()},
            {"status": "CANCELLED", "at": "2024-05-01T12:00:00.120Z", "event_id": new_id()},
        ],
    }


def test_show_json_is_the_services_order(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order_svc.answer("GET", f"/orders/{order_id}", 200, an_order(order_id))

    outcome = run_saga(capsys, "order", "show", order_id, "--json")

    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout) == an_order(order_id) | {"history": json.loads(outcome.stdout)["history"]}
    assert {"order_id", "status", "reason", "customer_id", "amount", "currency", "items", "history"} <= json.loads(outcome.stdout).keys()


def test_show_plain_is_a_readable_table(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order = an_order(order_id)
    order["reason"] = "[bold]not markup[/bold]"
    order_svc.answer("GET", f"/orders/{order_id}", 200, order)

    outcome = run_saga(capsys, "order", "show", order_id)

    assert outcome.exit_code == 0
    for text in (order_id, "CANCELLED", "[bold]not markup[/bold]", "40.00 EUR", "WIDGET × 2", "PENDING", "2024-05-01T12:00:00.120Z"):
        assert text in outcome.stdout


def test_show_unknown_order_is_not_found(order_svc: FakeService, capsys) -> None:
    outcome = run_saga(capsys, "order", "show", "nope-123")

    assert_one_line_error(outcome, "order nope-123 not found")


def test_an_id_is_one_path_segment(order_svc: FakeService, capsys) -> None:
    run_saga(capsys, "order", "show", "a/b?c")

    assert order_svc.requests[0].path == "/orders/a%2Fb%3Fc"


def test_cancel_posts_to_the_orders_cancel_endpoint(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order_svc.answer("POST", f"/orders/{order_id}/cancel", 202, {"order_id": order_id, "status": "CANCELLING"})

    outcome = run_saga(capsys, "order", "cancel", order_id)

    assert outcome.exit_code == 0
    assert order_svc.requests[0].method == "POST"
    assert outcome.stdout == f"order {order_id}: cancellation requested (status CANCELLING)\n"


def test_cancel_unknown_order_is_not_found(order_svc: FakeService, capsys) -> None:
    outcome = run_saga(capsys, "order", "cancel", "nope-123")

    assert_one_line_error(outcome, "order nope-123 not found")


def test_cancel_refused_by_the_service_says_why(order_svc: FakeService, capsys) -> None:
    order_id = new_id()
    order_svc.answer("POST", f"/orders/{order_id}/cancel", 409, {"detail": "order is already CONFIRMED"})

    outcome = run_saga(capsys, "order", "cancel", order_id)

    assert_one_line_error(outcome, f"order {order_id} cannot be cancelled: order is already CONFIRMED")


# --- stock -------------------------------------------------------------------


def test_stock_set_puts_available(inventory_svc: FakeService, capsys) -> None:
    inventory_svc.answer("PUT", "/stock/WIDGET", 200, {"sku": "WIDGET", "available": 7, "reserved": 1, "sold": 2})

    outcome = run_saga(capsys, "stock", "set", "WIDGET", "7")

    assert outcome.stdout == "WIDGET: available 7, reserved 1, sold 2\n"
    (request,) = inventory_svc.requests
    assert (request.method, request.path, request.body) == ("PUT", "/stock/WIDGET", {"available": 7})


def test_stock_show_all_and_one(inventory_svc: FakeService, capsys) -> None:
    rows = [{"sku": "WIDGET", "available": 7, "reserved": 1, "sold": 2}, {"sku": "GADGET", "available": 0, "reserved": 0, "sold": 5}]
    inventory_svc.answer("GET", "/stock", 200, rows)
    inventory_svc.answer("GET", "/stock/GADGET", 200, rows[1])

    assert json.loads(run_saga(capsys, "stock", "show", "--json").stdout) == rows
    assert json.loads(run_saga(capsys, "stock", "show", "GADGET", "--json").stdout) == rows[1]
    table = run_saga(capsys, "stock", "show").stdout
    assert "WIDGET" in table and "GADGET" in table and "reserved" in table


def test_stock_show_unknown_sku_is_not_found(inventory_svc: FakeService, capsys) -> None:
    assert_one_line_error(run_saga(capsys, "stock", "show", "NOPE"), "sku NOPE not found")


# --- accounts ----------------------------------------------------------------


def test_account_set_puts_balance_and_currency(payment_svc: FakeService, capsys) -> None:
    payment_svc.answer("PUT", "/accounts/c-1", 200, {"customer": "c-1", "balance": "100.00", "currency": "EUR"})

    outcome = run_saga(capsys, "account", "set", "c-1", "100")

    assert outcome.stdout == "c-1: balance 100.00 EUR\n"
    (request,) = payment_svc.requests
    assert (request.method, request.path, request.body) == ("PUT", "/accounts/c-1", {"balance": "100.00", "currency": "EUR"})


def test_account_show_all_and_one(payment_svc: FakeService, capsys) -> None:
    rows = [{"customer": "c-1", "balance": "100.00", "currency": "EUR"}]
    payment_svc.answer("GET", "/accounts", 200, rows)
    payment_svc.answer("GET", "/accounts/c-1", 200, rows[0])

    assert json.loads(run_saga(capsys, "account", "show", "--json").stdout) == rows
    assert json.loads(run_saga(capsys, "account", "show", "c-1", "--json").stdout) == rows[0]
    assert "100.00" in run_saga(capsys, "account", "show").stdout


def test_account_show_unknown_customer_is_not_found(payment_svc: FakeService, capsys) -> None:
    assert_one_line_error(run_saga(capsys, "account", "show", "ghost"), "account ghost not found")


# --- nobody listening ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env_var", "service", "args"),
    [
        ("SAGA_ORDER_URL", "order_svc", ["order", "show", "x"]),
        ("SAGA_ORDER_URL", "order_svc", ["order", "cancel", "x"]),
        ("SAGA_INVENTORY_URL", "inventory_svc", ["stock", "show"]),
        ("SAGA_PAYMENT_URL", "payment_svc", ["account", "set", "c-1", "5"]),
    ],
)
def test_a_service_that_does_not_answer_is_one_line(monkeypatch, capsys, env_var: str, service: str, args: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(env_var, url)

    outcome = run_saga(capsys, *args)

    assert_one_line_error(outcome)
    assert outcome.stderr == f"saga: {service} is not reachable at {url} (is it running? try `saga up`)\n"


@pytest.mark.parametrize("args", [["trace", "x", "--since", "0"], ["trace", "x"], ["tail"]])
def test_kafka_that_does_not_answer_is_one_line(monkeypatch, capsys, args: list[str]) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("SAGA_ORDER_URL", f"http://127.0.0.1:{closed_port()}")

    outcome = run_saga(capsys, *args)

    assert outcome.stderr == f"saga: Kafka is not reachable at {bootstrap} (is it running? try `saga up`)\n"
    assert outcome.exit_code == 1


def test_a_bad_endpoint_variable_is_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SAGA_ORDER_URL", "ftp://example")

    assert_one_line_error(run_saga(capsys, "order", "show", "x"), "SAGA_ORDER_URL='ftp://example' is not an http")


def test_the_console_script_prints_one_line_and_no_traceback() -> None:
    saga = Path(sys.executable).with_name("saga")
    url = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "SAGA_ORDER_URL": url}

    unreachable = subprocess.run([str(saga), "order", "show", "x"], capture_output=True, text=True, env=env, timeout=60)
    bad_input = subprocess.run([str(saga), "order", "place", "--customer", "c", "--item", "A:0", "--amount", "1"],
                               capture_output=True, text=True, env=env, timeout=60)

    assert (unreachable.returncode, unreachable.stdout) == (1, "")
    assert unreachable.stderr == f"saga: order_svc is not reachable at {url} (is it running? try `saga up`)\n"
    assert bad_input.returncode == 1
    assert bad_input.stderr.count("\n") == 1 and "quantity must be a positive integer" in bad_input.stderr
