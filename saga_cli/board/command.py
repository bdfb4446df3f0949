"""`saga board [--port N] [--since TIME] [--stuck-after S] [--bootstrap-server B]`: the saga board on http://127.0.0.1:N/."""
from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Annotated

import typer
from aiohttp import web

from saga_cli.board.server import create_app
from saga_cli.errors import CliError
from saga_cli.kafka import BootstrapOption
from saga_cli.parsing import parse_since

HOST = "127.0.0.1"
DEFAULT_PORT = 8010
DEFAULT_WINDOW_H = 24


def board(
    port: Annotated[int, typer.Option("--port", metavar="N", help="Serve on 127.0.0.1:N (0: any free port).")] = DEFAULT_PORT,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="List the sagas whose records are on the topics from this time: "
                     f"ISO-8601 (local time if no offset), epoch ms, or 'all'. Default: the last {DEFAULT_WINDOW_H} hours."),
    ] = None,
    stuck_after: Annotated[
        float | None,
        typer.Option("--stuck-after", metavar="SECONDS", help="A saga in flight longer than this is stuck. "
                     "Default: order_svc's order deadline (asked of its API; 30 s when it cannot say)."),
    ] = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Serve the saga board on loopback: every saga across the three services, live, from the topics."""
    if not 0 <= port <= 65535:
        raise CliError(f"--port must be from 0 to 65535, not {port}")
    if stuck_after is not None and not stuck_after > 0:
        raise CliError(f"--stuck-after must be a number of seconds above 0, not {stuck_after}")
    if since is None:
        since_ms: int | None = int((time.time() - DEFAULT_WINDOW_H * 3600) * 1000)
    elif since.strip().lower() == "all":
        since_ms = None
    else:
        since_ms = parse_since(since)
    asyncio.run(serve(port, since_ms, stuck_after, bootstrap))


async def serve(port: int, since_ms: int | None, stuck_after_s: float | None, bootstrap: str | None = None) -> None:
    """Run the board on 127.0.0.1:`port` (0: a free one) until SIGINT or SIGTERM, reading the Kafka at
    `bootstrap` (None: the default); prints its address first (one line, flushed). CliError when
    the port cannot be had."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner: web.AppRunner | None = None
    try:
        site_port = port or _free_port()  # known before the app is made: its Host check needs it
        _check_free(site_port)  # before the app starts following Kafka, so a busy port stops nothing half-started
        runner = web.AppRunner(create_app(since_ms, stuck_after_s, site_port, bootstrap), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, site_port).start()
        except OSError as error:
            raise CliError(f"cannot serve the board on {HOST}:{site_port}: {error.strerror or error}") from None
        print(f"saga board at http://{HOST}:{site_port}/ (Ctrl-C stops it)", flush=True)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
    print("saga board stopped", file=sys.stderr)


def _check_free(port: int) -> None:
    """CliError (one line) when 127.0.0.1:`port` cannot be listened on."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise CliError(f"cannot serve the board on {HOST}:{port}: {error.strerror or error}") from None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]
