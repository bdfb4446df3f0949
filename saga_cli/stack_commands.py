"""`saga stack up|down|status` (the native infrastructure), `saga stack keys …` (the services' signing
keys, saga_cli/keys.py), `saga stack recover` (a connector whose slot was lost, saga_cli/stack/recovery.py)
and `saga up|down|status` (plus the services)."""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from saga_cli import keys
from saga_cli import services as service_processes
from saga_cli.parsing import parse_since
from saga_cli.stack import Stack, StackSettings
from saga_cli.stack.errors import ConnectorsFailed
from saga_cli.stack.recovery import recover

stack_app = typer.Typer(no_args_is_help=True, help="The native infrastructure: PostgreSQL, Kafka (KRaft), Kafka Connect with Debezium.")
stack_app.add_typer(keys.keys_app, name="keys")
console = Console(stderr=True, highlight=False)

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def _say(line: str) -> None:
    console.print(line)


@stack_app.command("up")
def stack_up() -> None:
    """Start what is not running (idempotent), register the connectors, wait until all are RUNNING."""
    seconds = Stack().up(_say)
    console.print(f"[green]stack up[/green] in {seconds:.1f}s")


@stack_app.command("down")
def stack_down() -> None:
    """Stop what the stack started, and nothing else."""
    Stack().down(_say)


@stack_app.command("status")
def stack_status(as_json: bool = JsonOption) -> None:
    """Each component's state and pid."""
    _print_status([status.as_json() for status in Stack().status()], as_json)


@stack_app.command("setup")
def stack_setup() -> None:
    """Prepare running servers it did not start (SAGA_PG_SUPERUSER_DSN, SAGA_KAFKA_BOOTSTRAP, SAGA_CONNECT_URL): the Docker path."""
    Stack().setup(_say)


@stack_app.command("install")
def stack_install() -> None:
    """Resolve what the stack needs (Maven jars, console tool scripts) without starting anything."""
    Stack().install(_say)


@stack_app.command("recover")
def stack_recover(
    connector: str = typer.Argument(..., metavar="CONNECTOR",
                                    help="orders-outbox, inventory-outbox or payments-outbox (or its database or slot)"),
    since: str = typer.Option(None, "--since", metavar="TIME",
                              help="Republish only outbox rows created at or after TIME (ISO-8601 or epoch ms); "
                                   "by default every row the outbox holds, which can never leave a gap."),
    as_json: bool = JsonOption,
) -> None:
    """Bring back a connector whose replication slot was lost (dropped, recreated, invalidated): stream from
    the slot again and republish its outbox rows (duplicates allowed, gaps never). Safe to run again."""
    report = recover(StackSettings(), connector, parse_since(since) if since is not None else None,
                     lambda line: console.print(line, soft_wrap=True, markup=False))
    if as_json:
        print(json.dumps(report.as_json()))
    console.print(f"[green]recovered[/green] {report.connector} in {report.seconds:.1f}s: "
                  f"{report.republished} outbox rows republished")


def register_service_commands(app: typer.Typer) -> None:
    """Add `saga up`, `restart`, `down` and `status` (the stack plus the services) to `app`."""
    @app.command("up")
    def up() -> None:
        """The stack plus the three services, each its own process; starts only what is not running."""
        settings = StackSettings()
        try:
            Stack(settings).up(_say)
        except ConnectorsFailed:  # the services run without it (their rows wait in the outbox); say what to do
            service_processes.up(settings, _say)
            raise
        service_processes.up(settings, _say)
        console.print("[green]all up[/green]")

    @app.command("restart", help="Stop and start services one after another, in the order given, each healthy "
                                  "before the next stops. Services read their signing keys when they start: after "
                                  "`saga stack keys rotate S`, restart the other services first, then S.")
    def restart(
        names: list[str] = typer.Argument(None, metavar="SERVICE", show_default=False,
                                          help="order_svc, inventory_svc, payment_svc; all three when none."),
    ) -> None:
        """services.restart of the named services; one line (StackError) for an unknown name."""
        service_processes.restart(StackSettings(), list(names or ()), _say)

    @app.command("down")
    def down() -> None:
        """Stop the services, then the stack."""
        settings = StackSettings()
        service_processes.down(settings, _say)
        Stack(settings).down(_say)

    @app.command("status")
    def status(as_json: bool = JsonOption) -> None:
        """The stack's components and the three services (with their restarts and last exit)."""
        settings = StackSettings()
        components = [s.as_json() for s in Stack(settings).status()]
        components += [service.status() for service in service_processes.services(settings)]
        _print_status(components, as_json)


def _print_status(components: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"components": components}))
        return
    table = Table("component", "state", "pid", "detail")
    for c in components:
        detail = ", ".join(f"{k} {v}" for k, v in (c.get("connectors") or {}).items()) or _supervision(c)
        color = "green" if c["state"] == "running" else "red"
        table.add_row(c["name"], f"[{color}]{c['state']}[/{color}]", str(c["pid"] or "-"), detail)
    Console().print(table)
    for failure in (failure for c in components for failure in c.get("connector_failures") or ()):
        Console(highlight=False).print(failure["hint"], style="red", markup=False)
    slots = [slot for c in components for slot in c.get("slots") or ()]
    if slots:
        _print_slots(slots)


def _supervision(component: dict) -> str:
    """A service's restarts and last exit, e.g. "restarts 2, last exit: killed by signal 9 (SIGKILL) at 12:00:03"."""
    if "restarts" not in component:
        return ""
    parts = [f"restarts {component['restarts']}"]
    last_exit = component.get("last_exit")
    if last_exit:
        parts.append(f"last exit: {last_exit.get('description')} at {str(last_exit.get('at'))[11:19]}")
    if component.get("next_start_at"):
        parts.append(f"restarting at {component['next_start_at'][11:19]}")
    elif component["state"] == "running" and component.get("supervisor_pid") is None:
        parts.append("not supervised (saga up supervises it)")
    return ", ".join(parts)


def _print_slots(slots: list[dict]) -> None:
    table = Table("replication slot", "database", "active", "lag", "retained WAL", "WAL status",
                  caption="lag: not yet confirmed by Debezium · retained: WAL kept on disk for it")
    for slot in slots:
        active = "[green]yes[/green]" if slot["active"] else "[red]no[/red]"
        table.add_row(slot["slot"], slot["database"], active, _size(slot["lag_bytes"]),
                      _size(slot["retained_wal_bytes"]), slot["wal_status"] or "-")
    Console().print(table)


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
