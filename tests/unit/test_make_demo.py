"""`make demo` installs only what the demo runs: no Chromium (the board's browser test needs it,
not the demo) and no test or bench packages; `make test` still installs both."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_DEPS = REPO_ROOT / "scripts" / "system-deps.sh"


def make_commands(target: str) -> str:
    """What `make TARGET` would run from nothing (-B: as if nothing were installed; -n: run none)."""
    environment = {key: value for key, value in os.environ.items() if key != "SAGA_STACK"}
    result = subprocess.run(["make", "-n", "-B", target], cwd=REPO_ROOT, capture_output=True, text=True,
                            env=environment, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no `make` on PATH")
def test_make_demo_installs_neither_the_browser_nor_the_test_packages():
    demo = make_commands("demo")
    assert "scripts/system-deps.sh --without-browser" in demo
    assert "pip install -q -e ." in demo and "[dev]" not in demo
    assert "saga stack install" in demo and "-m saga_cli.demo" in demo

    test = make_commands("test")
    assert "scripts/system-deps.sh\n" in test and "--without-browser" not in test
    assert "pip install -q -e '.[dev]'" in test


@pytest.fixture
def system(tmp_path):
    """A PATH where Java 17, Maven and PostgreSQL are there, Chromium is not, and apt-get only
    writes down what it was asked to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "head", "env", "id", "ls", "cat", "mkdir", "tee"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"no {tool} on PATH")
        (bin_dir / tool).symlink_to(found)
    log = tmp_path / "apt.log"
    fakes = {
        "java": "echo 'openjdk version \"17.0.9\" 2023-10-17' >&2",
        "mvn": "true",
        "sudo": 'exec "$@"',
        "apt-get": f'echo "$@" >> {log}',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!{shutil.which('bash')}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), "SAGA_PG_BIN": "/somewhere/bin", "HOME": str(tmp_path)}
    return env, log


def installed(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def test_system_deps_without_browser_installs_no_chromium(system):
    env, log = system
    result = subprocess.run(["bash", str(SYSTEM_DEPS), "--without-browser"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "chromium" not in installed(log)

    result = subprocess.run(["bash", str(SYSTEM_DEPS)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "chromium chromium-driver" in installed(log)  # what the browser test needs, for `make test`


def test_system_deps_refuses_an_unknown_argument(system):
    env, log = system
    result = subprocess.run(["bash", str(SYSTEM_DEPS), "--without-chromium"], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    assert installed(log) == ""
