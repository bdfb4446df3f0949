"""Prometheus metrics every service exposes on GET /metrics (one registry per process)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS_HANDLED = Counter(
    "saga_events_handled_total",
    "Kafka messages consumed, by event type and outcome (handled, duplicate, ignored, dead_lettered).",
    ["service", "event_type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "saga_handler_seconds",
    "Time from picking up a message to its committed transaction.",
    ["service", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("saga_retries_total", "Transient failures retried.", ["service", "event_type"])
UNAUTHENTICATED = Counter(
    "saga_unauthenticated_events_total",
    "Events refused because the service that owns their type did not sign them (dead-lettered).",
    ["service", "event_type"],
)
BREAKER_OPEN = Gauge(
    "saga_breaker_open", "1 while the service's handler breaker is open (handler failures in a row).", ["service"])
CONSUMER_LAG = Gauge("saga_consumer_lag", "Records on the service's partitions not yet settled.", ["service"])
SECONDS_WITHOUT_PROGRESS = Gauge(
    "saga_consumer_seconds_without_progress", "Seconds since a record last settled while there is lag.", ["service"])
READY = Gauge("saga_ready", "1 when /readyz answers 200.", ["service"])
DEAD_LETTERS = Counter("saga_dead_letters_total", "Messages written as dead letters.", ["service", "topic"])
SAGAS_FINISHED = Counter("saga_sagas_finished_total", "Sagas that reached a terminal order state.", ["status", "reason"])
SAGAS_IN_FLIGHT = Gauge("saga_sagas_in_flight", "Orders not yet CONFIRMED or CANCELLED.")
SAGAS_STUCK = Gauge("saga_sagas_stuck", "Orders in flight past their deadline.")
REPLICATION_SLOT_LAG_BYTES = Gauge(
    "saga_replication_slot_lag_bytes",
    "WAL written since the position Debezium last confirmed on this database's replication slot.",
    ["slot"],
)
REPLICATION_SLOT_RETAINED_WAL_BYTES = Gauge(
    "saga_replication_slot_retained_wal_bytes",
    "WAL PostgreSQL keeps on disk for this database's replication slot (from its restart_lsn).",
    ["slot"],
)
REPLICATION_SLOT_ACTIVE = Gauge(
    "saga_replication_slot_active", "1 while a connector streams from the slot, else 0.", ["slot"]
)
RETENTION_PURGED = Counter(
    "saga_retention_purged_rows_total", "Rows deleted by the retention purge, by table.", ["service", "table"]
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
