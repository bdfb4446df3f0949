"""The exceptions every service shares, in one place.

    SagaError                 base of everything below
    ├── EventDecodeError      a message is not a valid event of the catalog (never retried: dead letter)
    ├── TransientError        the database was momentarily unable to finish (retry with backoff)
    └── DomainError           a business rule said no; each service's subclasses name the rule and
                              carry the `reason` of the *_REJECTED / *_FAILED event they become

Handlers turn a DomainError into an event and commit; they never let it escape.
Anything else that escapes a handler is a bug or an outage: the transaction rolls back
and the consumer decides between retry and dead letter.
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
    """A business rule refused the request. Subclasses set `reason` to the code the
    matching *_REJECTED / *_FAILED event carries."""

    reason: str = ""
