"""Bad input to the client commands: one line on stderr, exit 1, no traceback, nothing sent."""
from __future__ import annotations

import pytest

from cli_support import assert_one_line_error, closed_port, run_saga
from saga_cli.errors import CliError
from saga_cli.parsing import parse_item, parse_money, parse_since

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every endpoint at a closed port, so a validation gap shows up as 'not reachable'."""
    port = closed_port()
    for name in ("SAGA_ORDER_URL", "SAGA_INVENTORY_URL", "SAGA_PAYMENT_URL"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")


PLACE = ["order", "place", "--customer", "c1", "--amount", "40.00"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (PLACE, "at least one --item SKU:QTY"),
        (PLACE + ["--item", "WIDGET"], "'WIDGET' is not SKU:QTY"),
        (PLACE + ["--item", ":2"], "':2' is not SKU:QTY"),
        (PLACE + ["--item", "WIDGET:"], "'WIDGET:' is not SKU:QTY"),
        (PLACE + ["--item", "WIDGET:0"], "quantity must be a positive integer"),
        (PLACE + ["--item", "WIDGET:-1"], "quantity must be a positive integer"),
        (PLACE + ["--item", "WIDGET:1.5"], "quantity must be a positive integer"),
        (PLACE + ["--item", "WIDGET:two"], "quantity must be a positive integer, got 'two'"),
        (PLACE + ["--item", "A:1", "--item", "A:2"], "--item A is given twice"),
        (PLACE + ["--item", "A:1", "--currency", "eur"], "3 uppercase letters"),
        (PLACE + ["--item", "A:1", "--currency", "EURO"], "3 uppercase letters"),
        (PLACE + ["--item", "A:1", "--currency", "E1R"], "3 uppercase letters"),
        (PLACE + ["--item", "A:1", "--idempotency-key", " "], "--idempotency-key is required"),
        (["order", "place", "--amount", "40", "--item", "A:1"], "--customer is required"),
        (["order", "place", "--customer", " ", "--amount", "40", "--item", "A:1"], "--customer is required"),
        (["order", "place", "--customer", "c1", "--item", "A:1"], "--amount is required"),
        (["order", "place", "--customer", "c1", "--item", "A:1", "--amount", "abc"], "must be a decimal like 40.00"),
        (["order", "place", "--customer", "c1", "--item", "A:1", "--amount", "NaN"], "must be a decimal like 40.00"),
        (["order", "place", "--customer", "c1", "--item", "A:1", "--amount", "1e3"], "must be a decimal like 40.00"),
        (["order", "place", "--customer", "c1", "--item", "A:1", "--amount", "40.001"], "more than 2 decimal places"),
        (["order", "place", "--customer", "c1", "--item", "A:1", "--amount=-5"], "must not be negative"),
        (["stock", "set", "WIDGET", "many"], "QTY must be a whole number, 0 or more, got 'many'"),
        (["stock", "set", "WIDGET", "1.5"], "QTY must be a whole number"),
        (["stock", "set", "WIDGET", "--", "-1"], "QTY must be a whole number, 0 or more, got '-1'"),
        (["stock", "set", " ", "1"], "SKU is required"),
        (["account", "set", "c1", "lots"], "BALANCE must be a decimal like 40.00"),
        (["account", "set", "c1", "10.005"], "BALANCE has more than 2 decimal places"),
        (["account", "set", "c1", "--", "-10"], "BALANCE must not be negative"),
        (["account", "set", "c1", "10", "--currency", "usd"], "3 uppercase letters"),
        (["order", "show", " "], "ID is required"),
        (["trace", "some-id", "--since", "yesterday"], "--since must be an ISO-8601 time"),
        (["tail", "--saga", " "], "--saga needs an order id"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    outcome = run_saga(capsys, *args)

    assert_one_line_error(outcome, fragment)
    assert "not reachable" not in outcome.stderr  # refused before anything was sent


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["order", "show"], "Missing"),
        (["order", "place", "--bogus"], "No such option"),
        (["stock", "set", "A"], "Missing"),
        (["account", "set"], "Missing"),
        (["trace"], "Missing"),
        (["nope"], "No such command"),
    ],
)
def test_usage_errors_fail_without_a_traceback(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    outcome = run_saga(capsys, *args)

    assert outcome.exit_code != 0
    assert "Traceback" not in outcome.stderr
    assert fragment in outcome.stderr


def test_help_lists_the_client_commands(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run_saga(capsys, "--help")

    assert outcome.exit_code == 0
    for command in ("order", "stock", "account", "trace", "tail"):
        assert command in outcome.stdout


@pytest.mark.parametrize(("raw", "expected"), [("40", "40.00"), ("40.5", "40.50"), ("0", "0.00"), (" 7.25 ", "7.25"), ("40.", "40.00")])
def test_money_is_normalised_to_two_places(raw: str, expected: str) -> None:
    assert parse_money(raw, "--amount") == expected


def test_an_item_sku_may_itself_contain_a_colon() -> None:
    item = parse_item("NS:WIDGET:3")
    assert (item.sku, item.quantity) == ("NS:WIDGET", 3)


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        ("1714564800000", 1714564800000),
        ("2024-05-01T12:00:00Z", 1714564800000),
        ("2024-05-01T14:00:00+02:00", 1714564800000),
        ("2024-05-01T12:00:00.250+00:00", 1714564800250),
    ],
)
def test_since_takes_epoch_ms_or_iso_time(raw: str, expected_ms: int) -> None:
    assert parse_since(raw) == expected_ms


def test_since_without_offset_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert parse_since("2024-05-01T14:00:00") == 1714564800000
    finally:
        monkeypatch.undo()
        time.tzset()


def test_since_rejects_garbage() -> None:
    with pytest.raises(CliError):
        parse_since("last tuesday")
