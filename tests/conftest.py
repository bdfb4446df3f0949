"""Fixtures shared by every test tier.

Integration and fault tests run against the real native stack (PostgreSQL,
Kafka, Kafka Connect with Debezium): the session brings it up once (`saga stack
up` is idempotent) and stops at the end what it started (SAGA_TEST_KEEP_STACK=1
keeps it running). SAGA_TEST_PG_DSN points the database-only tests at another
PostgreSQL instead.
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def stack():
    """The running native stack (saga_cli.stack.testing.RunningStack)."""
    from saga_cli.stack import testing

    return testing.ensure_stack()


@pytest.fixture(scope="session")
def services(stack):
    """The stack plus order_svc, inventory_svc and payment_svc running as processes, healthy."""
    stack.ensure_services()
    return stack


@pytest.fixture(scope="session")
def pg_superuser_dsn() -> str:
    """DSN of a PostgreSQL superuser on the server the tests use."""
    dsn = os.environ.get("SAGA_TEST_PG_DSN")
    if dsn:
        return dsn
    from saga_cli.stack import testing

    return testing.ensure_stack().pg_superuser_dsn


def pytest_sessionfinish(session, exitstatus):
    from saga_cli.stack import testing

    running = testing.running()
    if running is not None:
        running.stop_if_started_here()
