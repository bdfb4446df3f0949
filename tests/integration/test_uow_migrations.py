"""The migration step against a real PostgreSQL: idempotent, checksum-aware, safe
when run concurrently, and each service's files apply to a fresh database."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.migrations import migrate, migration_name, service_schema_files
from shared.testing import scratch_database

pytestmark = pytest.mark.integration

BUSINESS_TABLES = {
    "order_svc": {"orders", "order_history"},
    "inventory_svc": {"stock", "reservations"},
    "payment_svc": {"accounts", "payments"},
}


@pytest.fixture
async def empty_database(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:  # outbox/inbox only
        yield dsn


async def tables(dsn: str) -> set[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await connection.close()


@pytest.mark.parametrize("service", sorted(BUSINESS_TABLES))
async def test_each_service_schema_applies_once(pg_superuser_dsn, empty_database, service):
    shared_tables = await tables(empty_database)
    assert {"outbox", "inbox", "schema_migrations"} <= shared_tables
    async with scratch_database(pg_superuser_dsn, service) as dsn:
        assert await tables(dsn) == shared_tables | BUSINESS_TABLES[service]
        assert await migrate(dsn, service_schema_files(service)) == []


async def test_a_changed_file_is_applied_again(empty_database, tmp_path):
    script = tmp_path / "extra.sql"
    script.write_text("CREATE TABLE IF NOT EXISTS extra (id int);")
    assert await migrate(empty_database, [script]) == [migration_name(script)]
    assert await migrate(empty_database, [script]) == []

    script.write_text("CREATE TABLE IF NOT EXISTS extra (id int);\nALTER TABLE extra ADD COLUMN IF NOT EXISTS note text;")
    assert await migrate(empty_database, [script]) == [migration_name(script)]
    connection = await asyncpg.connect(empty_database)
    try:
        columns = await connection.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'extra'")
    finally:
        await connection.close()
    assert {row["column_name"] for row in columns} == {"id", "note"}


async def test_a_failing_file_records_nothing(empty_database, tmp_path):
    script = tmp_path / "broken.sql"
    script.write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(empty_database, [script])
    assert "half" not in await tables(empty_database)
    script.write_text("CREATE TABLE IF NOT EXISTS half (id int);")
    assert await migrate(empty_database, [script]) == [migration_name(script)]


async def test_concurrent_migrations_apply_each_file_once(pg_superuser_dsn):
    async with scratch_database(pg_superuser_dsn) as dsn:
        files = service_schema_files("inventory_svc")
        applied = await asyncio.gather(*(migrate(dsn, files) for _ in range(4)))
        assert sorted(map(len, applied)) == [0, 0, 0, 1]  # outbox.sql was applied by scratch_database
        assert BUSINESS_TABLES["inventory_svc"] <= await tables(dsn)
