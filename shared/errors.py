"""The exceptions every service shares, in one place.

    SagaError                 base of everything below
    ├── EventDecodeError      a message is not a valid event of the catalog (never retried: dead letter)
    ├── TransientError        the database was momentarily unable to finish (retry with backoff)
    └── DomainError           a business rule refused a request or a record; each service's
                              subclasses name the rule

Business outcomes of events are not exceptions: each service's decide functions return the
new state and the event to emit (a decline, a rejection, a cancellation included). A
DomainError is what a rule refuses outright: an HTTP request (order_svc answers 404 or 409),
or a record whose content no rule can accept (order_svc's OrderIdTaken, payment_svc's credit
to a customer without an account), which escapes its handler, rolls back and becomes a dead
letter without counting against the consumer's breaker. Anything else that escapes a handler
is a bug or an outage: the transaction rolls back and the consumer decides between retry and
dead letter.
"""
from __future__ import annotations


class SagaError(Exception):
    """Base of the project's named errors."""


class EventDecodeError(SagaError, ValueError):
    """Raw bytes, text or a mapping that is not a valid event: not JSON, unknown
    `event_type`, unsupported `schema_version`, or a field that breaks the schema.
    `str(error)` is one line naming the first problem."""


class TransientError(SagaError):
    """A failure worth retrying unchanged: serialization conflict, deadlock, lost or
    refused connection, lock timeout. Raised by the unit of work with the driver's
    exception as `__cause__`; nothing was committed."""


class DomainError(SagaError):
    """A business rule refused a request or a record outright (see the module doc). `reason`,
    where a subclass sets it, is the matching code of the event catalog's vocabularies."""

    reason: str = ""
