"""Throwaway service databases for tests that need a real PostgreSQL.

    async with scratch_database(superuser_dsn, "inventory_svc") as dsn:
        ...   # a new database with the service's migrations applied; dropped afterwards
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.migrations import OUTBOX_SQL, migrate, service_schema_files


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database` instead (query parameters kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def scratch_database(superuser_dsn: str, service: str | None = None) -> AsyncIterator[str]:
    """Create a uniquely named database, migrate it with `service`'s files (only the
    outbox/inbox tables when `service` is None), yield its DSN, and drop it on exit."""
    name = f"saga_test_{service or 'outbox'}_{uuid.uuid4().hex[:12]}"
    await _as_superuser(superuser_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(superuser_dsn, name)
        await migrate(dsn, service_schema_files(service) if service else [OUTBOX_SQL])
        yield dsn
    finally:
        await _as_superuser(superuser_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _as_superuser(superuser_dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(superuser_dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()
