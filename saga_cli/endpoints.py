"""Where the CLI finds the services and Kafka: loopback defaults, each overridable by an env variable.

Read at call time (not import time) so a test or a shell can point the CLI elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from shared import descriptors


@dataclass(frozen=True)
class Service:
    """A service as the CLI reaches it: its name, the variable that may give its URL, its loopback default."""

    name: str
    env_var: str
    default_url: str

    @property
    def url(self) -> str:
        """The base URL from `env_var` when set and not empty, else `default_url`; no trailing slash."""
        return (os.environ.get(self.env_var) or self.default_url).rstrip("/")


ENDPOINTS = {service.name: Service(service.name, service.url_variable, service.default_url)
             for service in descriptors.SERVICES}
"""Each service's endpoint (shared/descriptors.py)."""
ORDER_SVC = ENDPOINTS["order_svc"]
INVENTORY_SVC = ENDPOINTS["inventory_svc"]
PAYMENT_SVC = ENDPOINTS["payment_svc"]

KAFKA_ENV_VAR = "SAGA_KAFKA_BOOTSTRAP"
KAFKA_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def kafka_bootstrap() -> str:
    """Kafka's bootstrap servers: SAGA_KAFKA_BOOTSTRAP when set and not empty, else 127.0.0.1:9092."""
    return os.environ.get(KAFKA_ENV_VAR) or KAFKA_DEFAULT_BOOTSTRAP


def not_reachable(what: str, where: str) -> str:
    """The one message for a component that does not answer."""
    return f"{what} is not reachable at {where} (is it running? try `saga up`)"
