"""The three services, each described once: everything else that names a service — its
settings' defaults, the topic its outbox publishes to, the CLI's endpoints, the stack's
databases and processes, the loggers that are ours — is derived from `SERVICES`.

Adding a service: its own folder (app.py, handlers.py, domain.py, repository.py,
schema.sql, __main__.py, as the others), one `ServiceDescriptor` line here, a settings class
in shared/settings.py and its events in shared/events.py (see README, "Adding a service").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ServiceDescriptor", "SERVICES", "BY_NAME", "descriptor"]


@dataclass(frozen=True)
class ServiceDescriptor:
    """One service of the saga.

    `name`: its package, process, consumer group, inbox consumer name and the `service` of its
    log lines (``order_svc``); `database`: its PostgreSQL database, whose owner role is `name`
    (``orders``); `http_port`: its HTTP API on 127.0.0.1 by default; `aggregate_type`: what its
    outbox rows are, so the topic Debezium publishes them to (``order`` → ``events.order``);
    `url_variable`: where the CLI reads its URL from when it is not on the default port."""

    name: str
    database: str
    http_port: int
    aggregate_type: str
    url_variable: str

    @property
    def default_url(self) -> str:
        """Its HTTP API on loopback, ``http://127.0.0.1:<http_port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def connector(self) -> str:
        """The name of the Debezium connector that publishes its outbox."""
        return f"{self.database}-outbox"

    def default_dsn(self, host: str = "127.0.0.1", port: int = 15432) -> str:
        """Its database as its own role, with the role's default password (the role's name)."""
        return f"postgresql://{self.name}:{self.name}@{host}:{port}/{self.database}"


SERVICES: Final[tuple[ServiceDescriptor, ...]] = (
    ServiceDescriptor("order_svc", "orders", 8001, "order", "SAGA_ORDER_URL"),
    ServiceDescriptor("inventory_svc", "inventory", 8002, "inventory", "SAGA_INVENTORY_URL"),
    ServiceDescriptor("payment_svc", "payments", 8003, "payment", "SAGA_PAYMENT_URL"),
)

BY_NAME: Final[dict[str, ServiceDescriptor]] = {service.name: service for service in SERVICES}


def descriptor(name: str) -> ServiceDescriptor:
    """The service called `name`; KeyError naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}: one of {', '.join(BY_NAME)}") from None
