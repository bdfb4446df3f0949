"""`saga stack keys list|rotate|retire` on a key folder of its own: what each prints, what it
changes on disk, what a service loading the folder afterwards signs with and accepts, and one
line (never a traceback) for every mistake; `saga restart`, which a rotation asks for, with
stand-in processes."""
from __future__ import annotations

import json
import stat

import pytest

from shared import auth
from shared.auth import KeyRing
from shared.topics import SERVICES
from cli_support import assert_one_line_error, run_saga

pytestmark = pytest.mark.unit


@pytest.fixture
def keys_dir(tmp_path, monkeypatch):
    folder = tmp_path / "keys"
    auth.ensure_keys(folder)
    monkeypatch.setenv("SAGA_KEYS_DIR", str(folder))
    return folder


def listed(capsys) -> list[dict]:
    outcome = run_saga(capsys, "stack", "keys", "list", "--json")
    assert outcome.exit_code == 0, outcome
    return json.loads(outcome.stdout)


def current(capsys, service: str) -> str:
    return next(row["key_id"] for row in listed(capsys) if row["service"] == service and row["state"] == "current")


def test_list_shows_one_current_key_per_service(capsys, keys_dir):
    rows = listed(capsys)
    assert [row["service"] for row in rows] == list(SERVICES)
    assert {row["state"] for row in rows} == {"current"}
    for row in rows:
        assert row["key_id"] == KeyRing.load(keys_dir, row["service"]).signing_key.key_id

    table = run_saga(capsys, "stack", "keys", "list")
    assert table.exit_code == 0
    for row in rows:
        assert row["key_id"] in table.stdout


def test_rotate_prints_the_new_key_and_keeps_the_old_one_accepted(capsys, keys_dir):
    old = current(capsys, "payment_svc")
    signed_before = KeyRing.load(keys_dir, "payment_svc")

    outcome = run_saga(capsys, "stack", "keys", "rotate", "payment_svc")

    assert outcome.exit_code == 0, outcome
    new = outcome.stdout.strip()
    assert auth.KEY_ID.fullmatch(new) and new != old
    assert "saga restart order_svc inventory_svc payment_svc" in outcome.stderr  # the others first
    assert {(row["key_id"], row["state"]) for row in listed(capsys) if row["service"] == "payment_svc"} == {
        (old, "accepted"), (new, "current")}
    ring = KeyRing.load(keys_dir, "order_svc")  # a consumer started now
    content = dict(event_id="e", event_type="PAYMENT_COMPLETED", saga_id="s", causation_id="c", payload={"a": 1})
    ring.authenticate("payment_svc", signed_before.sign(**content), **content)
    ring.authenticate("payment_svc", KeyRing.load(keys_dir, "payment_svc").sign(**content), **content)
    assert stat.S_IMODE(auth.signing_key_path(keys_dir, "payment_svc").stat().st_mode) == 0o600
    assert [row["state"] for row in listed(capsys) if row["service"] != "payment_svc"] == ["current", "current"]


def test_retire_removes_an_old_key_only(capsys, keys_dir):
    old = current(capsys, "order_svc")
    new = run_saga(capsys, "stack", "keys", "rotate", "order_svc").stdout.strip()

    assert_one_line_error(run_saga(capsys, "stack", "keys", "retire", "order_svc", new), "current signing key", "rotate")
    outcome = run_saga(capsys, "stack", "keys", "retire", "order_svc", old.upper())

    assert outcome.exit_code == 0, outcome
    assert [(row["key_id"], row["state"]) for row in listed(capsys) if row["service"] == "order_svc"] == [(new, "current")]
    assert old not in KeyRing.load(keys_dir, None).public_keys["order_svc"]
    assert_one_line_error(run_saga(capsys, "stack", "keys", "retire", "order_svc", old), "has no key", old)


@pytest.mark.parametrize("args, fragments", [
    (("rotate", "shipping_svc"), ("unknown service 'shipping_svc'", "order_svc, inventory_svc, payment_svc")),
    (("retire", "shipping_svc", "0123456789abcdef"), ("unknown service 'shipping_svc'",)),
    (("retire", "order_svc", "0123456789abcdef"), ("order_svc has no key 0123456789abcdef",)),
    (("retire", "order_svc", "../signing"), ("'../signing' is not a key id",)),
    (("retire", "order_svc", ""), ("is not a key id",)),
])
def test_mistakes_are_one_line_and_change_nothing(capsys, keys_dir, args, fragments):
    before = listed(capsys)
    assert_one_line_error(run_saga(capsys, "stack", "keys", *args), *fragments)
    assert listed(capsys) == before


def test_a_missing_folder_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGA_KEYS_DIR", str(tmp_path / "nowhere"))
    for args in (("list",), ("rotate", "order_svc"), ("retire", "order_svc", "0123456789abcdef")):
        assert_one_line_error(run_saga(capsys, "stack", "keys", *args), "no keys in", "saga stack up")
    assert not (tmp_path / "nowhere").exists()


def test_a_service_without_a_signing_key_is_not_rotated(capsys, keys_dir):
    auth.signing_key_path(keys_dir, "inventory_svc").unlink()
    assert_one_line_error(run_saga(capsys, "stack", "keys", "rotate", "inventory_svc"), "inventory_svc has no signing key")
    rows = [row for row in listed(capsys) if row["service"] == "inventory_svc"]
    assert [row["state"] for row in rows] == ["accepted"]


def test_a_damaged_key_file_is_one_line(capsys, keys_dir):
    (keys_dir / "payment_svc" / "public" / "0123456789abcdef.pub").write_text("not a key\n")
    assert_one_line_error(run_saga(capsys, "stack", "keys", "list"), "cannot use the keys in")
    auth.signing_key_path(keys_dir, "order_svc").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert_one_line_error(run_saga(capsys, "stack", "keys", "rotate", "order_svc"), "cannot use the keys in")


def test_the_auth_functions_refuse_names_outside_the_folder(keys_dir):
    with pytest.raises(ValueError, match="unknown service"):
        auth.rotate(keys_dir, "../elsewhere")
    with pytest.raises(ValueError, match="not a key id"):
        auth.retire(keys_dir, "order_svc", "../signing")
    assert not (keys_dir.parent / "elsewhere").exists()


@pytest.fixture
def processes(monkeypatch):
    """Stand-ins for the service processes: which run, and every stop and start, in order."""
    from saga_cli import services

    running = {"order_svc", "inventory_svc"}
    calls: list[tuple[str, str]] = []

    def stop(service) -> None:
        calls.append(("stop", service.name))
        running.discard(service.name)

    def start(service) -> None:
        calls.append(("start", service.name))
        running.add(service.name)

    monkeypatch.setattr(services.Service, "find", lambda service: object() if service.name in running else None)
    monkeypatch.setattr(services.Service, "stop", stop)
    monkeypatch.setattr(services.Service, "start", start)
    return calls


def test_restart_takes_the_services_one_after_another_in_the_order_given(capsys, processes):
    outcome = run_saga(capsys, "restart", "inventory_svc", "payment_svc", "order_svc", "inventory_svc")
    assert outcome.exit_code == 0, outcome
    assert processes == [("stop", "inventory_svc"), ("start", "inventory_svc"), ("start", "payment_svc"),
                         ("stop", "order_svc"), ("start", "order_svc")]  # payment_svc was not running: only started


def test_restart_without_names_restarts_all_three(capsys, processes):
    assert run_saga(capsys, "restart").exit_code == 0
    assert [name for action, name in processes if action == "start"] == list(SERVICES)


def test_restart_of_an_unknown_service_stops_nothing(capsys, processes):
    assert_one_line_error(run_saga(capsys, "restart", "order_svc", "shipping_svc"), "unknown service 'shipping_svc'")
    assert processes == []
