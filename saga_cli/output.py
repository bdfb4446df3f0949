"""How commands print: one JSON document for --json, rich tables for people."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

TEXT_CHARS = 200
"""The most characters of one piece of a record on a line of `saga tail` or `saga trace` (its
key, event type, a header name or value, a value that is not JSON): cut with "…"."""


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout, nothing else (scripts parse it). Text is written
    as UTF-8, unless the document holds a lone surrogate (a record's JSON may carry
    "\\ud800"), which UTF-8 cannot encode: then every non-ASCII character is escaped."""
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(document, indent=2, default=str)
    sys.stdout.write(text + "\n")


def console() -> Console:
    """A console bound to the current stdout (so redirection and test capture see it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def one_line(text: str, limit: int) -> str:
    """`text` as it may be shown on one line of a terminal: at most `limit` characters (a
    longer text ends in "…"), every unprintable character (control characters such as NUL,
    newline or ESC, lone surrogates, line separators) written as its escape (``\\x00``,
    ``\\n``, ``\\u2028``), as `repr` would. Text we did not write (record keys, headers,
    values) goes through here before it reaches a terminal."""
    head = text[: limit + 1]
    if not head.isprintable():
        head = "".join(char if char.isprintable() else _escape(char) for char in head)
    if len(head) > limit:
        return head[: max(limit - 1, 0)] + "…"
    return head


def _escape(char: str) -> str:
    return repr(char)[1:-1]


def text_or_dash(value: Any) -> str:
    """`value` as text, "—" for None or ""."""
    return "—" if value is None or value == "" else str(value)


def cell(value: Any, style: str = "") -> Text:
    """A table cell from data we did not write: shown literally, never read as rich markup."""
    return Text(text_or_dash(value), style=style)
