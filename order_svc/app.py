"""order_svc's entry point: the consumer of inventory and payment events, and the orders HTTP API.

  POST /orders                 place an order (Idempotency-Key honoured) → {"order_id", "status"}
                               (a body over 64 KiB → 413; anything invalid → 422, shared/service.py;
                               past what the system finishes in time → 503 with Retry-After,
                               order_svc/admission.py)
  GET  /orders?status=all|in_flight|stuck&limit=N
                               the newest N orders (default all, 50; N at most 1000)
  GET  /orders/{id}            the order with its history
  GET  /orders/{id}/timeline   the order and what its database saw: events consumed and
                               emitted, status changes (what order_svc's own database saw)
  POST /orders/{id}/cancel     the customer's cancellation
  GET  /board                  where the saga board is: `saga board` serves it (saga_cli/board/)

Deadlines: every DEADLINE_INTERVAL_S a timer gives up the orders in flight past their deadline
(CANCELLING, ORDER_CONFIRMATION_FAILED deadline_exceeded; handlers.expire_overdue_orders).

Observability: saga_sagas_finished_total{status, reason} counts orders that became
CONFIRMED or CANCELLED, once their transaction committed; saga_sagas_in_flight and
saga_sagas_stuck are refreshed from the orders table every GAUGE_INTERVAL_S.
"""
from __future__ import annotations

from importlib import resources
from uuid import UUID

import structlog
from prometheus_client import Counter, Gauge
from faust.web import Request, Response, View
from pydantic import TypeAdapter, ValidationError

from order_svc import handlers, repository
from order_svc.admission import MEASURE_INTERVAL_S, Admission, Overloaded
from order_svc.bootstrap import bind_foreign_handlers, bind_handlers
from order_svc.domain import IdempotencyKey, IdempotencyKeyReused, OrderAlreadyFinal, OrderNotFound, PlaceOrder
from shared import metrics
from shared.events import OrderCancelled, OrderConfirmed, topics_carrying
from shared.service import (
    RequestRefused,
    ServiceRuntime,
    json_response,
    read_json,
    request_value,
    shown,
    unavailable_response,
    validation_response,
)
from shared.settings import OrderSettings
from shared.uow import Transaction

log = structlog.stdlib.get_logger(__name__)

GAUGE_INTERVAL_S = 5.0
DEADLINE_INTERVAL_S = 1.0
"""How often order_svc gives up the orders past their deadline (handlers.expire_overdue_orders):
an order is CANCELLING at most about this long after its deadline."""
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000

IDEMPOTENCY_KEY = TypeAdapter(IdempotencyKey)

ADMISSION_REFUSED = Counter("saga_admission_refused_total",
                            "POST /orders answered 503 by admission control (order_svc/admission.py)")
ADMISSION_LIMIT = Gauge("saga_admission_limit_sagas", "Sagas admission control lets be in flight at once now")
FINISHING_PER_S = Gauge("saga_sagas_finishing_per_second",
                        "Sagas that became CONFIRMED or CANCELLED per second, over the admission window")


def count_finished_sagas(tx: Transaction) -> None:
    """After a handled event's transaction committed: count the saga it finished, if any.
    An order becomes CONFIRMED or CANCELLED exactly when order_svc emits ORDER_CONFIRMED or
    ORDER_CANCELLED (order_svc/domain.py), and a duplicate delivery emits nothing."""
    for _, event in tx.emitted:
        if isinstance(event, OrderConfirmed):
            metrics.SAGAS_FINISHED.labels("CONFIRMED", "").inc()
        elif isinstance(event, OrderCancelled):
            metrics.SAGAS_FINISHED.labels("CANCELLED", event.reason).inc()


def create_runtime(settings: OrderSettings | None = None) -> ServiceRuntime:
    """order_svc's runtime (consumer, timers and HTTP views), not started yet: `.main()` runs it.
    `settings` default to OrderSettings() read from the environment. It subscribes to the topics that
    carry the events its handler table handles (`shared.events.topics_carrying`). It also consumes its own topic, where a foreign ORDER_CREATED is adopted
    (`bind_foreign_handlers`)."""
    settings = settings or OrderSettings()
    event_handlers, foreign_handlers = bind_handlers(settings), bind_foreign_handlers(settings)
    runtime = ServiceRuntime(
        settings,
        event_handlers,
        topics=topics_carrying([*event_handlers, *foreign_handlers]),  # its own topic too: foreign ORDER_CREATED
        on_committed=count_finished_sagas,
        foreign_handlers=foreign_handlers,
    )

    @runtime.app.timer(interval=GAUGE_INTERVAL_S, name="order_svc.saga_gauges")
    async def measure_sagas() -> None:
        """Every GAUGE_INTERVAL_S (5 s): set saga_sagas_in_flight and saga_sagas_stuck from the orders
        table; logs and skips a tick when the database is away."""
        try:
            async with (await runtime.uow()).connection() as connection:
                counts = await repository.saga_counts(connection)
        except Exception as error:  # the database may be away for a while; the next tick tries again
            log.warning("cannot count sagas in flight", error=str(error))
            return
        metrics.SAGAS_IN_FLIGHT.set(counts.in_flight)
        metrics.SAGAS_STUCK.set(counts.stuck)

    @runtime.app.timer(interval=DEADLINE_INTERVAL_S, name="order_svc.deadlines")
    async def enforce_deadlines() -> None:
        """Every DEADLINE_INTERVAL_S (1 s): give up the orders in flight past their deadline (docs/contract/flows.md,
        Cancellation and the deadline); logs and skips a tick when the database is away."""
        try:
            given_up = await handlers.expire_overdue_orders(await runtime.uow(), on_committed=count_finished_sagas)
        except Exception as error:  # the database may be away for a while; the next tick tries again
            log.warning("cannot give up orders past their deadline", error=str(error))
            return
        if given_up:
            log.info("orders past their deadline given up", count=given_up)

    admission = Admission(target_s=settings.admission_target_seconds, floor=settings.admission_floor,
                          enabled=settings.admission_enabled)

    @runtime.app.timer(interval=MEASURE_INTERVAL_S, name="order_svc.admission")
    async def measure_load() -> None:
        """Every MEASURE_INTERVAL_S (0.25 s): feed admission control a SagaLoad reading and refresh its
        gauges; skips a tick when the database is away."""
        try:
            async with (await runtime.uow()).connection() as connection:
                load = await repository.saga_load(connection, admission.window_s, admission.recent_s)
        except Exception:  # the database is away: POST /orders answers 503 for that anyway
            return
        admission.observe(load)
        ADMISSION_LIMIT.set(admission.limit)
        FINISHING_PER_S.set(load.finishing_per_s)

    @runtime.app.page("/orders")
    class Orders(View):
        """GET /orders (list) and POST /orders (place an order)."""

        async def get(self, request: Request) -> Response:
            """GET /orders?status=&limit=: 200 the newest orders; 422 bad status or limit."""
            try:
                which, limit = _list_query(request.query)
            except ValueError as error:
                return json_response(self, {"detail": error.args[0]}, status=422)
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.recent_orders(connection, which, limit))

        async def post(self, request: Request) -> Response:
            """POST /orders: 201 a new order; 200 the earlier order for a repeated Idempotency-Key; 409 key reused
            for another order; 413; 422; 503 with Retry-After (admission control, database away)
            (docs/contract/interfaces.md, HTTP, order_svc)."""
            try:
                command = PlaceOrder.model_validate(await read_json(request))
                idempotency_key = _idempotency_key(request)
            except (ValidationError, ValueError) as error:
                return validation_response(self, error)
            try:
                placed = await handlers.place_order(
                    await runtime.request_uow(),
                    command,
                    idempotency_key,
                    deadline_seconds=settings.order_deadline_seconds,
                    traceparent=request.headers.get("traceparent"),
                    admit=admission.admit,
                )
            except IdempotencyKeyReused as error:
                return json_response(self, {"detail": str(error)}, status=409)
            except Overloaded as overloaded:
                ADMISSION_REFUSED.inc()
                return unavailable_response(overloaded.refusal.detail, overloaded.refusal.retry_after_s)
            if placed.created:
                log.info("order placed", saga_id=str(placed.order_id), customer_id=command.customer_id)
            body = {"order_id": placed.order_id, "status": placed.status}
            return json_response(self, body, status=201 if placed.created else 200)

    @runtime.app.page("/orders/{order_id}")
    class OrderDetails(View):
        """GET /orders/{order_id}: one order with its history."""

        async def get(self, request: Request, order_id: str) -> Response:
            """GET /orders/{order_id}: 200 the order with its history; 404 unknown; 422 not a UUID."""
            ident = _order_id(order_id)
            if ident is None:
                return _bad_id(self, order_id)
            async with (await runtime.request_uow()).connection() as connection:
                details = await repository.order_details(connection, ident)
            if details is None:
                return json_response(self, {"detail": f"order {order_id} not found"}, status=404)
            return json_response(self, details)

    @runtime.app.page("/orders/{order_id}/timeline")
    class OrderTimeline(View):
        """GET /orders/{order_id}/timeline: what order_svc's database saw of one saga."""

        async def get(self, request: Request, order_id: str) -> Response:
            """GET /orders/{order_id}/timeline: 200 the order and its timeline; 404 unknown; 422 not a UUID."""
            ident = _order_id(order_id)
            if ident is None:
                return _bad_id(self, order_id)
            async with (await runtime.request_uow()).connection() as connection:
                timeline = await repository.order_timeline(connection, ident, settings.consumer_name)
            if timeline is None:
                return json_response(self, {"detail": f"order {order_id} not found"}, status=404)
            return json_response(self, timeline)

    @runtime.app.page("/orders/{order_id}/cancel")
    class CancelOrder(View):
        """POST /orders/{order_id}/cancel: the customer's cancellation."""

        async def post(self, request: Request, order_id: str) -> Response:
            """POST /orders/{order_id}/cancel: 200 {"order_id", "status"}; 404 unknown; 409 already CONFIRMED or
            CANCELLED; 422 not a UUID (docs/contract/flows.md, Cancellation and the deadline)."""
            ident = _order_id(order_id)
            if ident is None:
                return _bad_id(self, order_id)
            try:
                status = await handlers.cancel_order(await runtime.request_uow(), ident, on_committed=count_finished_sagas)
            except OrderNotFound:
                return json_response(self, {"detail": f"order {order_id} not found"}, status=404)
            except OrderAlreadyFinal as error:
                return json_response(self, {"detail": str(error)}, status=409)
            log.info("order cancellation requested", saga_id=order_id, status=str(status))
            return json_response(self, {"order_id": order_id, "status": status})

    @runtime.app.page("/board")
    class Board(View):
        """GET /board: a page saying where the saga board is."""

        async def get(self, request: Request) -> Response:
            """GET /board: 200 an HTML page (`saga board` serves the board itself)."""
            return self.bytes(_board_page(), content_type="text/html", headers={"Cache-Control": "no-cache"})

    return runtime


def _idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key (None without one); RequestRefused (422) unless it is
    one IdempotencyKey (order_svc/domain.py), given once."""
    keys = request.headers.getall("Idempotency-Key", [])
    if len(keys) > 1:
        raise RequestRefused([{"loc": ["header", "Idempotency-Key"], "msg": "given more than once", "type": "value_error"}])
    return request_value(IDEMPOTENCY_KEY, keys[0], "header", "Idempotency-Key") if keys else None


def _list_query(query) -> tuple[str, int]:
    """(which, limit) from GET /orders' query; ValueError with 422 details when they are not valid."""
    errors = []
    which = query.get("status", "all")
    if which not in repository.ORDER_FILTERS:
        errors.append(_query_error("status", f"must be one of {', '.join(repository.ORDER_FILTERS)}, not {shown(which)}"))
    raw_limit = query.get("limit", str(DEFAULT_LIST_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        errors.append(_query_error("limit", f"must be a whole number from 1 to {MAX_LIST_LIMIT}, not {shown(raw_limit)}"))
    if errors:
        raise ValueError(errors)
    return which, limit


def _query_error(name: str, message: str) -> dict:
    return {"loc": ["query", name], "msg": message, "type": "value_error"}


_board_html: bytes | None = None


def _board_page() -> bytes:
    global _board_html
    if _board_html is None:
        _board_html = resources.files("order_svc").joinpath("board.html").read_bytes()
    return _board_html


def _order_id(raw: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        return None


def _bad_id(view: View, raw: str) -> Response:
    return json_response(view, {"detail": [{"loc": ["path", "order_id"], "msg": f"not an order id: {shown(raw)}", "type": "uuid_parsing"}]}, status=422)
