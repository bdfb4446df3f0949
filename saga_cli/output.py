"""How commands print: one JSON document for --json, rich tables for people."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text


def print_json(document: Any) -> None:
    """Exactly one JSON document on stdout, nothing else (scripts parse it)."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def console() -> Console:
    """A console bound to the current stdout (so redirection and test capture see it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def text_or_dash(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def cell(value: Any, style: str = "") -> Text:
    """A table cell from data we did not write: shown literally, never read as rich markup."""
    return Text(text_or_dash(value), style=style)
