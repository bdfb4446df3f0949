"""compose.yaml (the Docker path) and the native stack describe the same system.

Read as files, no Docker and no server needed: the topics the connectors route to and the
stack creates, the connector configs and the ${env:…} names they need, the settings of the
Connect worker, the broker and PostgreSQL (each as the image's entrypoint turns compose's
variables into them), the image versions and the jars', the published ports, the
healthchecks and the order they gate, the services' environment variables, each of which
must be a field of the service's settings (and land there), the image (its user, what it
installs, what its build context leaves out), and the signing keys: made by setup into a
volume the services mount read-only, as the same user.

What the images do with their variables is written down here from their own entrypoints
(quay.io/debezium/connect's docker-entrypoint.sh, apache/kafka's KafkaDockerWrapper,
postgres' docker-entrypoint.sh) for the tags compose.yaml names; that a container then starts
and answers can only be seen with a Docker engine (SAGA_STACK=containers)."""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from saga_cli import services as service_processes
from saga_cli.endpoints import INVENTORY_SVC, ORDER_SVC, PAYMENT_SVC
from saga_cli.stack import Stack
from saga_cli.stack.config import REPO_ROOT, SERVICE_DATABASES, StackSettings
from saga_cli.stack.connect import Connect, connector_documents
from saga_cli.stack.kafka import EVENT_TOPICS
from saga_cli.stack.postgres import SERVER_SETTINGS
from shared.auth import KeyRing
from shared.settings import SETTINGS_CLASSES, ServiceSettings
from shared.topics import TOPICS

pytestmark = pytest.mark.unit  # fast and needs no server, though it is about the whole topology

COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
CONNECTORS = {document["name"]: document for document in connector_documents(REPO_ROOT / "connect")}
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


# quay.io/debezium/connect (connect-base/3.6/docker-entrypoint.sh, the image of 3.6.1.Final) writes
# each CONNECT_A_B variable as the worker property a.b, after exporting these CONNECT_ keys itself
# from its own variables (defaults when unset or empty): whatever compose gives a CONNECT_ spelling
# of them is overwritten, as CONNECT_OFFSET_FLUSH_INTERVAL_MS once was (offsets flushed every 60 s).
CONTAINER_ADDRESS = "<the container's address>"
DEBEZIUM_ENTRYPOINT_OWNS = {
    "CONNECT_BOOTSTRAP_SERVERS": ("BOOTSTRAP_SERVERS", "0.0.0.0:9092"),
    "CONNECT_GROUP_ID": ("GROUP_ID", "1"),
    "CONNECT_CONFIG_STORAGE_TOPIC": ("CONFIG_STORAGE_TOPIC", ""),
    "CONNECT_OFFSET_STORAGE_TOPIC": ("OFFSET_STORAGE_TOPIC", ""),
    "CONNECT_KEY_CONVERTER": ("KEY_CONVERTER", "org.apache.kafka.connect.json.JsonConverter"),
    "CONNECT_VALUE_CONVERTER": ("VALUE_CONVERTER", "org.apache.kafka.connect.json.JsonConverter"),
    "CONNECT_TASK_SHUTDOWN_GRACEFUL_TIMEOUT_MS": ("SHUTDOWN_TIMEOUT", "10000"),
    "CONNECT_OFFSET_FLUSH_INTERVAL_MS": ("OFFSET_FLUSH_INTERVAL_MS", "60000"),
    "CONNECT_OFFSET_FLUSH_TIMEOUT_MS": ("OFFSET_FLUSH_TIMEOUT_MS", "5000"),
    "CONNECT_REST_PORT": ("REST_PORT", "8083"),
    "CONNECT_REST_HOST_NAME": ("REST_HOST_NAME", CONTAINER_ADDRESS),
    "CONNECT_REST_ADVERTISED_PORT": ("ADVERTISED_PORT", "8083"),
    "CONNECT_REST_ADVERTISED_HOST_NAME": ("ADVERTISED_HOST_NAME", CONTAINER_ADDRESS),
}
DEBEZIUM_ENTRYPOINT_OWNS_WHEN_SET = {"CONNECT_STATUS_STORAGE_TOPIC": "STATUS_STORAGE_TOPIC"}
# worker.properties keys that say where the worker runs (filled in per machine, or the container's own)
WHERE_THE_WORKER_RUNS = {"bootstrap.servers", "listeners", "rest.advertised.host.name", "rest.advertised.port", "plugin.path"}


def debezium_worker_properties(environment: dict) -> dict[str, str]:
    """The worker properties the Debezium image's entrypoint writes from a container `environment`
    (its CONNECT_LOG4J* variables go to log4j, not to the worker)."""
    env = {key: str(value) for key, value in environment.items()}
    exported = dict(env)
    for key, (variable, default) in DEBEZIUM_ENTRYPOINT_OWNS.items():
        exported[key] = env.get(variable) or default  # `: ${VAR:=default}` then `export CONNECT_…=$VAR`
    for key, variable in DEBEZIUM_ENTRYPOINT_OWNS_WHEN_SET.items():
        if env.get(variable):
            exported[key] = env[variable]
    return {key.removeprefix("CONNECT_").lower().replace("_", "."): value for key, value in exported.items()
            if key.startswith("CONNECT_") and not key.startswith("CONNECT_LOG4J")}


def test_compose_sets_no_connect_key_the_images_entrypoint_overwrites():
    env = SERVICES["connect"]["environment"]
    overwritten = {key: DEBEZIUM_ENTRYPOINT_OWNS[key][0] for key in env if key in DEBEZIUM_ENTRYPOINT_OWNS}
    assert not overwritten, f"the image's entrypoint overwrites these; set its own variables instead: {overwritten}"
    assert not any("@" in str(value) for key, value in env.items() if key.startswith("CONNECT_"))  # its sed's separator


def test_compose_connect_runs_the_worker_the_native_stack_configures():
    worker = properties(REPO_ROOT / "connect" / "worker.properties")
    in_container = debezium_worker_properties(SERVICES["connect"]["environment"])
    per_machine = {key for key, value in worker.items() if "{{" in value}
    assert per_machine <= WHERE_THE_WORKER_RUNS, per_machine - WHERE_THE_WORKER_RUNS
    differing = {key: (in_container.get(key), value) for key, value in worker.items()
                 if key not in WHERE_THE_WORKER_RUNS and in_container.get(key) != value}
    assert not differing, f"property: (in the container, native): {differing}"
    assert in_container["offset.flush.interval.ms"] == "1000"
    assert in_container["bootstrap.servers"] == SERVICES["setup"]["environment"]["SAGA_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert in_container["rest.port"] == "8083" and host_port("connect", 8083)  # Kafka's default listener, http://:8083


def heap_options(heap: str) -> str:
    return f"-Xms{heap} -Xmx{heap}"


def test_compose_jvms_get_the_native_heaps():
    # the Debezium image exports HEAP_OPTS as KAFKA_HEAP_OPTS; Apache Kafka's image hands KAFKA_HEAP_OPTS to the JVM
    assert SERVICES["connect"]["environment"]["HEAP_OPTS"] == heap_options(default(StackSettings, "connect_heap"))
    assert "KAFKA_HEAP_OPTS" not in SERVICES["connect"]["environment"]  # the entrypoint would replace it
    assert SERVICES["kafka"]["environment"]["KAFKA_HEAP_OPTS"] == heap_options(default(StackSettings, "kafka_heap"))


# apache/kafka (KafkaDockerWrapper): KAFKA_A_B is the property a.b ("__" is "_", "___" is "-"), these
# variables aside; given any, none of the image's default server.properties is used.
KAFKA_IMAGE_NOT_PROPERTIES = {"KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
                              "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
                              "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME"}
KAFKA_DEFAULTS = {"log.retention.hours": "168"}
"""What the broker takes for a property no KAFKA_ variable gives (Kafka's own defaults, where compose relies on one)."""
WHERE_THE_BROKER_RUNS = {"listeners", "advertised.listeners", "listener.security.protocol.map",
                         "controller.quorum.voters", "log.dirs"}


def apache_kafka_properties(environment: dict) -> dict[str, str]:
    """The broker properties Apache Kafka's image writes from a container `environment`, over KAFKA_DEFAULTS."""
    return KAFKA_DEFAULTS | {key.replace("KAFKA_", "").lower().replace("_", ".").replace("...", "-").replace("..", "_"): str(value)
            for key, value in environment.items() if key.startswith("KAFKA_") and key not in KAFKA_IMAGE_NOT_PROPERTIES}


def test_compose_kafka_runs_the_broker_the_native_stack_configures():
    native = properties(REPO_ROOT / "connect" / "server.properties")
    in_container = apache_kafka_properties(SERVICES["kafka"]["environment"])
    per_machine = {key for key, value in native.items() if "{{" in value}
    assert per_machine <= WHERE_THE_BROKER_RUNS, per_machine - WHERE_THE_BROKER_RUNS
    differing = {key: (in_container.get(key), value) for key, value in native.items()
                 if key not in WHERE_THE_BROKER_RUNS and in_container.get(key) != value}
    assert not differing, f"property: (in the container, native): {differing}"
    protocols = set(in_container["listener.security.protocol.map"].split(","))
    assert set(native["listener.security.protocol.map"].split(",")) <= protocols


# saga_cli/stack/postgres.py's settings that say where the server listens and logs, not how it behaves
WHERE_POSTGRES_RUNS = {"listen_addresses", "port", "unix_socket_directories", "unix_socket_permissions",
                       "logging_collector", "log_min_messages", "log_line_prefix"}


def test_compose_postgres_runs_the_server_the_native_stack_configures():
    native = dict(line.split(" = ", 1) for line in SERVER_SETTINGS.splitlines() if " = " in line and not line.startswith("#"))
    command = SERVICES["postgres"]["command"]
    assert command[0] == "postgres" and all(flag == "-c" for flag in command[1::2])
    in_container = dict(setting.split("=", 1) for setting in command[2::2])
    wanted = {key: value.strip("'") for key, value in native.items() if key not in WHERE_POSTGRES_RUNS}
    assert {"max_connections", "shared_buffers", "wal_level"} <= set(wanted)
    assert {key: in_container.get(key) for key in wanted} == wanted


# --- start order and healthchecks ------------------------------------------------------------------

def healthcheck(service: str) -> list[str]:
    check = SERVICES[service].get("healthcheck")
    assert check and check["test"][0] == "CMD", f"{service} has no exec-form healthcheck"
    return [str(part) for part in check["test"][1:]]


def test_every_long_running_service_has_a_healthcheck_and_is_waited_for_healthy():
    for name, service in SERVICES.items():
        if name == "setup":  # one-shot: the others wait for it to exit 0
            assert "healthcheck" not in service
            continue
        healthcheck(name)
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert isinstance(condition, dict), f"{name} waits for {dependency} only to be started"
            wanted = "service_completed_successfully" if dependency == "setup" else "service_healthy"
            assert condition["condition"] == wanted, (name, dependency)
    # setup's steps need all three servers answering, not only started
    assert SERVICES["setup"]["depends_on"] == {server: {"condition": "service_healthy"}
                                               for server in ("postgres", "kafka", "connect")}


def test_postgres_is_healthy_only_when_it_answers_over_tcp():
    # on a fresh volume the image's init server runs with listen_addresses='' (Unix socket only)
    probe = healthcheck("postgres")
    assert probe[0] == "pg_isready"
    hosts = [part.removeprefix("--host=") for part in probe if part.startswith("--host=")]
    hosts += [probe[i + 1] for i, part in enumerate(probe) if part == "-h"]
    assert hosts and not any(host.startswith("/") for host in hosts), probe


def test_kafka_connect_and_the_services_are_healthy_when_they_answer():
    assert healthcheck("kafka")[0].endswith("/kafka-broker-api-versions.sh")
    assert healthcheck("kafka")[1:] == ["--bootstrap-server", SERVICES["setup"]["environment"]["SAGA_KAFKA_BOOTSTRAP"]]
    # Connect's readiness endpoint (KIP-1017: 503 while the worker starts), on its REST port
    assert healthcheck("connect")[0] == "curl" and "--fail" in healthcheck("connect")
    assert healthcheck("connect")[-1] == "http://localhost:8083/health"
    for service, port in service_processes.SERVICES.items():
        probe = healthcheck(service)
        assert probe[:2] == ["python", "-c"] and "urlopen(sys.argv[1]" in probe[2], probe
        assert probe[3] == f"http://127.0.0.1:{port}/health"  # what the tests' ensure_services waits for


def test_setup_waits_for_the_servers_as_long_as_a_cold_start_takes():
    # Stack.setup tries each step again while its server is starting, up to start_timeout seconds
    assert float(SERVICES["setup"]["environment"]["SAGA_START_TIMEOUT"]) >= default(StackSettings, "start_timeout")


def test_compose_images_are_the_releases_the_native_stack_resolves():
    assert SERVICES["connect"]["image"].split(":")[1] == pom_property("debezium.version")
    assert SERVICES["kafka"]["image"].split(":")[1] == pom_property("kafka.version")


def test_compose_registers_the_same_connector_files():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY connect connect$", dockerfile, re.MULTILINE)  # `saga stack setup` reads connect/outbox-connector.json
    assert "connect" in SERVICES["setup"]["depends_on"]
    assert "wal_level=logical" in SERVICES["postgres"]["command"]


# --- the image ----------------------------------------------------------------------------------

def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def test_the_image_installs_the_project_with_tracing_and_without_its_test_and_bench_extras():
    installs = re.findall(r"^RUN pip install (.+)$", dockerfile(), re.MULTILINE)
    # editable: `saga stack setup` reads connect/outbox-connector.json beside the code; `otel` so that OTEL_*
    # set on a service turns its traces on (shared/telemetry.py), as on the native stack
    assert installs == ["-e '.[otel]'"]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(requirement.startswith("matplotlib") for requirement in project["dependencies"])
    assert any(requirement.startswith("matplotlib") for requirement in project["optional-dependencies"]["bench"])
    assert any(requirement.startswith("order-saga[") and "bench" in requirement  # make test draws the plots
               for requirement in project["optional-dependencies"]["dev"])


def test_the_build_context_leaves_out_this_machines_state_and_keys():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    home = default(StackSettings, "home").relative_to(REPO_ROOT)  # the native stack's data, logs and keys
    assert {str(home), ".venv", ".git"} <= ignored
    assert not any(line.startswith("!") for line in ignored)
    copied = re.findall(r"^COPY (\S+) ", dockerfile(), re.MULTILINE)
    assert not set(copied) & ignored, set(copied) & ignored


# --- ports ---------------------------------------------------------------------------------

def test_published_ports_are_the_native_defaults_on_loopback():
    assert host_port("postgres", 5432) == ("127.0.0.1", default(StackSettings, "pg_port")) == ("127.0.0.1", 15432)
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


def revealed(value) -> str:
    """A setting as the service uses it (a SecretStr's value, not its mask)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


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
        assert revealed(getattr(settings, fields[name])) == value, name

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
# docs/contract/events.md, Signatures: keys made by the stack's setup and passed to the services as
# secrets. Compose file secrets must exist on the host before `up`; a named volume that setup writes
# works on a cold start, so that is how they travel (compose.yaml, at setup).

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
    text = dockerfile()
    users = re.findall(r"^USER\s+(\S+)$", text, re.MULTILINE)
    assert len(users) == 1 and users[0] not in ("root", "0"), users  # one user for all of them, not root
    assert text.rstrip().splitlines()[-1] == f"USER {users[0]}"  # after every RUN
    assert not re.search(r"^COPY\s+(\.|\S*\.stack)\s", text, re.MULTILINE)  # no key of this machine in the image


def test_the_image_makes_the_keys_folder_its_users_so_a_new_volume_is_writable():
    # a new named volume takes the owner and mode of the image's folder it is mounted on
    user = re.findall(r"^USER\s+(\S+)$", dockerfile(), re.MULTILINE)[0]
    folder = SERVICES["setup"]["environment"]["SAGA_KEYS_DIR"]
    made = re.search(rf"install -d -o {re.escape(user)} -g \S+ -m (0\d{{3}}) {re.escape(folder)}\b", dockerfile())
    assert made and made.group(1) == "0700", f"the Dockerfile makes no {folder} owned by {user}"
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", dockerfile())


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
