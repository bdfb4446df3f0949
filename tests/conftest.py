"""Fixtures shared by every test tier.

Integration and fault tests run against the real stack (PostgreSQL, Kafka,
Kafka Connect with Debezium). The session brings the native stack up once
(`saga stack up` is idempotent) unless SAGA_TEST_PG_DSN points at a running
PostgreSQL, which is enough for the database-only tests.
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def pg_superuser_dsn() -> str:
    """DSN of a PostgreSQL superuser on the server the tests use."""
    dsn = os.environ.get("SAGA_TEST_PG_DSN")
    if dsn:
        return dsn
    from saga_cli.stack import testing

    return testing.ensure_stack().pg_superuser_dsn
