"""order_svc's entry point: the consumer of inventory and payment events, and the orders HTTP API.

  POST /orders                 place an order (Idempotency-Key honoured) → {"order_id", "status"}
  GET  /orders/{id}            the order with its history
  POST /orders/{id}/cancel     the customer's cancellation
"""
from __future__ import annotations

from uuid import UUID

from faust.web import Request, Response, View
from pydantic import ValidationError

from order_svc import handlers, repository
from order_svc.bootstrap import bind_handlers
from order_svc.domain import IdempotencyKeyReused, OrderAlreadyFinal, OrderNotFound, PlaceOrder
from shared.service import ServiceRuntime, json_response, read_json, validation_response
from shared.settings import OrderSettings
from shared.topics import TOPICS, INVENTORY, PAYMENT


def create_runtime(settings: OrderSettings | None = None) -> ServiceRuntime:
    settings = settings or OrderSettings()
    runtime = ServiceRuntime(settings, bind_handlers(settings), topics=[TOPICS[INVENTORY], TOPICS[PAYMENT]])

    @runtime.app.page("/orders")
    class Orders(View):
        async def post(self, request: Request) -> Response:
            try:
                command = PlaceOrder.model_validate(await read_json(request))
            except (ValidationError, ValueError) as error:
                return validation_response(self, error)
            try:
                placed = await handlers.place_order(
                    await runtime.uow(),
                    command,
                    request.headers.get("Idempotency-Key"),
                    deadline_seconds=settings.order_deadline_seconds,
                    traceparent=request.headers.get("traceparent"),
                )
            except IdempotencyKeyReused as error:
                return json_response(self, {"detail": str(error)}, status=409)
            body = {"order_id": placed.order_id, "status": placed.status}
            return json_response(self, body, status=201 if placed.created else 200)

    @runtime.app.page("/orders/{order_id}")
    class OrderDetails(View):
        async def get(self, request: Request, order_id: str) -> Response:
            ident = _order_id(order_id)
            if ident is None:
                return _bad_id(self, order_id)
            async with (await runtime.uow()).connection() as connection:
                details = await repository.order_details(connection, ident)
            if details is None:
                return json_response(self, {"detail": f"order {order_id} not found"}, status=404)
            return json_response(self, details)

    @runtime.app.page("/orders/{order_id}/cancel")
    class CancelOrder(View):
        async def post(self, request: Request, order_id: str) -> Response:
            ident = _order_id(order_id)
            if ident is None:
                return _bad_id(self, order_id)
            try:
                status = await handlers.cancel_order(await runtime.uow(), ident)
            except OrderNotFound:
                return json_response(self, {"detail": f"order {order_id} not found"}, status=404)
            except OrderAlreadyFinal as error:
                return json_response(self, {"detail": str(error)}, status=409)
            return json_response(self, {"order_id": order_id, "status": status})

    return runtime


def _order_id(raw: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        return None


def _bad_id(view: View, raw: str) -> Response:
    return json_response(view, {"detail": [{"loc": ["path", "order_id"], "msg": f"not an order id: {raw!r}", "type": "uuid_parsing"}]}, status=422)
