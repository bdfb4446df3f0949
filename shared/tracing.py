"""W3C trace context (``traceparent``) carried hop by hop through the saga.

A saga starts a new trace; every event emitted while handling another carries a
child of the incoming context: the same trace id, a fresh span (parent) id, the same
flags. So one trace id ties every event of a saga together, and a header that is
missing or malformed never stops processing: the hop simply starts a new trace.

Format (version 00): ``00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>``,
lower case; all-zero ids and version ``ff`` are invalid. Higher versions are parsed
by their first four fields, as the W3C spec asks, and re-emitted as version 00.

`tracestate` (vendor entries, ``key=value`` list) travels with it, unchanged from hop to hop:
`TraceHeaders` is the pair. A tracestate that is not a valid list is dropped, and so is any
tracestate whose traceparent is missing or malformed (a new trace starts with none).

This module is the wire format only; recording spans is shared/telemetry.py's business.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED = "01"
_TRACESTATE_KEY = r"(?:[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}|[a-z][a-z0-9_\-*/]{0,255})"
_TRACESTATE_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TRACESTATE_MEMBER = re.compile(rf"({_TRACESTATE_KEY})=({_TRACESTATE_VALUE})")
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_CHARS = 512


@dataclass(frozen=True)
class TraceContext:
    """A parsed traceparent: 32 hex digits of trace id, 16 of span id, 2 of flags."""

    trace_id: str
    span_id: str
    flags: str = _SAMPLED

    @property
    def header(self) -> str:
        """The traceparent header, ``00-<trace id>-<span id>-<flags>``."""
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


@dataclass(frozen=True)
class TraceHeaders:
    """The W3C trace context as it travels in headers and outbox columns: a `traceparent` (may be
    empty or malformed when it came from outside) and a `tracestate` ("" when none)."""

    traceparent: str
    tracestate: str = ""

    @classmethod
    def received(cls, traceparent: str | bytes | None, tracestate: str | bytes | None) -> TraceHeaders:
        """The context of an incoming record or request: both values as text (invalid bytes
        replaced), a missing one as ""."""
        return cls(_text(traceparent), _text(tracestate))

    def child(self) -> TraceHeaders:
        """What an event emitted while handling this context carries when no span is recorded:
        a child traceparent (a new trace when this one is missing or malformed) and the same
        tracestate, cleaned by `valid_tracestate`; none with a new trace."""
        parent = parse_traceparent(self.traceparent)
        if parent is None:
            return TraceHeaders(new_traceparent())
        return TraceHeaders(parent.child().header, valid_tracestate(self.tracestate))


def valid_tracestate(value: str | bytes | None) -> str:
    """`value` as a tracestate to pass on: its list members (``key=value``, W3C syntax) joined
    by ``,`` with the blanks around them removed; "" when it is absent, not ASCII, longer than
    TRACESTATE_MAX_CHARS, has more than TRACESTATE_MAX_MEMBERS members, a member that is not
    ``key=value`` or a key twice (the W3C spec lets a receiver drop a header it cannot parse)."""
    text = _text(value)
    if not text or len(text) > TRACESTATE_MAX_CHARS or not text.isascii():
        return ""
    members, keys = [], set()
    for member in text.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return ""
        keys.add(match.group(1))
        members.append(member)
    return ",".join(members) if len(members) <= TRACESTATE_MAX_MEMBERS else ""


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
