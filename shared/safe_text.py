"""Text that is safe wherever a record's content has to be shown or kept as text.

Anyone who can write to a topic chooses a record's bytes. Before any of them goes into a
PostgreSQL `text` or `jsonb` column (which refuse NUL), a JSON document that Debezium
re-parses, a log line or a terminal, it passes through `preview`.
"""
from __future__ import annotations

__all__ = ["preview"]

_CUT_MARK = "…"
_REPLACEMENT = "\ufffd"
_UNSAFE = {code: _REPLACEMENT for code in range(0x20) if chr(code) not in "\t\n\r"} | {0x7F: _REPLACEMENT}


def preview(raw: bytes | bytearray | memoryview | str | None, limit: int) -> str | None:
    """A text safe for PostgreSQL `text`/`jsonb` and for JSON: `raw` decoded as UTF-8 (invalid
    bytes become U+FFFD, lone surrogates '?'), NUL and other control characters except tab,
    newline and carriage return become U+FFFD, cut to `limit` characters with a trailing '…'
    when longer. None stays None."""
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.encode("utf-8", "replace").decode("utf-8") if not raw.isascii() else raw
    else:
        text = bytes(raw[: limit * 4 + 4]).decode("utf-8", "replace")
        cut_here = len(raw) > limit * 4 + 4
        if cut_here and len(text) <= limit:
            text += _CUT_MARK
    text = text.translate(_UNSAFE)
    if len(text) > limit:
        text = text[: limit - 1] + _CUT_MARK
    return text
