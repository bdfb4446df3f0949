"""Where the CLI finds the services and Kafka: loopback defaults, each overridable by an env variable.

Read at call time (not import time) so a test or a shell can point the CLI elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    env_var: str
    default_url: str

    @property
    def url(self) -> str:
        return (os.environ.get(self.env_var) or self.default_url).rstrip("/")


ORDER_SVC = Service("order_svc", "SAGA_ORDER_URL", "http://127.0.0.1:8001")
INVENTORY_SVC = Service("inventory_svc", "SAGA_INVENTORY_URL", "http://127.0.0.1:8002")
PAYMENT_SVC = Service("payment_svc", "SAGA_PAYMENT_URL", "http://127.0.0.1:8003")

KAFKA_ENV_VAR = "SAGA_KAFKA_BOOTSTRAP"
KAFKA_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def kafka_bootstrap() -> str:
    return os.environ.get(KAFKA_ENV_VAR) or KAFKA_DEFAULT_BOOTSTRAP


def not_reachable(what: str, where: str) -> str:
    """The one message for a component that does not answer."""
    return f"{what} is not reachable at {where} (is it running? try `saga up`)"
