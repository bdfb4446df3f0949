"""compose.yaml (the Docker path) and the native stack describe the same system.

Read as files, no Docker and no server needed: the topics the connectors route to and the
stack creates, the connector configs and the ${env:…} names they need, the worker settings,
the image versions and the jars', the published ports, the services' environment
variables, each of which must be a field of the service's settings (and land there), and
the signing keys: made by setup into a volume the services mount read-only, as the same user."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from saga_cli import services as service_processes
from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC
from saga_cli.stack import Stack
from saga_cli.stack.config import REPO_ROOT, SERVICE_DATABASES, StackSettings
from saga_cli.stack.connect import Connect
from saga_cli.stack.kafka import EVENT_TOPICS
from shared.auth import KeyRing
from shared.settings import SETTINGS_CLASSES, ServiceSettings
from shared.topics import TOPICS

pytestmark = pytest.mark.unit  # fast and needs no server, though it is about the whole topology

COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
CONNECTORS = {path.name: json.loads(path.read_text()) for path in sorted((REPO_ROOT / "connect" / "connectors").glob("*.json"))}
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
SERVICE_URLS = {"order_svc": ORDER_SVC, "inventory_svc": INVENTORY_SVC, "payment_svc": PAYMENT_SVC}


def default(settings_class, field: str):
    """A settings field's default, whatever the environment of this test run says."""
    return settings_class.model_fields[field].default


def host_port(service: str, container_port: int) -> tuple[str, int]:
    """(host address, host port) compose publishes `container_port` of `service` on."""
    for mapping in SERVICES[service].get("ports", []):
        address, published, target = str(mapping).split(":")
        if int(target) == container_port:
            return address, int(published)
    raise AssertionError(f"compose does not publish {service}:{container_port}")


def properties(path: Path) -> dict[str, str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def pom_property(name: str) -> str:
    found = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", (REPO_ROOT / "connect" / "pom.xml").read_text())
    assert found, name
    return found.group(1)


# --- topics ------------------------------------------------------------------------------

def test_the_connectors_route_each_aggregate_type_to_the_topics_the_stack_creates():
    assert len(CONNECTORS) == len(SERVICE_DATABASES)
    for name, connector in CONNECTORS.items():
        config = connector["config"]
        assert config["transforms.outbox.route.by.field"] == "aggregate_type", name
        replacement = config["transforms.outbox.route.topic.replacement"]
        routed = {aggregate: replacement.replace("${routedByValue}", aggregate) for aggregate in TOPICS}
        assert routed == TOPICS, name
        assert re.fullmatch(config["predicates.isOutbox.pattern"], f"{config['topic.prefix']}.public.outbox"), name
    assert set(TOPICS.values()) == set(EVENT_TOPICS)


def test_compose_creates_the_topics_with_the_stacks_own_setup_and_partitions():
    assert SERVICES["setup"]["command"] == ["saga", "stack", "setup"]  # Stack.setup → Kafka.create_topics(EVENT_TOPICS)
    partitions = default(StackSettings, "topic_partitions")
    assert int(SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) == partitions
    assert int(properties(REPO_ROOT / "connect" / "server.properties")["num.partitions"]) == partitions


# --- connectors and the Connect worker ----------------------------------------------------------

def test_compose_connect_gets_every_env_name_the_connector_configs_use():
    referenced = {name for connector in CONNECTORS.values() for name in ENV_REFERENCE.findall(json.dumps(connector))}
    assert referenced >= {"SAGA_DEBEZIUM_PASSWORD"}
    compose_env = SERVICES["connect"]["environment"]
    assert referenced <= set(compose_env), referenced - set(compose_env)
    native_env = Connect(StackSettings()).environment
    assert referenced <= set(native_env), referenced - set(native_env)
    assert compose_env["SAGA_DEBEZIUM_USER"] == default(StackSettings, "debezium_user")
    assert compose_env["SAGA_DEBEZIUM_PASSWORD"] == default(StackSettings, "debezium_password")
    assert compose_env["SAGA_PG_HOST"] == "postgres"


def test_compose_connect_runs_the_worker_the_native_stack_configures():
    worker = properties(REPO_ROOT / "connect" / "worker.properties")
    env = SERVICES["connect"]["environment"]
    # Debezium's image: a few named variables, and CONNECT_A_B_C for the property a.b.c
    named = {"GROUP_ID": "group.id", "CONFIG_STORAGE_TOPIC": "config.storage.topic",
             "OFFSET_STORAGE_TOPIC": "offset.storage.topic", "STATUS_STORAGE_TOPIC": "status.storage.topic",
             "KEY_CONVERTER": "key.converter", "VALUE_CONVERTER": "value.converter"}
    as_properties = {named[key]: str(value) for key, value in env.items() if key in named}
    as_properties |= {key.removeprefix("CONNECT_").lower().replace("_", "."): str(value)
                      for key, value in env.items() if key.startswith("CONNECT_")}
    for key in (*named.values(), "value.converter.schemas.enable", "config.providers", "config.providers.env.class",
                "offset.flush.interval.ms", "scheduled.rebalance.max.delay.ms"):
        assert as_properties.get(key) == worker[key], key


def test_compose_images_are_the_releases_the_native_stack_resolves():
    assert SERVICES["connect"]["image"].split(":")[1] == pom_property("debezium.version")
    assert SERVICES["kafka"]["image"].split(":")[1] == pom_property("kafka.version")


def test_compose_registers_the_same_connector_files():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY connect connect$", dockerfile, re.MULTILINE)  # `saga stack setup` reads connect/connectors/
    assert "connect" in SERVICES["setup"]["depends_on"]
    assert "wal_level=logical" in SERVICES["postgres"]["command"]


# --- ports ---------------------------------------------------------------------------------

def test_published_ports_are_the_native_defaults_on_loopback():
    assert host_port("postgres", 5432) == ("127.0.0.1", default(StackSettings, "pg_port")) == ("127.0.0.1", 55432)
    assert host_port("connect", 8083) == ("127.0.0.1", default(StackSettings, "connect_port")) == ("127.0.0.1", 8083)
    # the broker's HOST listener (29092 inside) is published on the native broker's port and advertised so
    assert host_port("kafka", 29092) == ("127.0.0.1", default(StackSettings, "kafka_port")) == ("127.0.0.1", 9092)
    assert "HOST://127.0.0.1:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for service, port in service_processes.SERVICES.items():
        settings_class = SETTINGS_CLASSES[service]
        assert default(settings_class, "http_port") == port
        assert host_port(service, port) == ("127.0.0.1", port)
        assert SERVICE_URLS[service].default_url == f"http://127.0.0.1:{port}"
    assert sorted(service_processes.SERVICES.values()) == [8001, 8002, 8003]


# --- the services' environment -------------------------------------------------------------------

def _fields_by_env_name(settings_class: type[ServiceSettings]) -> dict[str, str]:
    prefix = settings_class.model_config["env_prefix"]
    names = {}
    for field, info in settings_class.model_fields.items():
        names[(info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{field}").upper()] = field
    return names


@pytest.mark.parametrize("service", sorted(service_processes.SERVICES))
def test_each_service_variable_is_a_settings_field_and_lands_there(service, monkeypatch):
    settings_class = SETTINGS_CLASSES[service]
    compose_env = {key: str(value) for key, value in SERVICES[service]["environment"].items()}
    fields = _fields_by_env_name(settings_class)
    assert set(compose_env) <= set(fields), set(compose_env) - set(fields)
    assert f"{service.upper()}_HTTP_HOST" in compose_env  # listening beyond the container's loopback

    prefix = settings_class.model_config["env_prefix"]
    for name in list(os.environ):
        if name.upper().startswith(prefix.upper()) or name.upper() == "SAGA_KAFKA_BOOTSTRAP":
            monkeypatch.delenv(name)
    for name, value in compose_env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class()
    for name, value in compose_env.items():
        assert str(getattr(settings, fields[name])) == value, name

    assert SERVICES[service]["command"] == ["python", "-m", service]  # what saga_cli/services.py runs
    database = {role: db for db, role in SERVICE_DATABASES.items()}[service]
    in_compose = StackSettings(pg_host="postgres", pg_port=5432).service_dsn(database)
    assert settings.database_url.get_secret_value() == in_compose


def test_the_http_host_setting_is_what_the_service_binds():
    from order_svc.app import create_runtime
    from shared.settings import OrderSettings

    runtime = create_runtime(OrderSettings(http_host="0.0.0.0", http_port=18997))
    assert (runtime.app.conf.web_bind, runtime.app.conf.web_port) == ("0.0.0.0", 18997)


def test_compose_setup_variables_are_stack_settings(monkeypatch):
    env = {key: str(value) for key, value in SERVICES["setup"]["environment"].items()}
    prefix = StackSettings.model_config["env_prefix"]
    for name, value in env.items():
        assert name.startswith(prefix) and name.removeprefix(prefix).lower() in StackSettings.model_fields, name
        monkeypatch.setenv(name, value)
    settings = StackSettings()
    assert settings.pg_superuser_dsn == env["SAGA_PG_SUPERUSER_DSN"]
    assert (settings.pg_host, settings.pg_port) == ("postgres", 5432)
    assert (settings.kafka_bootstrap, settings.connect_url) == ("kafka:9092", "http://connect:8083")
    assert settings.keys_dir == Path(env["SAGA_KEYS_DIR"])


# --- the signing keys ------------------------------------------------------------------------
# SPEC §6: keys made by the stack's setup and passed to the services as secrets. Compose file
# secrets must exist on the host before `up`; a named volume that setup writes works on a cold
# start, so that is how they travel (compose.yaml, at setup).

KEYS_VOLUME = "keys"
WITH_KEYS = ("setup", *service_processes.SERVICES)


def volume_mounts(service: str) -> dict[str, tuple[str, str]]:
    """Named volume → (path in the container, "ro" or "rw") for `service` (short or long syntax)."""
    found = {}
    for mount in SERVICES[service].get("volumes", []):
        if isinstance(mount, str):
            source, target, *mode = mount.split(":")
            read_only = "ro" in (mode[0].split(",") if mode else [])
        else:
            source, target, read_only = mount.get("source"), mount["target"], bool(mount.get("read_only"))
        if source in COMPOSE.get("volumes", {}):
            found[source] = (target, "ro" if read_only else "rw")
    return found


def test_setup_writes_the_keys_into_a_volume_the_services_mount_read_only():
    assert KEYS_VOLUME in COMPOSE["volumes"]
    folder = SERVICES["setup"]["environment"]["SAGA_KEYS_DIR"]
    assert folder.startswith("/") and not folder.startswith("/app")  # not inside the image's code
    assert volume_mounts("setup")[KEYS_VOLUME] == (folder, "rw")
    for service in service_processes.SERVICES:
        assert SERVICES[service]["environment"]["SAGA_KEYS_DIR"] == folder, service
        assert volume_mounts(service)[KEYS_VOLUME] == (folder, "ro"), service
        assert "setup" in SERVICES[service]["depends_on"], service  # keys exist before a service starts
        assert SERVICES[service]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    for other in set(SERVICES) - set(WITH_KEYS):
        assert KEYS_VOLUME not in volume_mounts(other), other  # no private key where it is not used


def test_setup_and_the_services_run_as_the_same_user_so_the_private_keys_are_readable():
    # ensure_keys makes folders 0700 and private keys 0600, owned by whoever runs setup
    assert {SERVICES[name].get("build") for name in WITH_KEYS} == {"."}  # one image, one Dockerfile
    assert {SERVICES[name].get("user") for name in WITH_KEYS} == {None}
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^USER\b", dockerfile, re.MULTILINE)) <= 1  # if any, the same for all of them
    assert not re.search(r"^COPY\s+(\.|\S*\.stack)\s", dockerfile, re.MULTILINE)  # no key of this machine in the image


def test_setup_with_composes_environment_makes_keys_each_service_loads(tmp_path, monkeypatch):
    """`saga stack setup` in the setup container, the servers left out: an empty volume gets every
    service's key; a second run (the next `docker compose up`) keeps them."""
    volume = tmp_path / "volume"
    for name, value in SERVICES["setup"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("SAGA_KEYS_DIR", str(volume))

    async def no_topics() -> None:
        return None

    def set_up() -> dict[str, str]:
        stack = Stack(StackSettings())
        assert stack.settings.keys_dir == volume
        monkeypatch.setattr(stack.postgres, "prepare", lambda: None)
        monkeypatch.setattr(stack.kafka, "create_topics", no_topics)
        monkeypatch.setattr(stack.connect, "register_connectors", lambda: [])
        stack.setup(lambda line: None)
        return {service: KeyRing.load(volume, service).signing_key.key_id for service in service_processes.SERVICES}

    first = set_up()
    assert set_up() == first
    content = dict(event_id="e", event_type="ORDER_CREATED", saga_id="s", causation_id="", payload={"a": 1})
    for signer in service_processes.SERVICES:
        signature = KeyRing.load(volume, signer).sign(**content)
        for reader in service_processes.SERVICES:
            KeyRing.load(volume, reader).authenticate(signer, signature, **content)
