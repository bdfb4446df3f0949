"""`saga sagas` against a tiny real HTTP server answering like order_svc's GET /orders:
what it asks for, how it prints, and its one-line errors."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from cli_support import FakeService, assert_one_line_error, closed_port, run_saga, serve

pytestmark = pytest.mark.unit


@pytest.fixture
def order_svc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeService]:
    fake = FakeService()
    server = serve(fake)
    monkeypatch.setenv("SAGA_ORDER_URL", fake.url)
    yield fake
    server.shutdown()
    server.server_close()


def order(status: str = "PENDING", *, age_s: float = 3.0, deadline_in_s: float = 27.0, stuck: bool = False,
          reason: str | None = None) -> dict:
    now = datetime.now(timezone.utc)
    return {
        "order_id": str(uuid.uuid4()),
        "status": status,
        "reason": reason,
        "customer_id": "alice",
        "items": [{"sku": "WIDGET", "quantity": 2}],
        "amount": "40.00",
        "currency": "EUR",
        "created_at": (now - timedelta(seconds=age_s)).isoformat(),
        "deadline_at": (now + timedelta(seconds=deadline_in_s)).isoformat(),
        "updated_at": now.isoformat(),
        "stuck": stuck,
    }


def test_lists_the_sagas_in_flight_by_default(order_svc: FakeService, capsys) -> None:
    waiting = order()
    order_svc.answer("GET", "/orders?status=in_flight&limit=50", 200, [waiting])

    outcome = run_saga(capsys, "sagas")

    assert outcome.exit_code == 0, outcome
    assert [request.path for request in order_svc.requests] == ["/orders?status=in_flight&limit=50"]
    assert waiting["order_id"] in outcome.stdout
    assert "PENDING" in outcome.stdout and "alice · 40.00 EUR" in outcome.stdout and "s left" in outcome.stdout
    assert "1 saga" in outcome.stdout


def test_stuck_asks_for_stuck_sagas_and_shows_how_late(order_svc: FakeService, capsys) -> None:
    late = order(age_s=95, deadline_in_s=-65, stuck=True)
    order_svc.answer("GET", "/orders?status=stuck&limit=10", 200, [late])

    outcome = run_saga(capsys, "sagas", "--stuck", "--limit", "10")

    assert outcome.exit_code == 0, outcome
    assert "65s over" in outcome.stdout
    assert "95s" in outcome.stdout


def test_json_prints_the_service_document(order_svc: FakeService, capsys) -> None:
    found = [order(), order("CANCELLING")]
    order_svc.answer("GET", "/orders?status=in_flight&limit=50", 200, found)

    outcome = run_saga(capsys, "sagas", "--json")

    assert outcome.exit_code == 0, outcome
    assert json.loads(outcome.stdout) == found


def test_all_includes_finished_sagas(order_svc: FakeService, capsys) -> None:
    done = order("CANCELLED", reason="out_of_stock")
    order_svc.answer("GET", "/orders?status=all&limit=50", 200, [done])

    outcome = run_saga(capsys, "sagas", "--all")

    assert outcome.exit_code == 0, outcome
    assert "CANCELLED" in outcome.stdout and "out_of_stock" in outcome.stdout


@pytest.mark.parametrize("which, empty", [((), "no sagas in flight"), (("--stuck",), "no stuck sagas")])
def test_nothing_to_show(order_svc: FakeService, capsys, which, empty) -> None:
    status = "stuck" if which else "in_flight"
    order_svc.answer("GET", f"/orders?status={status}&limit=50", 200, [])

    outcome = run_saga(capsys, "sagas", *which)

    assert (outcome.exit_code, outcome.stdout.strip()) == (0, empty)


@pytest.mark.parametrize(
    "args, fragment",
    [(("--limit", "0"), "--limit must be from 1 to 1000"), (("--stuck", "--all"), "do not go together")],
)
def test_bad_options_are_one_line(order_svc: FakeService, capsys, args, fragment) -> None:
    assert_one_line_error(run_saga(capsys, "sagas", *args), fragment)
    assert order_svc.requests == []


def test_an_answer_that_is_not_a_list_of_orders(order_svc: FakeService, capsys) -> None:
    order_svc.answer("GET", "/orders?status=in_flight&limit=50", 200, {"orders": []})
    assert_one_line_error(run_saga(capsys, "sagas"), "not a list of orders")


def test_order_svc_not_running(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SAGA_ORDER_URL", f"http://127.0.0.1:{closed_port()}")
    assert_one_line_error(run_saga(capsys, "sagas"), "order_svc is not reachable")


def test_stuck_without_kafka_lists_the_sagas_and_says_why_waits_are_missing(order_svc: FakeService, capsys,
                                                                            monkeypatch) -> None:
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed_port()}")
    late = order(age_s=95, deadline_in_s=-65, stuck=True)
    order_svc.answer("GET", "/orders?status=stuck&limit=10", 200, [late])

    outcome = run_saga(capsys, "sagas", "--stuck", "--limit", "10", "--json")

    assert outcome.exit_code == 0, outcome
    assert json.loads(outcome.stdout) == [late]
    assert "what each saga waits for is left out" in outcome.stderr and "Traceback" not in outcome.stderr
