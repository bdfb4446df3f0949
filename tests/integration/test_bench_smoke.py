"""`saga bench` for a few seconds against the running stack: one JSON document with the figures, and no violation."""
from __future__ import annotations

import json

import pytest

from tests.support.load import saga

pytestmark = pytest.mark.integration

COMPONENTS = {"postgres", "kafka", "kafka-connect", "order_svc", "inventory_svc", "payment_svc"}


def test_a_short_bench_reports_its_figures_and_keeps_the_invariants(services, tmp_path):
    plot = tmp_path / "latency.png"
    done = saga("bench", "--rate", "5", "--duration", "3", "--warmup", "1", "--json", "--plot", str(plot), timeout=240)

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["violations"] == 0, document["violation_details"]
    assert document["unexpected_outcomes"] == []
    assert document["measured"] == 15 and document["completed"] == 15
    assert document["sagas_per_s"] > 0
    assert set(document["e2e_ms"]) >= {"p50", "p95", "p99", "max"}
    assert 0 < document["e2e_ms"]["p50"] <= document["e2e_ms"]["p99"] <= document["e2e_ms"]["max"]
    assert set(document["hop_ms"]) >= {"p50", "p99", "cdc", "consume"}
    assert document["hop_ms"]["cdc"]["count"] > 0 and document["hop_ms"]["unpublished"] == 0
    assert set(document["components"]) >= COMPONENTS
    assert all(set(usage) >= {"cpu_s", "peak_rss_mb"} for usage in document["components"].values())
    assert document["components"]["postgres"]["running"] and document["components"]["postgres"]["peak_rss_mb"] > 0
    assert plot.stat().st_size > 0 and document["plot"] == str(plot)
