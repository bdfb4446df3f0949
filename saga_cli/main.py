"""The `saga` console script: one Typer app, one sub-app per command group.

Each group lives in its own module and is registered below. Every command that
fails for a reason the user can act on raises CliError; `run()` prints its
message as one line on stderr and exits 1 (75 when the outcome of a request is
unknown: http_client.OutcomeUnknown), never a traceback.
"""
from __future__ import annotations

import os
import sys

import typer

from saga_cli.errors import CliError
from saga_cli import accounts, bench, board, connect_commands, dlq, orders, sagas, stack_commands, stock, tail, trace

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,  # saga --install-completion / --show-completion
    pretty_exceptions_enable=False,
    help="Run and follow the order saga: the native stack, the services, orders, stock, accounts and traces.",
)

# --- command groups (one module each) ---------------------------------------
app.add_typer(stack_commands.stack_app, name="stack")
stack_commands.register_service_commands(app)
app.add_typer(orders.order_app, name="order")
app.add_typer(stock.stock_app, name="stock")
app.add_typer(accounts.account_app, name="account")
app.command("trace")(trace.trace)
app.command("tail")(tail.tail)
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(connect_commands.connect_app, name="connect")
app.command("sagas")(sagas.sagas)
app.command("bench")(bench.bench)
app.command("board")(board.board)


def _click_exceptions() -> tuple[type[Exception], ...]:
    """click's ClickException, and the copy that newer Typer releases vendor."""
    import click

    found: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        found.append(VendoredClickException)
    except ImportError:
        pass
    return tuple(found)


def run() -> None:
    """The `saga` console script: run the command line; a failure ends in one line on stderr and an exit
    status (a CliError's own, a usage error's, 130 interrupted, else 1; SAGA_DEBUG=1 re-raises an
    unexpected error with its traceback)."""
    try:
        app(standalone_mode=False)
    except CliError as error:
        print(f"saga: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("saga: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        print("saga: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if isinstance(error, _click_exceptions()):  # usage errors: click's own one-liners
            error.show()
            sys.exit(error.exit_code)
        if os.environ.get("SAGA_DEBUG") == "1":
            raise
        print(f"saga: unexpected {type(error).__name__}: {error} (SAGA_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
