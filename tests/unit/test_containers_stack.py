"""SAGA_STACK=containers where compose.yaml cannot run, as on a machine without a Docker engine:
which of docker, its engine and its compose plugin is missing (and the skip says so), the tests
that need the native stack skipped with their reason, compose started before the first test
rather than inside one's timeout, and `make test` installing no Java, Maven or jars for it."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import containers

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_answers():
    containers.unavailable_reason.cache_clear()
    yield
    containers.unavailable_reason.cache_clear()


def fake_docker(folder: Path, monkeypatch, *, info: int, compose: int) -> None:
    """A `docker` on PATH (alone) whose `docker info` and `docker compose version` exit with these codes."""
    folder.mkdir()
    script = folder / "docker"
    script.write_text(f"""#!/bin/sh
case "$1" in
  info) exit {info} ;;
  compose) exit {compose} ;;
esac
exit 2
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


def test_no_docker_client(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "no `docker` client" in containers.unavailable_reason()


def test_a_client_without_an_engine(tmp_path, monkeypatch):
    fake_docker(tmp_path / "bin", monkeypatch, info=1, compose=0)
    reason = containers.unavailable_reason()
    assert "no Docker engine answers `docker info`" in reason
    assert "can only be shown with both" in reason and "test_compose_agrees.py" in reason


def test_an_engine_without_the_compose_plugin_is_a_skip_not_an_exception(tmp_path, monkeypatch):
    fake_docker(tmp_path / "bin", monkeypatch, info=0, compose=1)
    monkeypatch.setenv("SAGA_STACK", "containers")
    assert "`docker compose` plugin is missing" in containers.unavailable_reason()
    assert "not available" in containers.report_line()
    with pytest.raises(pytest.skip.Exception, match="plugin is missing"):
        containers.ensure_stack()


def test_an_engine_with_the_plugin_is_usable(tmp_path, monkeypatch):
    fake_docker(tmp_path / "bin", monkeypatch, info=0, compose=0)
    monkeypatch.setenv("SAGA_STACK", "containers")
    assert containers.unavailable_reason() is None
    assert containers.report_line() == "stack: containers (compose.yaml through testcontainers)"


class FakeItem:
    """What the skip and start decisions read of a collected test."""

    def __init__(self, nodeid: str, markers: tuple[str, ...] = (), fixtures: tuple[str, ...] = ()):
        self.nodeid = nodeid
        self.marks = [getattr(pytest.mark, name) for name in markers]
        self.fixturenames = list(fixtures)

    def iter_markers(self):
        return iter(mark.mark for mark in self.marks)

    def add_marker(self, marker) -> None:
        self.marks.append(marker)

    def skip_reason(self) -> str | None:
        return next((mark.kwargs["reason"] for mark in self.iter_markers() if mark.name == "skip"), None)


def test_tests_that_need_the_native_stack_are_skipped_with_their_reason(monkeypatch):
    monkeypatch.setenv("SAGA_STACK", "containers")
    items = [FakeItem("tests/faults/test_poison.py::test_x", ("faults",), ("services",)),
             FakeItem("tests/elsewhere/test_y.py::test_killing", ("faults",)),
             FakeItem("tests/integration/test_demo.py::test_demo", ("integration",), ("services",)),
             FakeItem("tests/integration/test_observability.py::test_each_consumed_message_is_one_json_log_line"),
             FakeItem("tests/integration/test_observability.py::test_metrics_scrape_cleanly_and_count_the_finished_saga",
                      fixtures=("services",)),
             FakeItem("tests/integration/test_saga_flows.py::test_happy", ("integration",), ("services",))]

    containers.skip_native_only(items)

    reasons = [item.skip_reason() for item in items]
    assert "by pid" in reasons[0] and "by pid" in reasons[1]
    assert "process ids" in reasons[2] and "log files" in reasons[3]
    assert reasons[4] is None and reasons[5] is None
    assert all(reason.startswith("SAGA_STACK=containers: ") for reason in reasons[:4])


def test_the_native_stack_skips_nothing(monkeypatch):
    monkeypatch.delenv("SAGA_STACK", raising=False)
    item = FakeItem("tests/faults/test_poison.py::test_x", ("faults",))
    containers.skip_native_only([item])
    assert item.skip_reason() is None


def test_compose_starts_before_the_tests_only_when_one_needs_the_stack(monkeypatch):
    started: list[str] = []
    monkeypatch.setenv("SAGA_STACK", "containers")
    monkeypatch.delenv("SAGA_TEST_PG_DSN", raising=False)
    monkeypatch.setattr(containers, "unavailable_reason", lambda: None)
    monkeypatch.setattr(containers, "ensure_stack", lambda: started.append("up"))

    containers.start_before_tests([FakeItem("tests/unit/test_a.py::test_a")])
    skipped = FakeItem("tests/faults/test_b.py::test_b", ("faults",), ("services",))
    containers.skip_native_only([skipped])
    containers.start_before_tests([skipped])
    assert started == []
    containers.start_before_tests([FakeItem("tests/integration/test_c.py::test_c", fixtures=("pg_superuser_dsn",))])
    assert started == ["up"]

    monkeypatch.setenv("SAGA_TEST_PG_DSN", "postgresql://elsewhere/db")  # that one needs no stack then
    containers.start_before_tests([FakeItem("tests/integration/test_c.py::test_c", fixtures=("pg_superuser_dsn",))])
    assert started == ["up"]


def test_compose_is_not_started_where_it_cannot_run(monkeypatch):
    monkeypatch.setenv("SAGA_STACK", "containers")
    monkeypatch.setattr(containers, "unavailable_reason", lambda: "no engine")
    monkeypatch.setattr(containers, "ensure_stack", lambda: pytest.fail("started without an engine"))
    containers.start_before_tests([FakeItem("tests/integration/test_c.py::test_c", fixtures=("services",))])


def test_a_failed_start_before_the_tests_fails_each_test_that_needs_the_stack(monkeypatch):
    monkeypatch.setenv("SAGA_STACK", "containers")
    monkeypatch.setattr(containers, "unavailable_reason", lambda: None)
    monkeypatch.setattr(containers, "_running", None)
    monkeypatch.setattr(containers, "_start_error", None)
    original = containers.ensure_stack

    def failing_start():
        raise RuntimeError("ports [9092] are taken")

    monkeypatch.setattr(containers, "ensure_stack", failing_start)
    containers.start_before_tests([FakeItem("tests/integration/test_c.py::test_c", fixtures=("services",))])
    monkeypatch.setattr(containers, "ensure_stack", original)

    with pytest.raises(RuntimeError, match=r"did not start before the tests: ports \[9092\] are taken"):
        containers.ensure_stack()


# --- make test ---------------------------------------------------------------------------------

def make_test_commands(**env: str) -> str:
    """The commands `make test` would run from nothing (-B: as if nothing were installed; -n: run none)."""
    environment = {key: value for key, value in os.environ.items() if key != "SAGA_STACK"} | env
    result = subprocess.run(["make", "-n", "-B", "test"], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=environment, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no `make` on PATH")
def test_make_test_with_containers_installs_no_java_maven_or_jars():
    native = make_test_commands()
    assert "system-deps.sh" in native and "saga stack install" in native  # what the native stack needs
    for containers_run in (make_test_commands(SAGA_STACK="containers"), make_test_commands(SAGA_STACK=" containers")):
        assert "system-deps.sh" not in containers_run and "stack install" not in containers_run
        assert "pip install" in containers_run and "-m pytest" in containers_run
