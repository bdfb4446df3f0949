"""payment_svc's entry point: the consumer of inventory and order events, and the accounts HTTP API.

  GET /accounts               every account: [{"customer", "balance", "currency"}]
  GET /accounts/{customer}    one account
  PUT /accounts/{customer}    {"balance": "100.00", "currency": "EUR"} seeds or resets an account

{customer} is the event catalog's CustomerId (shared/events.py): anything else is a 422, as
is a bad body; a body over 64 KiB is a 413 (shared/service.py).
"""
from __future__ import annotations

from faust.web import Request, Response, View
from pydantic import TypeAdapter, ValidationError

from payment_svc import repository
from payment_svc.bootstrap import bind_handlers
from payment_svc.domain import SetAccount
from shared.events import CustomerId, topics_carrying
from shared.service import ServiceRuntime, json_response, read_json, request_value, validation_response
from shared.settings import PaymentSettings

CUSTOMER = TypeAdapter(CustomerId)


def create_runtime(settings: PaymentSettings | None = None) -> ServiceRuntime:
    """payment_svc's runtime (consumer, timers and HTTP views), not started yet: `.main()` runs it.
    `settings` default to PaymentSettings() read from the environment. It subscribes to the topics that
    carry the events its handler table handles (`shared.events.topics_carrying`)."""
    settings = settings or PaymentSettings()
    event_handlers = bind_handlers(settings)
    runtime = ServiceRuntime(settings, event_handlers, topics=topics_carrying(event_handlers))

    @runtime.app.page("/accounts")
    class Accounts(View):
        """GET /accounts: every account."""

        async def get(self, request: Request) -> Response:
            """GET /accounts: 200 [{"customer", "balance", "currency"}]."""
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.accounts(connection))

    @runtime.app.page("/accounts/{customer}")
    class Account(View):
        """GET and PUT /accounts/{customer}: one account."""

        async def get(self, request: Request, customer: str) -> Response:
            """GET /accounts/{customer}: 200 the account; 404 unknown customer; 422 not a valid customer id."""
            try:
                customer = request_value(CUSTOMER, customer, "path", "customer")
            except ValueError as error:
                return validation_response(self, error)
            async with (await runtime.request_uow()).connection() as connection:
                found = await repository.account(connection, customer)
            if found is None:
                return json_response(self, {"detail": f"customer {customer} not found"}, status=404)
            return json_response(self, found)

        async def put(self, request: Request, customer: str) -> Response:
            """PUT /accounts/{customer} {"balance", "currency"}: 200 the account after seeding; 413;
            422 bad id or body."""
            try:
                customer = request_value(CUSTOMER, customer, "path", "customer")
                command = SetAccount.model_validate(await read_json(request))
            except (ValidationError, ValueError) as error:
                return validation_response(self, error)
            async with (await runtime.request_uow()).connection() as connection:
                return json_response(self, await repository.set_account(connection, customer, command.balance, command.currency))

    return runtime
