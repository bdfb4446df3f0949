"""`saga stack setup` (Stack.setup, compose.yaml's one-shot step) against servers that are still
starting: each step is tried again while it fails as a starting server does, a refusal or a
FAILED connector is raised at once, and after start_timeout the last error is raised. Connect's
answers are sorted into "ask again" (no answer, 409, 5xx) and "refused" (4xx). No server needed."""
from __future__ import annotations

import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from saga_cli.stack import stack as stack_module
from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect
from saga_cli.stack.errors import ConnectorsFailed, ConnectUnavailable, StackError
from saga_cli.stack.stack import Stack

pytestmark = pytest.mark.unit


class Flaky:
    """A step that raises each of `errors` in turn, then returns `result`; counts its calls."""

    def __init__(self, *errors: BaseException, result=None):
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture
def stack(tmp_path, monkeypatch) -> Stack:
    monkeypatch.setattr(stack_module, "SETUP_RETRY_INTERVAL", 0.01)
    return Stack(StackSettings(home=tmp_path / "home", keys_dir=tmp_path / "keys", start_timeout=5))


def wire(stack: Stack, monkeypatch, postgres: Flaky, kafka: Flaky, connect: Flaky) -> None:
    async def create_topics() -> None:
        kafka()

    monkeypatch.setattr(stack.postgres, "prepare", postgres)
    monkeypatch.setattr(stack.kafka, "create_topics", create_topics)
    monkeypatch.setattr(stack.connect, "register_connectors", connect)


def test_setup_waits_for_each_server_that_is_still_starting(stack, monkeypatch):
    postgres = Flaky(ConnectionRefusedError(111, "refused"), asyncpg.CannotConnectNowError("the database system is starting up"))
    kafka = Flaky(KafkaConnectionError("no broker"), OSError("unreachable"))
    connect = Flaky(ConnectUnavailable("does not answer"), ConnectUnavailable("409 rebalance"), result=["orders-outbox"])
    wire(stack, monkeypatch, postgres, kafka, connect)
    said: list[str] = []

    stack.setup(said.append)

    assert (postgres.calls, kafka.calls, connect.calls) == (3, 3, 3)
    waiting = [line for line in said if "not answering yet" in line]
    assert [line.split()[0] for line in waiting] == ["postgres", "kafka", "kafka-connect"]  # once per server
    assert "ConnectionRefusedError" in waiting[0] and "up to 5s" in waiting[0]
    assert said[-1] == "connectors     orders-outbox RUNNING"
    assert (stack.settings.keys_dir / "order_svc").is_dir()  # the keys came first, needing no server


@pytest.mark.parametrize("error", [StackError("connector orders-outbox was refused: invalid config"),
                                   ConnectorsFailed([], ["connector orders-outbox FAILED: …"])])
def test_a_refused_config_or_a_failed_connector_is_raised_at_once(stack, monkeypatch, error):
    connect = Flaky(error, result=["orders-outbox"])
    wire(stack, monkeypatch, Flaky(), Flaky(), connect)

    with pytest.raises(type(error)) as raised:
        stack.setup(lambda line: None)
    assert raised.value is error and connect.calls == 1


def test_a_database_error_that_is_no_start_is_raised_at_once(stack, monkeypatch):
    postgres = Flaky(asyncpg.InvalidPasswordError("password authentication failed"))
    kafka = Flaky()
    wire(stack, monkeypatch, postgres, kafka, Flaky(result=[]))

    with pytest.raises(asyncpg.InvalidPasswordError):
        stack.setup(lambda line: None)
    assert (postgres.calls, kafka.calls) == (1, 0)


def test_after_start_timeout_the_last_error_is_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "SETUP_RETRY_INTERVAL", 0.05)
    stack = Stack(StackSettings(home=tmp_path / "home", keys_dir=tmp_path / "keys", start_timeout=0.5))
    errors = [OSError(f"refused, try {n}") for n in range(1000)]
    postgres = Flaky(*errors)
    wire(stack, monkeypatch, postgres, Flaky(), Flaky(result=[]))

    with pytest.raises(OSError) as raised:
        stack.setup(lambda line: None)
    assert 3 <= postgres.calls <= 20
    assert str(raised.value) == f"refused, try {postgres.calls - 1}"  # the last one, not the first


# --- what Connect's answers mean to setup ------------------------------------------------------

def answering(monkeypatch, status: int | None) -> list[str]:
    """Connect answering every request with `status` (None: not answering at all); returns the requests."""
    requests: list[str] = []

    def request(method: str, url: str, **kwargs) -> httpx.Response:
        requests.append(f"{method} {url}")
        if status is None:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(status, json={"error_code": status, "message": f"answer {status}"})

    monkeypatch.setattr(httpx, "request", request)
    return requests


@pytest.mark.parametrize("status", [None, 409, 500, 503])
def test_connect_not_answering_or_not_ready_is_worth_asking_again(monkeypatch, status):
    requests = answering(monkeypatch, status)
    with pytest.raises(ConnectUnavailable):
        Connect(StackSettings(connect_url="http://connect:8083")).register_connectors()
    assert requests[0].startswith("PUT http://connect:8083/connectors/") and requests[0].endswith("/config")


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_config_connect_refuses_is_not(monkeypatch, status):
    answering(monkeypatch, status)
    with pytest.raises(StackError, match=f"was refused: answer {status}") as raised:
        Connect(StackSettings(connect_url="http://connect:8083")).register_connectors()
    assert not isinstance(raised.value, ConnectUnavailable)
