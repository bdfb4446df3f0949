"""Settings of the native stack: every port, path and heap can be overridden by a SAGA_* variable."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import descriptors

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICE_DATABASES = {service.database: service.name for service in descriptors.SERVICES}
"""database → the service role that owns it (shared/descriptors.py)."""


class StackSettings(BaseSettings):
    """Ports, paths, heaps and credentials of the native stack, from SAGA_* variables (e.g. SAGA_PG_PORT);
    the addresses left empty are derived from the ports, `keys_dir` from `home`."""

    model_config = SettingsConfigDict(env_prefix="SAGA_", extra="ignore")

    home: Path = Field(default=REPO_ROOT / ".stack", description="state, logs, jars and pid files")
    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    """Below 32768, so never a port the kernel hands an outgoing connection (Linux's ephemeral range
    is 32768–60999): with 55432 a client socket that took it during a long database outage kept
    PostgreSQL from listening again."""
    pg_bin: Path | None = Field(default=None, description="folder with initdb/pg_ctl; found under /usr/lib/postgresql when unset")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    connect_port: int = 8083
    kafka_heap: str = "768m"
    connect_heap: str = "768m"
    java_home: Path | None = None
    debezium_user: str = "debezium"
    debezium_password: str = "debezium"
    topic_partitions: int = 3
    keys_dir: Path | None = Field(
        default=None,
        description="the services' signing keys and the public keys they accept (shared/auth.py); <home>/keys when unset",
    )
    start_timeout: float = 120.0
    # Addresses of parts this machine does not run itself (compose.yaml's setup step);
    # by default they are derived from the ports above.
    kafka_bootstrap: str = ""
    connect_url: str = ""
    pg_superuser_dsn: str = ""

    @model_validator(mode="after")
    def _derived_addresses(self) -> "StackSettings":
        self.kafka_bootstrap = self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"
        self.keys_dir = self.keys_dir or self.home / "keys"
        self.connect_url = (self.connect_url or f"http://127.0.0.1:{self.connect_port}").rstrip("/")
        return self

    @property
    def connect_dir(self) -> Path:
        """The repository's connect/ folder: the server and worker config templates, the connector template,
        pom.xml (the jars) and log4j2.xml."""
        return REPO_ROOT / "connect"

    @property
    def lib_dir(self) -> Path:
        """<home>/lib/kafka: the Kafka jars Maven resolved (the JVMs' class path)."""
        return self.home / "lib" / "kafka"

    @property
    def plugin_dir(self) -> Path:
        """<home>/plugins: Kafka Connect's plugin path (Debezium)."""
        return self.home / "plugins"

    @property
    def bin_dir(self) -> Path:
        """<home>/bin: Kafka's console tools as scripts."""
        return self.home / "bin"

    @property
    def log_dir(self) -> Path:
        """<home>/logs: every component's and service's log."""
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """<home>/run: pid and state files."""
        return self.home / "run"

    def service_password(self, role: str) -> str:
        """Each service role's password (dev default: the role name), overridable as SAGA_<ROLE>_PASSWORD."""
        import os

        return os.environ.get(f"SAGA_{role.upper()}_PASSWORD", role)

    def service_dsn(self, database: str) -> str:
        """`database` as the service role that owns it, on the stack's PostgreSQL; KeyError for another database."""
        role = SERVICE_DATABASES[database]
        return f"postgresql://{role}:{self.service_password(role)}@{self.pg_host}:{self.pg_port}/{database}"
