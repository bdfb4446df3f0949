"""Settings of the three services, read from the environment.

Each service has its own class with its own prefix (ORDER_SVC_, INVENTORY_SVC_,
PAYMENT_SVC_); the Kafka bootstrap servers are shared by all (SAGA_KAFKA_BOOTSTRAP).
Build them in the service's bootstrap (``OrderSettings()``), never at import time, so
that tests and the stack can set the environment first or pass values directly
(``OrderSettings(database_url=...)``). Instances are frozen.

A setting that holds a secret is a `SecretStr`: its repr, str and a dump of the settings show
`**********`, so a logged or printed settings object gives no password away; the value is read
(`get_secret_value()`) only where it is used, e.g. the DSN handed to the connection pool.
"""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.descriptors import descriptor
from shared.money import Money

DEFAULT_PER_ORDER_LIMIT = Decimal("10000.00")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

TOPIC_RETENTION = timedelta(days=7)
"""How long the event topics keep a message: Kafka's `log.retention.hours` (168) in
connect/server.properties, and Kafka's default in compose.yaml."""
TOPIC_SEGMENT_ROLL = timedelta(days=1)
"""How often a topic's segment rolls (`log.roll.hours=24`, both stacks): a message is deleted
with its segment, once the segment's newest message is past the retention."""
DEDUPE_MARGIN = timedelta(days=1)
"""What the dedupe window keeps beyond the longest a message can stay in its topic: room for a
redelivery that is itself late (Connect republishing when it is back, clocks apart)."""


def _duration(value: Any) -> Any:
    """'90s', '15m', '1h', '7d' or a bare number of seconds; anything else is left to pydantic
    (ISO 8601 'PT1H', 'HH:MM:SS', a timedelta)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match:
            return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A span of time from the environment: `90s`, `15m`, `1h`, `7d`, or seconds."""


def _shown(span: timedelta) -> str:
    """A duration as the environment writes it: the largest unit that divides it (`9d`, `36h`, `90s`)."""
    seconds = span.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


class ServiceSettings(BaseSettings):
    """What every service needs: its database, Kafka, and where to listen."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    service_name: ClassVar[str]

    database_url: SecretStr
    """The service's PostgreSQL DSN, password included (a secret: shown as `**********`)."""
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        validation_alias="SAGA_KAFKA_BOOTSTRAP",
    )
    keys_dir: Path | None = Field(None, validation_alias="SAGA_KEYS_DIR")
    """Where the services' keys are (shared/auth.py): this service signs with its own and
    accepts events signed with any public key of their owner. Unset: it signs nothing and
    accepts no event (a service started by `saga up` always has it)."""
    http_host: str = "127.0.0.1"
    http_port: int = Field(gt=0, lt=65536)
    db_pool_min_size: int = Field(1, ge=0)
    db_pool_max_size: int = Field(10, ge=1)
    consumer_concurrency: int = Field(64, ge=1)
    """Messages in flight at once, one saga's strictly in order (shared/dispatch.py): those that
    arrive together share a transaction (`consumer_batch_max`); a message whose batch rolled
    back is handled on its own, on a pooled connection of its own."""
    consumer_batch_max: int = Field(64, ge=1, le=1000)
    """The most events handled in one transaction (shared/group_commit.py); 1 handles each
    event in a transaction of its own."""
    consumer_stall_seconds: float = Field(30.0, gt=0)
    """Readiness fails when the consumer has lag and settled no record for this long (a stalled
    consumer: a database that does not answer, a handler that waits, a fetch that stopped)."""
    consumer_fetch_max_wait_ms: int = Field(250, ge=1, le=1500)
    """The longest the broker holds a fetch with no new data (faust: 1500). An idle consumer makes
    one empty fetch per interval: at 25 ms the three services and the broker spent about 0.35 of a
    core doing nothing, at 250 ms about 0.15 (BENCHMARKS.md, "Idle"). A fetch returns as soon as
    any of its partitions has data, so a record waits this long only on a partition left out of
    the fetch in flight (one paused while every slot was busy, shared/kafka_consumer.py); at 10
    sagas/s the e2e p50 stayed at 55–57 ms."""
    outbox_retention: Duration = Field(timedelta(hours=1), gt=timedelta(0), validation_alias="SAGA_OUTBOX_RETENTION")
    """Outbox rows (and heartbeat rows) older than this are purged. Delivery does not need them
    once committed (Debezium reads the WAL); they stay to be inspected and for the order timeline."""
    inbox_retention: Duration = Field(timedelta(days=9), gt=timedelta(0), validation_alias="SAGA_INBOX_RETENTION")
    """The dedupe window: inbox rows older than this are purged. The business rows guard every
    handler too (a decided order ignores a late event), but the window must still outlast the
    longest a message can stay in its topic: settings refuse one shorter than `topic_retention`
    + `topic_segment_roll` + DEDUPE_MARGIN (README, Operating notes: 7 d + 1 d + 1 d)."""
    topic_retention: Duration = Field(TOPIC_RETENTION, gt=timedelta(0), validation_alias="SAGA_TOPIC_RETENTION")
    """How long the event topics keep a message. Set it with the topics' own retention: it only
    checks `inbox_retention`, it configures no topic."""
    topic_segment_roll: Duration = Field(TOPIC_SEGMENT_ROLL, ge=timedelta(0), validation_alias="SAGA_TOPIC_SEGMENT_ROLL")
    """How often the event topics' segments roll (a message may outlive the retention by this much)."""
    retention_interval: float = Field(60.0, gt=0, validation_alias="SAGA_RETENTION_INTERVAL")
    """Seconds between two purges."""
    retention_batch: int = Field(1000, ge=1, validation_alias="SAGA_RETENTION_BATCH")
    """Rows deleted per purge transaction (short transactions, short locks)."""

    @model_validator(mode="after")
    def _dedupe_window_outlasts_the_topics(self) -> "ServiceSettings":
        """The inbox must remember an event for as long as its message can be delivered again:
        refuse a window shorter than the topics' retention + segment roll + DEDUPE_MARGIN."""
        needed = self.topic_retention + self.topic_segment_roll + DEDUPE_MARGIN
        if self.inbox_retention < needed:
            raise ValueError(
                f"SAGA_INBOX_RETENTION {_shown(self.inbox_retention)} is shorter than the topics' retention "
                f"{_shown(self.topic_retention)} + segment roll {_shown(self.topic_segment_roll)} + margin "
                f"{_shown(DEDUPE_MARGIN)} = {_shown(needed)}: a redelivered event could be applied twice; "
                f"raise SAGA_INBOX_RETENTION to at least {_shown(needed)}"
            )
        return self

    @property
    def consumer_name(self) -> str:
        """The name under which this service records handled events in its inbox
        (and its Kafka consumer group)."""
        return self.service_name


class OrderSettings(ServiceSettings):
    """order_svc's settings, from ORDER_SVC_* (and the shared SAGA_*) variables."""

    model_config = SettingsConfigDict(env_prefix="ORDER_SVC_")
    service_name: ClassVar[str] = "order_svc"

    database_url: SecretStr = SecretStr(descriptor("order_svc").default_dsn())
    http_port: int = Field(descriptor("order_svc").http_port, gt=0, lt=65536)
    order_deadline_seconds: float = Field(30.0, gt=0)
    """Seconds from an order's placing (or adoption) to its deadline: an order not confirmed by
    then is given up by order_svc's timer (CANCELLING, ORDER_CONFIRMATION_FAILED
    deadline_exceeded), whatever step its saga is at."""
    admission_target_seconds: float = Field(0.5, gt=0, le=30)
    """Admission control (order_svc/admission.py): POST /orders answers 503 with Retry-After
    while the sagas in flight exceed what the system finishes in this many seconds at its
    current rate (Little's law), so an admitted saga's expected time in the system stays under it."""
    admission_floor: int = Field(64, ge=1)
    """Sagas always admitted in flight, whatever the rate: the burst an idle system takes at once
    (it finishes none yet, so the rate says nothing), and what a system whose participant is down
    still admits. At saturation here the rate's limit is about 50 (BENCHMARKS.md, "Overload")."""
    admission_enabled: bool = True
    """False admits every order (the load figures are still read for /metrics)."""


class InventorySettings(ServiceSettings):
    """inventory_svc's settings, from INVENTORY_SVC_* (and the shared SAGA_*) variables."""

    model_config = SettingsConfigDict(env_prefix="INVENTORY_SVC_")
    service_name: ClassVar[str] = "inventory_svc"

    database_url: SecretStr = SecretStr(descriptor("inventory_svc").default_dsn())
    http_port: int = Field(descriptor("inventory_svc").http_port, gt=0, lt=65536)


class PaymentSettings(ServiceSettings):
    """payment_svc's settings, from PAYMENT_SVC_* (and the shared SAGA_*) variables."""

    model_config = SettingsConfigDict(env_prefix="PAYMENT_SVC_")
    service_name: ClassVar[str] = "payment_svc"

    database_url: SecretStr = SecretStr(descriptor("payment_svc").default_dsn())
    http_port: int = Field(descriptor("payment_svc").http_port, gt=0, lt=65536)
    per_order_limit: Money = DEFAULT_PER_ORDER_LIMIT
    """The largest amount one order may be charged, in the order's own currency
    (no conversion); above it PAYMENT_FAILED limit_exceeded."""


SETTINGS_CLASSES: dict[str, type[ServiceSettings]] = {
    cls.service_name: cls for cls in (OrderSettings, InventorySettings, PaymentSettings)
}
"""service name → its settings class."""
