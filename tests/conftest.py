"""Fixtures shared by every test tier.

Integration and fault tests run against the real native stack (PostgreSQL,
Kafka, Kafka Connect with Debezium): the session brings it up once (`saga stack
up` is idempotent) and stops at the end what it started (SAGA_TEST_KEEP_STACK=1
keeps it running). SAGA_TEST_PG_DSN points the database-only tests at another
PostgreSQL instead. SAGA_STACK=containers runs them against compose.yaml instead, when a
Docker engine answers and the `docker compose` plugin is there (tests/support/containers.py);
the pytest header says which stack. With containers, the tests that need the native stack's
processes skip saying why, and compose.yaml starts after collection, before the first test.
"""
from __future__ import annotations

import os

import pytest


def pytest_report_header(config):
    from tests.support import containers

    return containers.report_line()


def pytest_collection_modifyitems(config, items):
    from tests.support import containers

    containers.skip_native_only(items)


def pytest_collection_finish(session):
    from tests.support import containers

    if not session.config.option.collectonly:
        containers.start_before_tests(session.items)


@pytest.fixture(scope="session")
def stack():
    """The running native stack (saga_cli.stack.testing.RunningStack), or with SAGA_STACK=containers
    compose.yaml's (tests/support/containers.ComposeStack; skips without a Docker engine or compose plugin)."""
    from tests.support import containers

    if containers.requested() == containers.CONTAINERS:
        return containers.ensure_stack()
    from saga_cli.stack import testing

    return testing.ensure_stack()


@pytest.fixture(scope="session")
def services(stack):
    """The stack plus order_svc, inventory_svc and payment_svc running as processes, healthy."""
    stack.ensure_services()
    return stack


@pytest.fixture(scope="session")
def pg_superuser_dsn(request) -> str:
    """DSN of a PostgreSQL superuser on the server the tests use."""
    dsn = os.environ.get("SAGA_TEST_PG_DSN")
    if dsn:
        return dsn
    return request.getfixturevalue("stack").pg_superuser_dsn


def pytest_sessionfinish(session, exitstatus):
    from saga_cli.stack import testing
    from tests.support import containers

    for running in (testing.running(), containers.running()):
        if running is not None:
            running.stop_if_started_here()
