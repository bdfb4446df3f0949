"""inventory_svc's entry point: the consumer of order and payment events, and the stock HTTP API.

  GET /stock             every SKU: [{"sku", "available", "reserved", "sold"}]
  GET /stock/{sku}       one SKU
  PUT /stock/{sku}       {"available": N} seeds or resets a SKU's available count

{sku} is the event catalog's Sku (shared/events.py): anything else is a 422, as is a bad
body; a body over 64 KiB is a 413 (shared/service.py).
"""
from __future__ import annotations

from faust.web import Request, Response, View
from pydantic import TypeAdapter, ValidationError

from inventory_svc import repository
from inventory_svc.bootstrap import bind_handlers
from inventory_svc.domain import SetStock
from shared.events import Sku
from shared.service import ServiceRuntime, json_response, read_json, request_value, validation_response
from shared.settings import InventorySettings
from shared.topics import ORDER, PAYMENT, TOPICS

SKU = TypeAdapter(Sku)


def create_runtime(settings: InventorySettings | None = None) -> ServiceRuntime:
    settings = settings or InventorySettings()
    runtime = ServiceRuntime(settings, bind_handlers(settings), topics=[TOPICS[ORDER], TOPICS[PAYMENT]])

    @runtime.app.page("/stock")
    class Stock(View):
        async def get(self, request: Request) -> Response:
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.stock_levels(connection))

    @runtime.app.page("/stock/{sku}")
    class StockItem(View):
        async def get(self, request: Request, sku: str) -> Response:
            try:
                sku = request_value(SKU, sku, "path", "sku")
            except ValueError as error:
                return validation_response(self, error)
            async with (await runtime.request_uow()).connection() as connection:
                level = await repository.stock_level(connection, sku)
            if level is None:
                return json_response(self, {"detail": f"sku {sku} not found"}, status=404)
            return json_response(self, level)

        async def put(self, request: Request, sku: str) -> Response:
            try:
                sku = request_value(SKU, sku, "path", "sku")
                command = SetStock.model_validate(await read_json(request))
            except (ValidationError, ValueError) as error:
                return validation_response(self, error)
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.set_available(connection, sku, command.available))

    return runtime
