"""The board's web server (aiohttp, loopback only): the page, its assets and a small JSON API.

  GET /                       the page (board.html; board.js and board.css beside it)
  GET /api/sagas              the list: ?status=all|in_flight|stuck|confirmed|cancelled
                              &reason=R &customer=C &since=T &until=T (ISO-8601 or epoch ms)
                              &q=PREFIX (of an order id or a customer) &limit=N (1–1000, default 100)
                              → {"sagas": [...], "counts", "reasons", "follow", "stuck_after_s"}
  GET /api/sagas/{id}         one saga's lanes, read from the topics by key and time
                              (saga_cli/board/lanes.py) → 404 when no record has that key
  GET /api/deadletters        the dead letters, newest first: ?since ?until ?q (a key prefix) ?limit
  GET /api/status             how far the follower is: {"follow", "counts", "stuck_after_s"}

The list and the dead letters come from the in-memory index (saga_cli/board/index.py), which
the follower keeps up to date; one saga is read from Kafka when asked for. Bad query values
are a 422 with a one-line detail; Kafka unreachable is a 503 with Retry-After. A request whose
Host is not this loopback address is refused (403), so no other web page can read the board
through the browser (DNS rebinding); the page loads nothing from elsewhere (a strict
Content-Security-Policy says so).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import web

from saga_cli.board.follow import FollowState, follow, read_one_saga
from saga_cli.board.index import IN_FLIGHT, MAX_LIMIT, STATUSES, Query, SagaIndex, letter_as_json, sagas_as_json
from saga_cli.board.lanes import MARKS, saga_board
from saga_cli.endpoints import ORDER_SVC
from saga_cli.errors import CliError
from saga_cli.http_client import ServiceClient
from saga_cli.parsing import parse_since
from saga_cli.trace import START_MARGIN_MS, order_created_ms

DEFAULT_LIMIT = 100
END_MARGIN_MS = 5_000
"""An ended saga is read up to this long after its last record the index saw (record timestamps in
a partition are not strictly in offset order)."""
DEFAULT_STUCK_AFTER_S = 30.0
"""order_svc's default order deadline (ORDER_SVC_ORDER_DEADLINE_SECONDS), used when it cannot be asked."""
DEADLINE_REFRESH_S = 60.0
ASSETS = {"board.js": "text/javascript", "board.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

INDEX_KEY = web.AppKey("index", SagaIndex)
STATE_KEY = web.AppKey("state", FollowState)
SETTINGS_KEY = web.AppKey("settings", dict)


def create_app(since_ms: int | None, stuck_after_s: float | None, port: int,
               bootstrap: str | None = None) -> web.Application:
    """The board's aiohttp application: it follows the topics of the Kafka at `bootstrap` (None:
    the default) from `since_ms` (epoch ms; None: their beginning) while it runs. `stuck_after_s`: a saga in flight longer than this is stuck
    (None: order_svc's order deadline, asked of its API, DEFAULT_STUCK_AFTER_S when it cannot
    say). `port` is the one it is served on (for the Host check)."""
    app = web.Application(middlewares=[_loopback_only, _security_headers])
    app[INDEX_KEY] = SagaIndex(since_ms)
    app[STATE_KEY] = FollowState()
    app[SETTINGS_KEY] = {"stuck_after_s": stuck_after_s or DEFAULT_STUCK_AFTER_S, "fixed": stuck_after_s is not None,
                         "port": port, "bootstrap": bootstrap}
    app.router.add_get("/", _page)
    for name in ASSETS:
        app.router.add_get(f"/{name}", _asset)
    app.router.add_get("/api/sagas", _list)
    app.router.add_get("/api/sagas/{order_id}", _saga)
    app.router.add_get("/api/deadletters", _dead_letters)
    app.router.add_get("/api/status", _status)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application):
    tasks = [asyncio.create_task(follow(app[INDEX_KEY], app[STATE_KEY], app[SETTINGS_KEY]["bootstrap"]))]
    if not app[SETTINGS_KEY]["fixed"]:
        tasks.append(asyncio.create_task(_learn_deadline(app[SETTINGS_KEY])))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _learn_deadline(settings: dict) -> None:
    """Keep settings["stuck_after_s"] at order_svc's order deadline: deadline_at − created_at of
    its newest order (GET /orders?limit=1), asked every DEADLINE_REFRESH_S."""
    while True:
        try:
            newest = await asyncio.to_thread(ServiceClient(ORDER_SVC).get, "/orders?status=all&limit=1")
            if newest and newest[0].get("deadline_at") and newest[0].get("created_at"):
                span = (datetime.fromisoformat(newest[0]["deadline_at"]) - datetime.fromisoformat(newest[0]["created_at"]))
                if span.total_seconds() > 0:
                    settings["stuck_after_s"] = span.total_seconds()
        except (CliError, ValueError, TypeError, KeyError, AttributeError):
            pass  # order_svc away or answering oddly: keep what we had
        await asyncio.sleep(DEADLINE_REFRESH_S)


# --- middlewares -----------------------------------------------------------------------------

@web.middleware
async def _loopback_only(request: web.Request, handler):
    port = request.app[SETTINGS_KEY]["port"]
    if request.host not in (f"127.0.0.1:{port}", f"localhost:{port}"):
        return web.json_response({"detail": f"the board answers only at http://127.0.0.1:{port}/"}, status=403)
    return await handler(request)


@web.middleware
async def _security_headers(request: web.Request, handler):
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


# --- views -----------------------------------------------------------------------------------

async def _page(request: web.Request) -> web.Response:
    return web.Response(body=_asset_bytes("board.html"), content_type="text/html", charset="utf-8")


async def _asset(request: web.Request) -> web.Response:
    name = request.path.lstrip("/")
    return web.Response(body=_asset_bytes(name), content_type=ASSETS[name], charset="utf-8")


async def _list(request: web.Request) -> web.Response:
    try:
        query = _query(request.query)
    except ValueError as error:
        return _unprocessable(str(error))
    index, now_ms, stuck_ms = request.app[INDEX_KEY], _now_ms(), _stuck_after_ms(request.app)
    found = index.sagas(query, now_ms, stuck_ms)
    return web.json_response({
        "sagas": sagas_as_json(found, now_ms, stuck_ms),
        "limit": query.limit,
        "reasons": index.known_reasons(),
        **_overview(request.app, now_ms),
    })


async def _saga(request: web.Request) -> web.Response:
    raw = request.match_info["order_id"]
    try:
        order_id = str(uuid.UUID(raw))
    except ValueError:
        return _unprocessable(f"not an order id: {raw[:80]!r} (order ids are UUIDs)")
    known = request.app[INDEX_KEY].saga(order_id)
    until_ms = None
    if known is not None:
        since_ms = max(known.started_ms - START_MARGIN_MS, 0)
        if known.status != IN_FLIGHT:  # ended: nothing of it after its last record (a later one moves last_ms)
            until_ms = known.last_ms + END_MARGIN_MS
    else:  # older than the index, or not a saga at all: when order_svc says it began, else the beginning
        since_ms = await asyncio.to_thread(order_created_ms, order_id)
    try:
        events = await read_one_saga(order_id, since_ms, until_ms, request.app[SETTINGS_KEY]["bootstrap"])
    except CliError as error:
        return web.json_response({"detail": str(error)}, status=503, headers={"Retry-After": "2"})
    if not events:
        return web.json_response({"detail": f"no record of saga {order_id} on the topics"}, status=404)
    return web.json_response({**saga_board(order_id, events, _now_ms()), "marks": MARKS})


async def _dead_letters(request: web.Request) -> web.Response:
    try:
        query = _query(request.query)
    except ValueError as error:
        return _unprocessable(str(error))
    letters = request.app[INDEX_KEY].dead_letters(query)
    return web.json_response({"dead_letters": [letter_as_json(letter) for letter in letters], "limit": query.limit,
                              **_overview(request.app, _now_ms())})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_overview(request.app, _now_ms()))


# --- helpers ---------------------------------------------------------------------------------

def _overview(app: web.Application, now_ms: int) -> dict[str, Any]:
    index, state = app[INDEX_KEY], app[STATE_KEY]
    return {
        "counts": index.counts(now_ms, _stuck_after_ms(app)),
        "stuck_after_s": app[SETTINGS_KEY]["stuck_after_s"],
        "follow": {"since_ms": index.since_ms, "records": index.records, "caught_up": state.caught_up,
                   "caught_up_after_s": state.caught_up_after_s, "problem": state.problem,
                   "skipped": state.skipped},
        "now_ms": now_ms,
    }


def _query(params) -> Query:
    """A Query from the request's parameters; ValueError with one line when one is not valid."""
    status = params.get("status") or "all"
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status[:40]!r}")
    raw_limit = params.get("limit") or str(DEFAULT_LIMIT)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw_limit[:40]!r}")
    return Query(
        status=status,
        reason=params.get("reason") or None,
        customer=params.get("customer") or None,
        since_ms=_time(params, "since"),
        until_ms=_time(params, "until"),
        search=(params.get("q") or "").strip()[:100] or None,
        limit=int(raw_limit),
    )


def _time(params, name: str) -> int | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return parse_since(raw)
    except CliError:
        raise ValueError(f"{name} must be an ISO-8601 time or epoch milliseconds, not {raw[:40]!r}") from None


def _unprocessable(detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=422)


def _stuck_after_ms(app: web.Application) -> int:
    return int(app[SETTINGS_KEY]["stuck_after_s"] * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


_assets: dict[str, bytes] = {}


def _asset_bytes(name: str) -> bytes:
    if name not in _assets:
        _assets[name] = resources.files("saga_cli.board").joinpath(name).read_bytes()
    return _assets[name]
