"""The three services as processes of their own (`python -m <service>`), with pid files and logs in the stack's home."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import httpx

from saga_cli.stack import process
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError

SERVICES = {"order_svc": 8001, "inventory_svc": 8002, "payment_svc": 8003}
DATABASES = {"order_svc": "orders", "inventory_svc": "inventory", "payment_svc": "payments"}


class Service:
    def __init__(self, name: str, settings: StackSettings):
        self.name = name
        self.settings = settings
        self.pid_file = settings.run_dir / f"{name}.pid"
        self.log_file = settings.log_dir / f"{name}.log"
        self.markers = ("-m", name)

    @property
    def port(self) -> int:
        return int(os.environ.get(f"{self.name.upper()}_HTTP_PORT", SERVICES[self.name]))

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def find(self):
        return process.find_process(self.pid_file, *self.markers)

    @property
    def environment(self) -> dict[str, str]:
        """The service's database and Kafka are the stack's own (a stack on other ports takes its services along)."""
        prefix = self.name.upper()
        return {
            f"{prefix}_DATABASE_URL": os.environ.get(f"{prefix}_DATABASE_URL", self.settings.service_dsn(DATABASES[self.name])),
            f"{prefix}_HTTP_PORT": str(self.port),
            "SAGA_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "SAGA_KEYS_DIR": str(self.settings.keys_dir),
            # faust picks its event loop when first imported; uvloop halves the loop's own overhead
            # per message (BENCHMARKS.md). FAUST_LOOP=aio in the environment chooses asyncio's.
            "FAUST_LOOP": os.environ.get("FAUST_LOOP", "uvloop"),
        }

    def start(self) -> None:
        process.ensure_port_free(self.port, self.name)
        process.spawn([sys.executable, "-m", self.name], self.log_file, self.pid_file, env=self.environment)
        process.wait_until(
            self.healthy,
            timeout=self.settings.start_timeout,
            what=self.name,
            log_file=self.log_file,
            alive=lambda: self.find() is not None,
            interval=0.5,
        )

    def stop(self) -> None:
        found = self.find()
        if found:
            process.terminate(found, timeout=30)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def services(settings: StackSettings) -> list[Service]:
    return [Service(name, settings) for name in SERVICES]


def up(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    for service in services(settings):
        if service.find() is not None:
            say(f"{service.name:<14} already running")
            continue
        t0 = time.monotonic()
        say(f"{service.name:<14} starting…")
        service.start()
        say(f"{service.name:<14} running ({time.monotonic() - t0:.1f}s)")


def restart(settings: StackSettings, names: list[str], say: Callable[[str], None] = print) -> None:
    """Stop and start each service of `names` (all of SERVICES when empty), one after another in
    the given order: each is healthy again before the next stops, so the others keep consuming.
    A service that is not running is only started. StackError for a name not in SERVICES (before
    anything is stopped), or one that does not stop or start."""
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise StackError(f"unknown service {unknown[0]!r}: one of {', '.join(SERVICES)}")
    for name in dict.fromkeys(names or SERVICES):
        service = Service(name, settings)
        t0 = time.monotonic()
        if service.find() is not None:
            service.stop()
            if service.find() is not None:
                raise StackError(f"{name} did not stop")
            say(f"{name:<14} stopped, starting…")
        else:
            say(f"{name:<14} not running, starting…")
        service.start()
        say(f"{name:<14} running ({time.monotonic() - t0:.1f}s)")


def down(settings: StackSettings, say: Callable[[str], None] = print) -> None:
    for service in services(settings):
        if service.find() is None:
            say(f"{service.name:<14} not running")
            continue
        service.stop()
        if service.find() is not None:
            raise StackError(f"{service.name} did not stop")
        say(f"{service.name:<14} stopped")
