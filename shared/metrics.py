"""Prometheus metrics every service exposes on GET /metrics (one registry per process).

Names follow Prometheus' conventions: the unit in base units at the end (`_seconds`,
`_bytes`, `_records`), counters ending in `_total`. No label repeats the scrape target: one
process is one service, and Prometheus already labels each sample with the target's `job` and
`instance`. The call sites name their service first (`HANDLER_SECONDS.labels(service,
event_type)`, `BREAKER_OPEN.labels(service)`), so that the same call reads the same in every
service; `_OneServicePerProcess` drops that first value.

`render(accept)` answers in the format the scraper asks for (prometheus_client's own content
negotiation): Prometheus text format 0.0.4 by default, OpenMetrics 1.0 for `Accept:
application/openmetrics-text`. Only OpenMetrics carries exemplars: each observation of
`saga_handler_duration_seconds` keeps the trace id of the message it measured
(`trace_exemplar`), so a slow bucket leads to a saga's trace (`saga trace`, the log lines
with that `trace_id`).
"""
from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY

from shared.tracing import trace_id_of


class _OneServicePerProcess:
    """`labels(service, *values)`: the service is the scrape target, not a label (module doc)."""

    _labelnames: tuple[str, ...]

    def labels(self, service: str, *values: str) -> Any:
        """The child for `values`, or the metric itself when it has no labels; `service` is ignored."""
        return super().labels(*values) if self._labelnames else self  # type: ignore[misc]


class _ServiceCounter(_OneServicePerProcess, Counter):
    pass


class _ServiceHistogram(_OneServicePerProcess, Histogram):
    pass


class _ServiceGauge(_OneServicePerProcess, Gauge):
    pass


EVENTS_HANDLED = _ServiceCounter(
    "saga_events_handled_total",
    "Kafka messages consumed, by event type and outcome (handled, duplicate, ignored, foreign, dead_lettered).",
    ["event_type", "outcome"],
)
HANDLER_SECONDS = _ServiceHistogram(
    "saga_handler_duration_seconds",
    "Time from picking up a message to its committed transaction.",
    ["event_type"],
    unit="seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = _ServiceCounter("saga_retries_total", "Transient failures retried.", ["event_type"])
UNAUTHENTICATED = _ServiceCounter(
    "saga_unauthenticated_events_total",
    "Events refused because the service that owns their type did not sign them (dead-lettered).",
    ["event_type"],
)
BREAKER_OPEN = _ServiceGauge("saga_breaker_open", "1 while the handler breaker is open (handler failures in a row).")
CONSUMER_LAG = _ServiceGauge(
    "saga_consumer_lag_records", "Records on the service's partitions not yet settled.", unit="records")
SECONDS_WITHOUT_PROGRESS = _ServiceGauge(
    "saga_consumer_without_progress_seconds", "Seconds since a record last settled while there is lag.",
    unit="seconds")
READY = _ServiceGauge("saga_ready", "1 when /readyz answers 200.")
DEAD_LETTERS = _ServiceCounter("saga_dead_letters_total", "Messages written as dead letters.", ["topic"])
SAGAS_FINISHED = Counter("saga_sagas_finished_total", "Sagas that reached a terminal order state.", ["status", "reason"])
SAGAS_IN_FLIGHT = Gauge("saga_sagas_in_flight", "Orders not yet CONFIRMED or CANCELLED.")
SAGAS_STUCK = Gauge("saga_sagas_stuck", "Orders in flight past their deadline.")
REPLICATION_SLOT_LAG_BYTES = Gauge(
    "saga_replication_slot_lag_bytes",
    "WAL written since the position Debezium last confirmed on this database's replication slot.",
    ["slot"],
    unit="bytes",
)
REPLICATION_SLOT_RETAINED_WAL_BYTES = Gauge(
    "saga_replication_slot_retained_wal_bytes",
    "WAL PostgreSQL keeps on disk for this database's replication slot (from its restart_lsn).",
    ["slot"],
    unit="bytes",
)
REPLICATION_SLOT_ACTIVE = Gauge(
    "saga_replication_slot_active", "1 while a connector streams from the slot, else 0.", ["slot"]
)
RETENTION_PURGED = _ServiceCounter(
    "saga_retention_purged_rows_total", "Rows deleted by the retention purge, by table.", ["table"]
)


def trace_exemplar(traceparent: str | bytes | None) -> dict[str, str] | None:
    """The exemplar labels for an observation made while handling a message that carried
    `traceparent`: `{"trace_id": <32 hex>}`, or None when the header is missing or malformed."""
    trace_id = trace_id_of(traceparent)
    return {"trace_id": trace_id} if trace_id else None


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of every metric in the format `accept` (an HTTP Accept header) asks for,
    and its full content type (with version and charset): OpenMetrics 1.0 with exemplars for
    `application/openmetrics-text`, else Prometheus text 0.0.4. Never raises for a malformed header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
