"""`preview`: any bytes or text in, text PostgreSQL and JSON take out, bounded."""
from __future__ import annotations

import json

import pytest

from shared.safe_text import preview

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw, expected", [
    (None, None),
    (b"", ""),
    (b"plain", "plain"),
    (b"abc\x00def", "abc\ufffddef"),
    ("a\x00b\x07c\td\ne", "a\ufffdb\ufffdc\td\ne"),
    (b"\xff\xfe\xfd", "\ufffd\ufffd\ufffd"),
    ("lone \udcff surrogate", "lone ? surrogate"),
    ("é€😀", "é€😀"),
])
def test_preview_replaces_what_text_columns_refuse(raw, expected) -> None:
    assert preview(raw, 100) == expected


@pytest.mark.parametrize("raw", [b"[" * 100_000, "x" * 100_000, b"\xf0\x9f\x98\x80" * 50_000, b"\x00" * 10**6])
def test_preview_is_cut_to_its_limit_with_a_mark(raw) -> None:
    shown = preview(raw, 50)
    assert len(shown) == 50 and shown.endswith("…")
    json.dumps(shown).encode("utf-8")  # always encodable, never a NUL escape
    assert "\x00" not in shown


def test_preview_of_exactly_the_limit_is_not_cut() -> None:
    assert preview(b"y" * 50, 50) == "y" * 50
