"""Validation of what the user typed, before anything goes over the wire.

Each parser returns the clean value or raises CliError with one line that
names the bad input and what is expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from saga_cli.errors import CliError

CURRENCY = re.compile(r"[A-Z]{3}")
TWO_PLACES = Decimal("0.01")

MAX_IDEMPOTENCY_KEY_CHARS = 255
"""The longest Idempotency-Key order_svc accepts (its IdempotencyKey: printable ASCII; the CLI
imports no service code, so the rule is repeated here and in the README)."""
IDEMPOTENCY_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")


@dataclass(frozen=True)
class Item:
    """One --item: a SKU and its quantity (> 0)."""

    sku: str
    quantity: int

    def as_json(self) -> dict[str, str | int]:
        """{"sku", "quantity"}, as POST /orders takes it."""
        return {"sku": self.sku, "quantity": self.quantity}


def parse_items(raw_items: list[str]) -> list[Item]:
    """The --item values as Items; CliError when there is none, one is not SKU:QTY or a SKU is given twice."""
    if not raw_items:
        raise CliError("an order needs at least one --item SKU:QTY (e.g. --item WIDGET-1:2)")
    items = [parse_item(raw) for raw in raw_items]
    seen: set[str] = set()
    for item in items:
        if item.sku in seen:
            raise CliError(f"--item {item.sku} is given twice; give each SKU once with its total quantity")
        seen.add(item.sku)
    return items


def parse_item(raw: str) -> Item:
    """"SKU:QTY" (split at the last colon) as an Item; CliError unless both are there and QTY > 0."""
    sku, colon, quantity = raw.rpartition(":")
    sku = sku.strip()
    if not colon or not sku or not quantity.strip():
        raise CliError(f"--item {raw!r} is not SKU:QTY (e.g. --item WIDGET-1:2)")
    return Item(sku, parse_positive_int(quantity, f"--item {raw!r}: quantity"))


def parse_positive_int(raw: str, what: str) -> int:
    """`raw` as an integer > 0; CliError naming `what` otherwise."""
    value = _parse_int(raw, what, "a positive integer")
    if value <= 0:
        raise CliError(f"{what} must be a positive integer, got {raw.strip()!r}")
    return value


def parse_non_negative_int(raw: str, what: str) -> int:
    """`raw` as an integer ≥ 0; CliError naming `what` otherwise."""
    value = _parse_int(raw, what, "a whole number, 0 or more")
    if value < 0:
        raise CliError(f"{what} must be a whole number, 0 or more, got {raw.strip()!r}")
    return value


def _parse_int(raw: str, what: str, expected: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise CliError(f"{what} must be {expected}, got {raw!r}")
    return int(text)


def parse_money(raw: str, what: str) -> str:
    """A non-negative decimal with at most 2 places, returned with exactly 2 ("40" → "40.00")."""
    text = raw.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise CliError(f"{what} must be a decimal like 40.00, got {raw!r}") from None
    if not value.is_finite() or not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text):
        raise CliError(f"{what} must be a decimal like 40.00, got {raw!r}")
    if value < 0:
        raise CliError(f"{what} must not be negative, got {raw!r}")
    if value != value.quantize(TWO_PLACES):
        raise CliError(f"{what} has more than 2 decimal places: {raw!r}")
    return str(value.quantize(TWO_PLACES))


def parse_currency(raw: str) -> str:
    """`raw` when it is 3 uppercase letters (ISO 4217), else CliError."""
    if not CURRENCY.fullmatch(raw):
        raise CliError(f"--currency must be an ISO-4217 code of 3 uppercase letters (e.g. EUR), got {raw!r}")
    return raw


def parse_required_text(raw: str | None, what: str) -> str:
    """`raw` without surrounding spaces; CliError "<what> is required" when nothing is left."""
    text = (raw or "").strip()
    if not text:
        raise CliError(f"{what} is required")
    return text


def parse_idempotency_key(raw: str) -> str:
    """--idempotency-key without surrounding spaces: 1 to MAX_IDEMPOTENCY_KEY_CHARS printable
    ASCII characters (what order_svc accepts), or CliError naming the rule."""
    key = parse_required_text(raw, "--idempotency-key")
    if not IDEMPOTENCY_KEY.fullmatch(key):
        shown = repr(key) if len(key) <= 40 else f"{key[:40]!r}… ({len(key)} characters)"
        raise CliError(
            f"--idempotency-key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
            f" (letters, digits, punctuation, spaces), got {shown}"
        )
    return key


def parse_since(raw: str) -> int:
    """--since as epoch milliseconds: digits are epoch ms, anything else an ISO-8601 time.

    An ISO time without an offset is read in the local time zone.
    """
    text = raw.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--since must be an ISO-8601 time (e.g. 2024-05-01T12:00:00Z) or epoch milliseconds, got {raw!r}"
        ) from None
    return int(moment.astimezone().timestamp() * 1000)
