"""PostgreSQL from the machine's server binaries, with logical decoding, in <home>/pg.

The superuser `postgres` connects only over the Unix socket in <home>/pg/run;
every other role uses a password over 127.0.0.1. When run as root the server
runs as the unprivileged `postgres` user (or SAGA_PG_OS_USER).
"""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from saga_cli.stack import process
from saga_cli.stack.config import SERVICE_DATABASES, StackSettings
from saga_cli.stack.errors import StackError
from saga_cli.stack.install import pg_bin_dir

SERVER_SETTINGS = """
# Written by `saga stack up`.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_connections = 200
shared_buffers = 256MB
wal_sender_timeout = 60s
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %u@%d '
"""

HEARTBEAT_TABLE = "debezium_heartbeat"
PUBLISHED_TABLES = ("public.outbox", f"public.{HEARTBEAT_TABLE}")
"""What each service database publishes to its connector: the outbox, and the table its heartbeats write."""

HBA = """
# Written by `saga stack up`: superuser over the socket only, everybody else with a password.
local   all          postgres                     trust
host    replication  {debezium}   127.0.0.1/32    scram-sha-256
host    all          all          127.0.0.1/32    scram-sha-256
"""


class Postgres:
    """The stack's PostgreSQL server under <home>/pg: one database per service, the Debezium role,
    logical replication."""

    name = "postgres"

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.root = settings.home / "pg"
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"

    # --- identity -----------------------------------------------------------
    @property
    def os_user(self) -> str | None:
        """The user the server runs as: ourselves, or an unprivileged one when we are root."""
        if os.geteuid() != 0:
            return None
        return os.environ.get("SAGA_PG_OS_USER", "postgres")

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        user = self.os_user
        return ["runuser", "-u", user, "--", *cmd] if user else cmd

    def find(self):
        """The running postmaster's process, or None."""
        return process.find_process(self.data_dir / "postmaster.pid", str(self.data_dir))

    @property
    def superuser_dsn(self) -> str:
        """Over the Unix socket of the stack's own server, unless SAGA_PG_SUPERUSER_DSN names another."""
        return self.settings.pg_superuser_dsn or f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.settings.pg_port}"

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """initdb on first start, write the server's settings and pg_hba.conf, start it (pg_ctl, 60 s) and
        `prepare` it. StackError when the binaries are missing, the port is taken, initdb fails or it
        does not start."""
        bin_dir = pg_bin_dir(self.settings)
        process.ensure_port_free(self.settings.pg_port, "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        self._write_config()
        result = subprocess.run(
            self._as_server_user(
                [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start"]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"postgres did not start; see {self.log_file}")
        self.prepare()

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop in `mode` (smart, fast or immediate), waiting up to 60 s; nothing when it is not running."""
        if self.find() is None:
            return
        bin_dir = pg_bin_dir(self.settings)
        subprocess.run(
            self._as_server_user([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop"]),
            capture_output=True,
        )

    def _initdb(self, bin_dir: Path) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        user = self.os_user
        if user:
            self._check_reachable_by(user)
            entry = pwd.getpwnam(user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            self._as_server_user(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["initdb failed"])[-1]
            raise StackError(f"initdb failed: {last}")

    def _check_reachable_by(self, user: str) -> None:
        """The server user must be able to walk down to <home>; say so plainly if it cannot."""
        path = self.root
        while path != path.parent:
            path = path.parent
            if path.exists() and not (path.stat().st_mode & 0o001):
                raise StackError(f"{path} is not searchable by the `{user}` user that runs PostgreSQL (chmod o+x {path})")

    def _write_config(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        base = conf.read_text().split("# Written by `saga stack up`.")[0]
        conf.write_text(base + SERVER_SETTINGS.format(port=self.settings.pg_port, socket_dir=self.socket_dir))
        (self.data_dir / "pg_hba.conf").write_text(HBA.format(debezium=self.settings.debezium_user))

    def replication_slots(self) -> list:
        """Each logical slot's activity, lag and retained WAL (shared.replication.SlotFigures), read as the superuser."""
        return asyncio.run(self._replication_slots())

    async def _replication_slots(self) -> list:
        from shared.replication import read_slots

        conn = await asyncpg.connect(self.superuser_dsn, timeout=5)
        try:
            return await read_slots(conn, own_database_only=False)
        finally:
            await conn.close()

    # --- databases, roles, schemas, publications ----------------------------------
    def prepare(self) -> None:
        """Create what is missing (idempotent): the roles, one database per service, schemas and the outbox
        publications."""
        asyncio.run(self._prepare())

    async def _prepare(self) -> None:
        """Idempotent: roles, one database per service, schemas, and the outbox publications."""
        s = self.settings
        admin = await asyncpg.connect(self.superuser_dsn)
        try:
            await _ensure_role(admin, s.debezium_user, s.debezium_password, "LOGIN REPLICATION")
            for database, role in SERVICE_DATABASES.items():
                await _ensure_role(admin, role, s.service_password(role), "LOGIN")
                if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
                    await admin.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
                await admin.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
                await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}", "{s.debezium_user}"')
        finally:
            await admin.close()
        for database, role in SERVICE_DATABASES.items():
            await migrate_service_database(s, database)
            await self._publish_outbox(database)

    async def _publish_outbox(self, database: str) -> None:
        """Debezium may read the outbox and insert heartbeats, nothing else. The publication holds
        exactly the tables the connector captures (its `table.include.list`, so Debezium finds it
        up to date and never needs to alter it) and carries INSERTs only, so purging old outbox
        and heartbeat rows never streams."""
        s = self.settings
        conn = await asyncpg.connect(_with_database(self.superuser_dsn, database))
        try:
            await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{s.debezium_user}"')
            await conn.execute(f'GRANT SELECT ON public.outbox TO "{s.debezium_user}"')
            await conn.execute(f'GRANT INSERT ON public.{HEARTBEAT_TABLE} TO "{s.debezium_user}"')
            publication = f"{database}_outbox"
            if not await conn.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", publication):
                await conn.execute(f"CREATE PUBLICATION {publication} FOR TABLE {', '.join(PUBLISHED_TABLES)} "
                                   "WITH (publish = 'insert')")
            published = {row["table"] for row in await conn.fetch(
                "SELECT schemaname || '.' || tablename AS table FROM pg_publication_tables WHERE pubname = $1", publication)}
            for table in PUBLISHED_TABLES:
                if table not in published:  # a publication from before heartbeats
                    await conn.execute(f"ALTER PUBLICATION {publication} ADD TABLE {table}")
            if await conn.fetchval("SELECT pubupdate OR pubdelete OR pubtruncate FROM pg_publication WHERE pubname = $1",
                                   publication):
                await conn.execute(f"ALTER PUBLICATION {publication} SET (publish = 'insert')")
        finally:
            await conn.close()


async def migrate_service_database(settings: StackSettings, database: str) -> None:
    """Apply shared/sql/outbox.sql and the service's schema.sql as the service's own role (it owns its tables)."""
    from shared.migrations import migrate, service_schema_files

    role = SERVICE_DATABASES[database]
    conn = await asyncpg.connect(settings.service_dsn(database))
    try:
        await migrate(conn, service_schema_files(role))
    finally:
        await conn.close()


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str, attributes: str) -> None:
    quoted = password.replace("'", "''")
    verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) else "CREATE"
    await conn.execute(f"""{verb} ROLE "{role}" WITH {attributes} PASSWORD '{quoted}'""")

