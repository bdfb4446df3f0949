"""A service started while Kafka cannot be reached: it stays up, says so, and consumes once Kafka answers.

A second payment_svc process is pointed at a bootstrap address where nothing listens
yet (the stack's database, a port of its own). It must not exit or crash-loop: its
HTTP API answers, /health is 503 with `kafka: down`, and its log says it is retrying.
Then a TCP forwarder to the real broker opens on that address; the service bootstraps
through it, joins payment_svc's consumer group and /health turns 200 with partitions
assigned. It is stopped at the end, leaving the group.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from saga_cli.services import DATABASES
from tests.faults.test_scale_out import free_port, wait_for

pytestmark = pytest.mark.faults

NAME = "payment_svc"


async def health(url: str) -> tuple[int, dict] | None:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            answer = await client.get(f"{url}/health")
        return answer.status_code, answer.json()
    except (httpx.HTTPError, ValueError):
        return None


async def forward(target_host: str, target_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


async def test_a_service_started_before_kafka_answers_waits_and_then_consumes(services):
    settings = services.settings
    kafka_host, kafka_port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    bootstrap_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    log_path = settings.log_dir / f"{NAME}-{http_port}.log"
    env = {**os.environ,
           "PAYMENT_SVC_DATABASE_URL": settings.service_dsn(DATABASES[NAME]),
           "PAYMENT_SVC_HTTP_PORT": str(http_port),
           "SAGA_KAFKA_BOOTSTRAP": f"127.0.0.1:{bootstrap_port}",
           "SAGA_KEYS_DIR": str(settings.keys_dir)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", NAME], env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = None
    try:
        async def answers_unhealthy():
            found = await health(url)
            return found is not None and found[0] == 503

        await wait_for(answers_unhealthy, "an HTTP answer while Kafka is unreachable", 60)
        status, body = await health(url)
        assert body["kafka"] == "down" and body["database"] == "ok" and body["assigned"] == []

        async def says_retrying():
            return "Kafka not reachable yet" in log_path.read_text(errors="replace")

        await wait_for(says_retrying, "a log line saying it retries", 30)
        assert process.poll() is None, "the service exited while Kafka was unreachable"

        proxy = await asyncio.start_server(lambda r, w: forward(kafka_host, int(kafka_port), r, w),
                                           "127.0.0.1", bootstrap_port)

        async def healthy_with_partitions():
            found = await health(url)
            return found is not None and found[0] == 200 and bool(found[1]["assigned"])

        await wait_for(healthy_with_partitions, "health 200 with partitions once Kafka answers", 90)
        status, body = await health(url)
        assert all(tp.startswith(("events.inventory/", "events.order/")) for tp in body["assigned"])
        assert process.poll() is None
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if proxy is not None:
            proxy.close()
