"""Settings: per-service prefixes, a shared Kafka variable, documented defaults."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.migrations import service_schema_files
from shared.settings import SETTINGS_CLASSES, InventorySettings, OrderSettings, PaymentSettings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("ORDER_SVC_", "INVENTORY_SVC_", "PAYMENT_SVC_", "SAGA_")):
            monkeypatch.delenv(name)


def test_defaults():
    order, inventory, payment = OrderSettings(), InventorySettings(), PaymentSettings()
    assert order.database_url.get_secret_value() == "postgresql://order_svc:order_svc@127.0.0.1:15432/orders"
    assert inventory.database_url.get_secret_value() == "postgresql://inventory_svc:inventory_svc@127.0.0.1:15432/inventory"
    assert payment.database_url.get_secret_value() == "postgresql://payment_svc:payment_svc@127.0.0.1:15432/payments"
    assert (order.http_port, inventory.http_port, payment.http_port) == (8001, 8002, 8003)
    assert {order.http_host, inventory.http_host, payment.http_host} == {"127.0.0.1"}
    assert {order.kafka_bootstrap, inventory.kafka_bootstrap, payment.kafka_bootstrap} == {"127.0.0.1:9092"}
    assert order.order_deadline_seconds == 30
    assert payment.per_order_limit == Decimal("10000.00")
    assert (order.consumer_name, inventory.consumer_name, payment.consumer_name) == (
        "order_svc", "inventory_svc", "payment_svc"
    )


def test_each_service_reads_its_own_prefix(monkeypatch):
    monkeypatch.setenv("ORDER_SVC_HTTP_PORT", "9001")
    monkeypatch.setenv("ORDER_SVC_ORDER_DEADLINE_SECONDS", "2.5")
    monkeypatch.setenv("PAYMENT_SVC_PER_ORDER_LIMIT", "250")
    monkeypatch.setenv("INVENTORY_SVC_DATABASE_URL", "postgresql://x@h/inventory")
    assert OrderSettings().http_port == 9001
    assert OrderSettings().order_deadline_seconds == 2.5
    assert PaymentSettings().per_order_limit == Decimal("250.00")
    assert InventorySettings().database_url.get_secret_value() == "postgresql://x@h/inventory"
    assert PaymentSettings().http_port == 8003


def test_kafka_bootstrap_is_shared(monkeypatch):
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP", "broker:19092")
    assert {cls().kafka_bootstrap for cls in SETTINGS_CLASSES.values()} == {"broker:19092"}
    assert OrderSettings(kafka_bootstrap="other:1").kafka_bootstrap == "other:1"


@pytest.mark.parametrize(("cls", "field", "value"), [
    (PaymentSettings, "per_order_limit", "10.001"),
    (PaymentSettings, "per_order_limit", "-1"),
    (OrderSettings, "order_deadline_seconds", "0"),
    (InventorySettings, "http_port", "70000"),
])
def test_bad_values_are_refused(cls, field, value):
    with pytest.raises(ValidationError):
        cls(**{field: value})


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        OrderSettings().http_port = 1


@pytest.mark.parametrize("service", ["order_svc", "inventory_svc", "payment_svc"])
def test_each_service_has_its_schema_files(service):
    outbox, schema = service_schema_files(service)
    assert outbox.name == "outbox.sql" and outbox.is_file()
    assert schema == Path(__file__).resolve().parents[2] / service / "schema.sql"
    assert schema.is_file()


def test_unknown_service_has_no_schema():
    with pytest.raises(ValueError, match="unknown service"):
        service_schema_files("shipping_svc")


def test_a_kraft_cluster_id_never_starts_with_a_dash() -> None:
    """kafka-storage format -t would read such an id as an option (one run in 64 failed so)."""
    from saga_cli.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(cluster_id) == 22 for cluster_id in ids)


def test_the_database_password_is_a_secret(monkeypatch):
    monkeypatch.setenv("PAYMENT_SVC_DATABASE_URL", "postgresql://payment_svc:s3cr3t-pw@db:5432/payments")
    settings = PaymentSettings()
    assert isinstance(settings.database_url, SecretStr)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), f"{settings.database_url}"):
        assert "s3cr3t-pw" not in shown
    assert settings.database_url.get_secret_value() == "postgresql://payment_svc:s3cr3t-pw@db:5432/payments"
