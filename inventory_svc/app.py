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
from shared.events import Sku, topics_carrying
from shared.service import ServiceRuntime, json_response, read_json, request_value, validation_response
from shared.settings import InventorySettings

SKU = TypeAdapter(Sku)


def create_runtime(settings: InventorySettings | None = None) -> ServiceRuntime:
    """inventory_svc's runtime (consumer, timers and HTTP views), not started yet: `.main()` runs it.
    `settings` default to InventorySettings() read from the environment. It subscribes to the topics that
    carry the events its handler table handles (`shared.events.topics_carrying`)."""
    settings = settings or InventorySettings()
    event_handlers = bind_handlers(settings)
    runtime = ServiceRuntime(settings, event_handlers, topics=topics_carrying(event_handlers))

    @runtime.app.page("/stock")
    class Stock(View):
        """GET /stock: every SKU's levels."""

        async def get(self, request: Request) -> Response:
            """GET /stock: 200 [{"sku", "available", "reserved", "sold"}]."""
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.stock_levels(connection))

    @runtime.app.page("/stock/{sku}")
    class StockItem(View):
        """GET and PUT /stock/{sku}: one SKU's levels."""

        async def get(self, request: Request, sku: str) -> Response:
            """GET /stock/{sku}: 200 the SKU's levels; 404 unknown SKU; 422 not a valid SKU."""
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
            """PUT /stock/{sku} {"available": N}: 200 the SKU's levels after seeding; 413; 422 bad SKU or body."""
            try:
                sku = request_value(SKU, sku, "path", "sku")
                command = SetStock.model_validate(await read_json(request))
            except (ValidationError, ValueError) as error:
                return validation_response(self, error)
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.set_available(connection, sku, command.available))

    return runtime
