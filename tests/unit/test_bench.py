"""`saga bench`'s pure parts: percentiles, the flow mix, the catalog's orders, the relay's records, bad options."""
from __future__ import annotations

import json
import random
import uuid

import pytest

from cli_support import assert_one_line_error, run_saga
from saga_cli.benchmark.catalog import BenchCatalog, Mix
from saga_cli.benchmark.relay import record_of
from saga_cli.benchmark.stats import percentile, summary
from saga_cli.stack.connect import connector_documents
from saga_cli.errors import CliError
from saga_cli.stack.config import REPO_ROOT

pytestmark = pytest.mark.unit


def test_percentiles_interpolate_between_ranks():
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert summary([3, 1, 2]) == {"count": 3, "p50": 2.0, "p95": 2.9, "p99": 3.0, "max": 3.0, "mean": 2.0}
    assert summary([])["p99"] is None


def test_the_mix_is_three_shares_that_add_up_to_100():
    assert Mix.parse("85,5,10") == Mix(85, 5, 10)
    for bad in ("85,5", "50,50,50", "a,b,c", "-5,95,10"):
        with pytest.raises(CliError):
            Mix.parse(bad)
    rng = random.Random(7)
    counts = {flow: 0 for flow in ("happy", "out_of_stock", "declined")}
    for _ in range(20_000):
        counts[Mix(85, 5, 10).draw(rng)] += 1
    assert counts["happy"] / 20_000 == pytest.approx(0.85, abs=0.01)
    assert counts["declined"] / 20_000 == pytest.approx(0.10, abs=0.01)


def test_each_flow_orders_what_makes_it_end_as_expected():
    catalog = BenchCatalog.new(skus=5, customers=5)
    seeded = catalog.seeded
    rng = random.Random(3)
    for _ in range(50):
        happy = catalog.order("happy", rng)
        assert happy["customer_id"] in catalog.rich
        assert all(seeded.stock[item["sku"]] > 0 for item in happy["items"])
        assert len({item["sku"] for item in happy["items"]}) == len(happy["items"])
        short = catalog.order("out_of_stock", rng)
        assert any(seeded.stock[item["sku"]] == 0 for item in short["items"])
        declined = catalog.order("declined", rng)
        assert seeded.balances[declined["customer_id"]] < float(declined["amount"])


def test_the_relay_publishes_what_eventrouter_would():
    row = {"id": uuid.uuid4(), "aggregate_type": "inventory", "aggregate_id": "o-1", "event_type": "INVENTORY_RESERVED",
           "payload": '{"order_id": "o-1", "event_type": "INVENTORY_RESERVED"}', "saga_id": "o-1", "causation_id": "c-1",
           "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "signature": "ed25519:0123456789abcdef:c2ln",
           "tracestate": "vendor=1"}
    topic, key, value, headers = record_of(row)
    assert (topic, key) == ("events.inventory", b"o-1")
    assert json.loads(value) == {"order_id": "o-1", "event_type": "INVENTORY_RESERVED"}
    assert dict(headers) == {"id": str(row["id"]).encode(), "eventType": b"INVENTORY_RESERVED", "sagaId": b"o-1",
                             "causationId": b"c-1", "traceparent": row["traceparent"].encode(),
                             "signature": row["signature"].encode(), "tracestate": row["tracestate"].encode()}
    for document in connector_documents(REPO_ROOT / "connect"):  # what EventRouter places, the relay places
        placement = document["config"]["transforms.outbox.table.fields.additional.placement"]
        assert [name for name, _ in headers] == ["id"] + [entry.split(":")[2] for entry in placement.split(",")], document["name"]


@pytest.mark.parametrize("args", [("--rate", "0"), ("--duration", "-1"), ("--mix", "1,2"), ("--find-max", "--compare")])
def test_bad_options_are_one_line(capsys, args):
    assert_one_line_error(run_saga(capsys, "bench", *args))


def test_the_signing_figures_time_a_signature_that_verifies():
    from saga_cli.benchmark.signing import SIGNED_PER_SAGA, VERIFIED_PER_SAGA, measure

    figures = measure(runs=2, number=5)
    assert all(figures[name] > 0 for name in ("sign_us", "verify_us", "verify_record_us"))
    assert figures["per_saga_us"] == pytest.approx(
        SIGNED_PER_SAGA * figures["sign_us"] + VERIFIED_PER_SAGA * figures["verify_record_us"], abs=0.2)
    with pytest.raises(ValueError):
        measure(runs=0)
