"""Retention settings: durations as people write them, shared by the three services, sane defaults."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.retention import RetentionPolicy
from shared.settings import SETTINGS_CLASSES, TOPIC_RETENTION, TOPIC_SEGMENT_ROLL, OrderSettings

ROOT = Path(__file__).resolve().parents[2]

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


# --- the dedupe window against the topics' retention ---------------------------------------------

def refusal(**environment) -> str:
    """The one message settings refuse `environment` with."""
    with pytest.raises(ValidationError) as caught:
        OrderSettings(**environment)
    [error] = caught.value.errors()
    return error["msg"]


@pytest.mark.parametrize("cls", list(SETTINGS_CLASSES.values()), ids=list(SETTINGS_CLASSES))
def test_a_dedupe_window_shorter_than_the_topics_retention_plus_a_margin_is_refused(monkeypatch, cls):
    monkeypatch.setenv("SAGA_INBOX_RETENTION", "8d")
    with pytest.raises(ValidationError) as caught:
        cls()
    [error] = caught.value.errors()
    assert error["msg"] == (
        "Value error, SAGA_INBOX_RETENTION 8d is shorter than the topics' retention 7d + segment roll 1d + margin 1d"
        " = 9d: a redelivered event could be applied twice; raise SAGA_INBOX_RETENTION to at least 9d")
    assert "\n" not in error["msg"]


def test_the_window_follows_the_topics_retention(monkeypatch):
    monkeypatch.setenv("SAGA_TOPIC_RETENTION", "14d")
    assert "at least 16d" in refusal()
    monkeypatch.setenv("SAGA_INBOX_RETENTION", "16d")
    assert OrderSettings().inbox_retention == timedelta(days=16)
    monkeypatch.setenv("SAGA_TOPIC_RETENTION", "1h")
    monkeypatch.setenv("SAGA_TOPIC_SEGMENT_ROLL", "1h")
    monkeypatch.setenv("SAGA_INBOX_RETENTION", "26h")
    assert OrderSettings().inbox_retention == timedelta(hours=26)
    assert "= 26h" in refusal(inbox_retention="25h")


def test_the_shortest_window_allowed_by_default_is_the_default():
    assert OrderSettings(inbox_retention="9d").inbox_retention == OrderSettings().inbox_retention
    assert "SAGA_INBOX_RETENTION 777599s is shorter" in refusal(inbox_retention=str(9 * 86400 - 1))


def test_the_topics_retention_settings_match_the_stacks_kafka():
    """The defaults say what connect/server.properties and compose.yaml give the topics."""
    properties = (ROOT / "connect" / "server.properties").read_text()
    assert int(re.search(r"^log\.retention\.hours=(\d+)$", properties, re.M)[1]) * 3600 == TOPIC_RETENTION.total_seconds()
    assert int(re.search(r"^log\.roll\.hours=(\d+)$", properties, re.M)[1]) * 3600 == TOPIC_SEGMENT_ROLL.total_seconds()
    compose = (ROOT / "compose.yaml").read_text()
    assert "LOG_RETENTION" not in compose  # Kafka's default, 168 hours
    assert int(re.search(r"KAFKA_LOG_ROLL_HOURS: (\d+)", compose)[1]) * 3600 == TOPIC_SEGMENT_ROLL.total_seconds()
    assert (OrderSettings().topic_retention, OrderSettings().topic_segment_roll) == (TOPIC_RETENTION, TOPIC_SEGMENT_ROLL)
