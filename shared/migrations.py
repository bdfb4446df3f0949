"""A small, idempotent schema migration step.

Each service database gets the same outbox/inbox tables (shared/sql/outbox.sql) and
its own business tables (<service>/schema.sql). `migrate` applies each file in its
own transaction and records (name, sha256) in ``schema_migrations``:

  * a file already recorded with the same checksum is skipped;
  * a new file, or one whose checksum changed, is (re-)applied — so files must be
    written idempotently (CREATE ... IF NOT EXISTS, ALTER ... ADD COLUMN IF NOT EXISTS);
  * concurrent callers are serialised by an advisory lock, so two processes running
    `saga stack up` at once apply each file once.

Run it connected as the service's own role: the role then owns the tables it creates.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from shared.topics import SERVICES

_ROOT = Path(__file__).resolve().parent.parent
OUTBOX_SQL = Path(__file__).resolve().parent / "sql" / "outbox.sql"

_LOCK_KEY = 7_400_511_201  # any constant: one advisory lock for "migrating this database"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
_LOCK = """SELECT pg_advisory_xact_lock($1)"""
_RECORDED_SHA = """SELECT sha256 FROM schema_migrations WHERE name = $1"""
_RECORD = """
INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = clock_timestamp()
"""


def service_schema_files(service_name: str) -> list[Path]:
    """The files that make up `service_name`'s database, in the order to apply them:
    the shared outbox/inbox tables, then the service's business tables."""
    if service_name not in SERVICES:
        raise ValueError(f"unknown service {service_name!r}; expected one of {', '.join(SERVICES)}")
    return [OUTBOX_SQL, _ROOT / service_name / "schema.sql"]


def migration_name(path: Path) -> str:
    """How `path` is recorded: its folder and file name (``sql/outbox.sql``, ``order_svc/schema.sql``)."""
    return f"{path.parent.name}/{path.name}"


async def migrate(target: str | asyncpg.Connection, files: Sequence[Path]) -> list[str]:
    """Apply `files` (in order) to the database at `target` (a DSN or an open connection)
    and return the names of those that were applied now (empty when nothing changed)."""
    if isinstance(target, str):
        connection = await asyncpg.connect(target)
        try:
            return await _migrate(connection, files)
        finally:
            await connection.close()
    return await _migrate(target, files)


async def _migrate(connection: asyncpg.Connection, files: Sequence[Path]) -> list[str]:
    applied = []
    for path in files:
        sql = path.read_text(encoding="utf-8")
        name, sha = migration_name(path), hashlib.sha256(sql.encode()).hexdigest()
        async with connection.transaction():
            await connection.execute(_LOCK, _LOCK_KEY)
            await connection.execute(_CREATE_TABLE)
            if await connection.fetchval(_RECORDED_SHA, name) == sha:
                continue
            await connection.execute(sql)
            await connection.execute(_RECORD, name, sha)
        applied.append(name)
    return applied
