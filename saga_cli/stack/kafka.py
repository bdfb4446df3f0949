"""Apache Kafka, one node in KRaft mode (broker and controller), in <home>/kafka."""
from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from saga_cli.stack import process
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError
from saga_cli.stack.install import java_executable
from saga_cli.stack.jvm import java_command, render

EVENT_TOPICS = ("events.order", "events.inventory", "events.payment", "events.deadletter")


class Kafka:
    """The stack's Kafka broker: one KRaft node (broker and controller) under <home>/kafka."""

    name = "kafka"

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.root = settings.home / "kafka"
        self.data_dir = self.root / "data"
        self.config_file = self.root / "server.properties"
        self.pid_file = settings.run_dir / "kafka.pid"
        self.log_file = settings.log_dir / "kafka.log"
        self.markers = ("-Dsaga.component=kafka", f"-Dsaga.home={settings.home}")

    def find(self):
        """The running broker's process, or None."""
        return process.find_process(self.pid_file, *self.markers)

    def start(self) -> None:
        """Render server.properties, format the storage on first start, start the broker, wait until it
        answers and create the event topics. StackError when Java is missing or too old, a port is
        taken, formatting fails, or it exits or does not answer within `start_timeout` seconds (120)."""
        s = self.settings
        java = java_executable(s)
        for port in (s.kafka_port, s.kafka_controller_port):
            process.ensure_port_free(port, "kafka")
        render(
            s.connect_dir / "server.properties",
            self.config_file,
            port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            data_dir=self.data_dir,
        )
        if not (self.data_dir / "meta.properties").exists():
            self._format(java)
        process.spawn(
            java_command(s, java, "kafka", s.kafka_heap, "kafka.Kafka", str(self.config_file)),
            s.log_dir / "kafka.out",
            self.pid_file,
        )
        process.wait_until(
            self._answers,
            timeout=s.start_timeout,
            what="kafka",
            log_file=self.log_file,
            alive=lambda: self.find() is not None,
            interval=0.5,
        )
        asyncio.run(self.create_topics())

    def _format(self, java: str) -> None:
        cluster_id = new_cluster_id()
        cmd = java_command(self.settings, java, "kafka-storage", "256m", "kafka.tools.StorageTool",
                           "format", "-t", cluster_id, "-c", str(self.config_file))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed: {(result.stdout + result.stderr).strip().splitlines()[-1:]}")

    def _answers(self) -> bool:
        if not process.port_in_use(self.settings.kafka_port):
            return False
        return asyncio.run(self._metadata_ok())

    async def _metadata_ok(self) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            await admin.close()

    async def create_topics(self) -> None:
        """The four event topics, with several partitions so services can scale out (key = order id keeps a saga in order)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name=topic, num_partitions=self.settings.topic_partitions, replication_factor=1)
                for topic in EVENT_TOPICS
                if topic not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL after 60 s; nothing when it is not running."""
        found = self.find()
        if found:
            process.terminate(found, timeout=60)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, never starting
    with '-' (the storage tool's argument parser would take it for an option, one run in 64;
    Kafka's own `Uuid.randomUuid` avoids it the same way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
