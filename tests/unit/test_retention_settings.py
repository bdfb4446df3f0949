"""Retention settings: durations as people write them, shared by the three services, sane defaults."""
from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.retention import RetentionPolicy
from shared.settings import SETTINGS_CLASSES, OrderSettings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("ORDER_SVC_", "INVENTORY_SVC_", "PAYMENT_SVC_", "SAGA_")):
            monkeypatch.delenv(name)


def test_defaults_keep_the_outbox_an_hour_and_dedupe_for_nine_days():
    settings = OrderSettings()
    assert settings.outbox_retention == timedelta(hours=1)
    assert settings.inbox_retention == timedelta(days=9)
    assert (settings.retention_interval, settings.retention_batch) == (60.0, 1000)
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(timedelta(hours=1), timedelta(days=9), 1000)


@pytest.mark.parametrize(("raw", "expected"), [
    ("90", timedelta(seconds=90)), ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)),
    ("1.5h", timedelta(minutes=90)), ("8d", timedelta(days=8)), ("PT2H", timedelta(hours=2)),
    ("01:00:00", timedelta(hours=1)),
])
def test_durations_read_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("SAGA_OUTBOX_RETENTION", raw)
    assert OrderSettings().outbox_retention == expected


def test_every_service_shares_the_retention_variables(monkeypatch):
    monkeypatch.setenv("SAGA_INBOX_RETENTION", "14d")
    monkeypatch.setenv("SAGA_RETENTION_INTERVAL", "5")
    assert {cls().inbox_retention for cls in SETTINGS_CLASSES.values()} == {timedelta(days=14)}
    assert {cls().retention_interval for cls in SETTINGS_CLASSES.values()} == {5.0}


@pytest.mark.parametrize(("name", "raw"), [
    ("SAGA_OUTBOX_RETENTION", "0"), ("SAGA_INBOX_RETENTION", "-1d"), ("SAGA_INBOX_RETENTION", "soon"),
    ("SAGA_RETENTION_BATCH", "0"), ("SAGA_RETENTION_INTERVAL", "0"),
])
def test_nonsense_is_refused(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValidationError):
        OrderSettings()
