"""W3C trace context (``traceparent``) carried hop by hop through the saga.

A saga starts a new trace; every event emitted while handling another carries a
child of the incoming context: the same trace id, a fresh span (parent) id, the same
flags. So one trace id ties every event of a saga together, and a header that is
missing or malformed never stops processing: the hop simply starts a new trace.

Format (version 00): ``00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>``,
lower case; all-zero ids and version ``ff`` are invalid. Higher versions are parsed
by their first four fields, as the W3C spec asks, and re-emitted as version 00.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED = "01"


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = _SAMPLED

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """Same trace and flags, a new span id."""
        return TraceContext(self.trace_id, _new_span_id(), self.flags)


def parse_traceparent(header: str | bytes | None) -> TraceContext | None:
    """The context in `header`, or None if it is absent or not a valid traceparent."""
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not header:
        return None
    match = _HEADER.match(header.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    rest = header.strip()[match.end():]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, flags)


def new_traceparent() -> str:
    """A traceparent starting a new, sampled trace (a new saga, or a malformed incoming header)."""
    return TraceContext(_new_trace_id(), _new_span_id()).header


def child_traceparent(incoming: str | bytes | None) -> str:
    """The traceparent for an event emitted while handling one that carried `incoming`:
    a child span of the same trace, or a new trace if `incoming` is missing or malformed."""
    parent = parse_traceparent(incoming)
    return parent.child().header if parent else new_traceparent()


def trace_id_of(header: str | bytes | None) -> str | None:
    """The trace id in `header`, or None if it is not a valid traceparent."""
    parsed = parse_traceparent(header)
    return parsed.trace_id if parsed else None


def _new_trace_id() -> str:
    while (value := secrets.token_hex(16)) == "0" * 32:
        pass
    return value


def _new_span_id() -> str:
    while (value := secrets.token_hex(8)) == "0" * 16:
        pass
    return value
