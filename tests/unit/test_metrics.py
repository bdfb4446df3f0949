"""GET /metrics (shared/metrics.py): the format the scraper asks for, exemplars in OpenMetrics only,
names in Prometheus' standard form, and no label that repeats the scrape target."""
from __future__ import annotations

import uuid

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.tracing import new_traceparent, trace_id_of

pytestmark = pytest.mark.unit

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
                     "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


def observe(traceparent: str | None) -> str:
    """One handled message of a fresh event type (the registry is the process's): its event type."""
    event_type = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    metrics.HANDLER_SECONDS.labels("inventory_svc", event_type).observe(
        0.012, exemplar=metrics.trace_exemplar(traceparent))
    return event_type


@pytest.mark.parametrize("accept", [None, "", "text/plain", "*/*", "application/json", "text/plain;version=0.0.4",
                                    "application/openmetrics-text;version=0.0.1", "garbage;;;q=x"])
def test_prometheus_text_unless_openmetrics_is_asked_for(accept):
    text, content_type = metrics.render(accept)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in text.decode()
    assert {family.name for family in text_string_to_metric_families(text.decode())} >= {"saga_handler_duration_seconds"}


@pytest.mark.parametrize("accept", ["application/openmetrics-text", "application/openmetrics-text; version=1.0.0",
                                    PROMETHEUS_ACCEPT])
def test_openmetrics_when_asked_for_with_the_trace_as_exemplar(accept):
    traceparent = new_traceparent()
    event_type = observe(traceparent)

    text, content_type = metrics.render(accept)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
    families = {family.name: family for family in openmetrics_families(text.decode())}
    histogram = families["saga_handler_duration_seconds"]
    assert (histogram.type, histogram.unit) == ("histogram", "seconds")
    [bucket] = [s for s in histogram.samples if s.labels.get("event_type") == event_type and s.exemplar is not None]
    assert bucket.labels["le"] == "0.025"  # the bucket the observation fell in
    assert bucket.exemplar.labels == {"trace_id": trace_id_of(traceparent)}
    assert bucket.exemplar.value == pytest.approx(0.012)


@pytest.mark.parametrize("traceparent", [None, "", "not-a-traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01"])
def test_a_message_without_a_valid_traceparent_gets_no_exemplar(traceparent):
    assert metrics.trace_exemplar(traceparent) is None
    event_type = observe(traceparent)
    text, _ = metrics.render("application/openmetrics-text")
    samples = [s for family in openmetrics_families(text.decode()) for s in family.samples
               if s.labels.get("event_type") == event_type]
    assert samples and all(s.exemplar is None for s in samples)


def test_no_label_repeats_the_scrape_target():
    metrics.BREAKER_OPEN.labels("payment_svc").set(1)
    metrics.EVENTS_HANDLED.labels("payment_svc", "INVENTORY_RESERVED", "handled").inc()
    metrics.RETENTION_PURGED.labels("payment_svc", "inbox").inc(3)
    text, _ = metrics.render()
    families = {family.name: family for family in text_string_to_metric_families(text.decode())}
    saga = {name: family for name, family in families.items() if name.startswith("saga_")}
    assert saga
    assert not [name for name, family in saga.items() if any("service" in s.labels for s in family.samples)]
    assert [s.value for s in families["saga_breaker_open"].samples] == [1.0]
    assert any(s.labels == {"table": "inbox"} for s in families["saga_retention_purged_rows"].samples)


def test_names_carry_their_unit_in_the_standard_form():
    text, _ = metrics.render("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(text.decode()) if family.name.startswith("saga_")}
    for name, family in families.items():
        if family.type == "counter":
            assert family.samples[0].name == f"{name}_total" if family.samples else True, name
        assert "seconds" not in name or name.endswith("_seconds"), name
        assert "bytes" not in name or name.endswith("_bytes"), name
        if family.unit:
            assert name.endswith(f"_{family.unit}"), name
    assert "saga_handler_duration_seconds" in families
