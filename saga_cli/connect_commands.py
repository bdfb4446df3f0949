"""`saga connect status|restart|pause|resume`: the outbox connectors through Kafka Connect's REST API.

What an operator does with curl, with the answers read for them:

- status  — `GET /connectors?expand=status`: each connector's state and its tasks' (with the
  worker each runs on, and the first line of a failed one's trace).
- restart — `POST /connectors/{name}/restart?includeTasks=true&onlyFailed=true`: the failed
  connector instance and failed tasks restart, running ones are left alone (`--all-tasks`:
  every task); then it waits until the connector and its tasks run again.
- pause / resume — `PUT /connectors/{name}/pause|resume`: a paused connector stops reading its
  slot (the outbox rows and the WAL wait for it); each waits until the state is reached (60 s).

The address is SAGA_CONNECT_URL (default http://127.0.0.1:8083, saga_cli/stack/config.py). A
connector that FAILED because its replication slot lost its position is not cured by a restart:
`saga stack recover CONNECTOR` is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from saga_cli.errors import CliError
from saga_cli.output import console, one_line, print_json
from saga_cli.stack.config import StackSettings
from saga_cli.stack.connect import Connect
from saga_cli.stack.errors import StackError

connect_app = typer.Typer(
    no_args_is_help=True,
    help="The outbox connectors in Kafka Connect: status, restart failed tasks, pause, resume.",
)

WAIT_S = 60.0
"""How long restart, pause and resume wait for the state they asked for."""
TRACE_CHARS = 200


@dataclass(frozen=True)
class TaskState:
    """One task of a connector as Connect's status describes it: `trace` the failure's stack trace, "" when none."""

    id: int
    state: str
    worker: str
    trace: str = ""


@dataclass(frozen=True)
class ConnectorState:
    """One connector as `GET /connectors?expand=status` describes it."""

    name: str
    type: str
    state: str
    worker: str
    trace: str = ""
    tasks: tuple[TaskState, ...] = field(default_factory=tuple)

    @property
    def running(self) -> bool:
        """Whether the connector and every one of its tasks (at least one) are RUNNING."""
        return self.state == "RUNNING" and bool(self.tasks) and all(task.state == "RUNNING" for task in self.tasks)

    @property
    def failed(self) -> bool:
        """Whether the connector or any of its tasks is FAILED."""
        return self.state == "FAILED" or any(task.state == "FAILED" for task in self.tasks)

    def as_json(self) -> dict[str, Any]:
        """{"name", "type", "state", "worker", "trace", "tasks": [{"id", "state", "worker", "trace"}]},
        an empty trace as null."""
        return {"name": self.name, "type": self.type, "state": self.state, "worker": self.worker,
                "trace": self.trace or None,
                "tasks": [{"id": t.id, "state": t.state, "worker": t.worker, "trace": t.trace or None} for t in self.tasks]}

    @classmethod
    def from_status(cls, name: str, status: dict[str, Any]) -> ConnectorState:
        """From Connect's status document (`{"connector": {"state", "worker_id", "trace"?}, "tasks": [...], "type"}`)."""
        connector = status.get("connector") or {}
        tasks = tuple(
            TaskState(int(task.get("id", 0)), str(task.get("state", "UNKNOWN")), str(task.get("worker_id", "")),
                      _first_line(task.get("trace")))
            for task in sorted(status.get("tasks") or [], key=lambda task: task.get("id", 0))
        )
        return cls(name, str(status.get("type", "")), str(connector.get("state", "UNKNOWN")),
                   str(connector.get("worker_id", "")), _first_line(connector.get("trace")), tasks)


class ConnectOperations(Connect):
    """The stack's Connect REST client (saga_cli/stack/connect.py) with what operators ask of it."""

    def states(self) -> dict[str, ConnectorState]:
        """Every connector Connect has, by name: one `GET /connectors?expand=status`.
        StackError when Connect does not answer or refuses."""
        answer = self._expect(self._request("GET", "/connectors?expand=status"), "the connectors' status")
        return {name: ConnectorState.from_status(name, (entry or {}).get("status") or {})
                for name, entry in sorted(answer.json().items())}

    def restart(self, name: str, only_failed: bool = True) -> ConnectorState:
        """`POST /connectors/{name}/restart?includeTasks=true&onlyFailed=…`; the state Connect answers
        with (202: the instances it restarts are RESTARTING; 204: nothing to restart, the current
        state). StackError when Connect refuses (404: no such connector; 409: rebalancing)."""
        flag = "true" if only_failed else "false"
        answer = self._expect(
            self._request("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed={flag}"),
            f"connector {name} could not be restarted",
        )
        if answer.status_code == 202 and answer.content:
            return ConnectorState.from_status(name, answer.json())
        return ConnectorState.from_status(name, self.connector_status(name))

    def wait_until(self, name: str, done: Any, what: str, timeout: float = WAIT_S) -> ConnectorState:
        """Poll the connector's status until `done(state)`; StackError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = ConnectorState.from_status(name, self.connector_status(name))
            if done(state):
                return state
            if time.monotonic() > deadline:
                raise StackError(f"connector {name} is {_summary(state)}, not {what} after {timeout:.0f}s; "
                                 f"see {self.log_file}")
            time.sleep(0.2)


def _operations() -> ConnectOperations:
    return ConnectOperations(StackSettings())


def _known(connect: ConnectOperations, names: list[str] | None) -> list[str]:
    """`names`, or every connector when none is given; CliError for a name Connect does not have."""
    existing = connect.states()
    if not names:
        if not existing:
            raise CliError(f"Kafka Connect at {connect.settings.connect_url} has no connector (try `saga stack up`)")
        return list(existing)
    missing = [name for name in names if name not in existing]
    if missing:
        raise CliError(f"no connector {', '.join(missing)} in Kafka Connect (connectors: {', '.join(existing) or 'none'})")
    return names


def _complete_names(incomplete: str) -> list[str]:
    """Shell completion: the shipped connectors' names (connect/outbox-connector.json; no request made)."""
    try:
        return [spec.name for spec in Connect(StackSettings()).specs() if spec.name.startswith(incomplete)]
    except Exception:  # completion never prints an error into the shell
        return []


NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="[CONNECTOR]...", help="Connector names (default: every connector).", show_default=False,
                   autocompletion=_complete_names),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


@connect_app.command("status")
def status(names: NamesArgument = None, as_json: JsonFlag = False) -> None:
    """Each connector's state and its tasks' (worker, first line of a failed one's trace); exit 1 if one FAILED.

    Output: a table, or with --json a list of {name, type, state, worker, trace, tasks: [{id, state,
    worker, trace}]} (trace: the first line of a failed one's, else null). CliError (exit 1) when a
    connector or task FAILED (after printing), when Connect does not answer, or for an unknown name."""
    connect = _operations()
    wanted = _known(connect, names)
    states = connect.states()
    found = [states[name] for name in wanted]
    if as_json:
        print_json([state.as_json() for state in found])
    else:
        _print_table(found)
    failed = [state.name for state in found if state.failed]
    if failed:  # exit 1 for scripts, and the next step for people
        raise CliError(f"FAILED: {', '.join(failed)}; restart the failed tasks with `saga connect restart "
                       f"{' '.join(failed)}` (a lost replication slot: `saga stack recover CONNECTOR`)")


@connect_app.command("restart")
def restart(
    names: NamesArgument = None,
    all_tasks: Annotated[bool, typer.Option("--all-tasks", help="Restart running tasks too, not only failed ones.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until each connector and its tasks run.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Restart failed connectors and tasks (Connect's restart?includeTasks=true&onlyFailed=true); running ones are left alone.

    Output: per connector what was restarted and its state, or with --json a list of {name, restarted:
    ["connector", "task N", …], state}. CliError when Connect refuses, or when a restarted one FAILED
    again or is not RUNNING within WAIT_S seconds."""
    connect = _operations()
    results = []
    for name in _known(connect, names):
        answered = connect.restart(name, only_failed=not all_tasks)
        restarted = [f"task {task.id}" for task in answered.tasks if task.state == "RESTARTING"]
        if answered.state == "RESTARTING":
            restarted.insert(0, "connector")
        final = connect.wait_until(name, _running_or_failed, "RUNNING") if wait else answered
        if wait and final.failed:
            raise CliError(f"connector {name} FAILED again after its restart: {final.trace or _task_trace(final)}; "
                           f"see {connect.log_file} (a lost slot: `saga stack recover {name}`)")
        results.append({"name": name, "restarted": restarted, "state": _summary(final)})
    if as_json:
        print_json(results)
        return
    for result in results:
        what = ", ".join(result["restarted"]) or "nothing (no failed instance)"
        console().print(f"{result['name']}: restarted {what}; now {result['state']}")


@connect_app.command("pause")
def pause(names: NamesArgument = None) -> None:
    """Pause connectors: they stop reading their replication slot; outbox rows and WAL wait until `saga connect resume`."""
    connect = _operations()
    for name in _known(connect, names):
        connect.pause_connector(name)  # PUT /connectors/{name}/pause, then until it and its tasks are PAUSED
        console().print(f"{name}: PAUSED")


@connect_app.command("resume")
def resume(names: NamesArgument = None) -> None:
    """Resume paused connectors and wait until they and their tasks run."""
    connect = _operations()
    for name in _known(connect, names):
        connect.resume_connector(name)  # PUT /connectors/{name}/resume, then until RUNNING (or FAILED: an error)
        console().print(f"{name}: RUNNING")


def _running_or_failed(state: ConnectorState) -> bool:
    return state.running or state.failed


def _summary(state: ConnectorState) -> str:
    tasks = ",".join(task.state for task in state.tasks) or "no task"
    return "RUNNING" if state.running else f"{state.state}/{tasks}"


def _task_trace(state: ConnectorState) -> str:
    return next((task.trace for task in state.tasks if task.trace), "no trace")


def _first_line(trace: Any) -> str:
    if not trace:
        return ""
    lines = str(trace).strip().splitlines()
    return one_line(lines[0], TRACE_CHARS) if lines else ""


STATE_STYLES = {"RUNNING": "green", "FAILED": "bold red", "PAUSED": "yellow", "STOPPED": "yellow", "RESTARTING": "cyan"}


def _print_table(found: list[ConnectorState]) -> None:
    table = Table(box=None, header_style="bold")
    for column in ("connector", "state", "worker", "tasks"):
        table.add_column(column)
    for state in found:
        tasks = Text()
        for n, task in enumerate(state.tasks):
            if n:
                tasks.append("\n")
            tasks.append(f"{task.id} ")
            tasks.append(task.state, style=STATE_STYLES.get(task.state, ""))
            tasks.append(f" @{task.worker}", style="dim")
            if task.trace:
                tasks.append(f"\n  {task.trace}", style="red")
        connector = Text(state.state, style=STATE_STYLES.get(state.state, ""))
        if state.trace:
            connector.append(f"\n{state.trace}", style="red")
        table.add_row(state.name, connector, state.worker, tasks if state.tasks else Text("no task", style="dim"))
    console().print(table)
