"""Money on the wire and in the database: a decimal with exactly two places plus an
ISO-4217 currency code, never a float.

Invariants of every `Money` value:
  * a finite `Decimal` with exponent -2 (``Decimal("40.00")``), 0 <= value <= MAX_AMOUNT,
    so it fits NUMERIC(12,2) unchanged;
  * accepted from a plain decimal string (``"40"``, ``"40.5"``, ``"40.50"``), an int, or a
    Decimal worth a whole number of cents; refused: floats (binary, inexact), bools,
    3+ decimals, signs, exponents, NaN/Infinity, surrounding spaces;
  * serialised to JSON as a string with two places (``"40.50"``).

Every amount has two places whatever the currency's own minor unit (JPY has none,
KWD three): the contract fixes the format, the currency only labels it.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("9999999999.99")  # NUMERIC(12,2)

_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]{1,2})?")  # ASCII digits only: `\d` takes any script's digits

# ISO 4217 list one, codes of currencies in circulation (2025). Left out on purpose:
# fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), bond-market units (XBA-XBD),
# precious metals (XAG, XAU, XPD, XPT), XDR, XAD, XSU, XUA, and the test/no-currency
# codes XTS and XXX; withdrawn codes (ANG, CUC, HRK, SLL, VEF, ZWL, ...) are not current.
ACTIVE_CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD
    IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
    OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP
    SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD
    UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)


def parse_money(value: Any) -> Decimal:
    """The exact two-place Decimal for `value`, or ValueError saying why not."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("money must be a decimal string like '40.00', not a number with a binary fraction")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise ValueError(f"money must be a plain decimal with at most 2 places, got {value!r}")
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("money must be finite")
        try:
            exact = value.quantize(CENT)
        except InvalidOperation:
            raise ValueError("money out of range") from None
        if exact != value:
            raise ValueError(f"money has at most 2 decimal places, got {value}")
        amount = value
    else:
        raise ValueError(f"money must be a decimal string, got {type(value).__name__}")
    if amount < 0:
        raise ValueError("money must not be negative")
    if amount > MAX_AMOUNT:
        raise ValueError(f"money must not exceed {MAX_AMOUNT}")
    return amount.quantize(CENT)


def format_money(amount: Decimal) -> str:
    """`amount` as the wire string with exactly two places: ``Decimal("40.5")`` → ``"40.50"``."""
    return f"{amount.quantize(CENT):f}"


def _positive(amount: Decimal) -> Decimal:
    if amount <= 0:
        raise ValueError("amount must be greater than 0")
    return amount


def _active_currency(code: Any) -> str:
    if not isinstance(code, str) or code not in ACTIVE_CURRENCIES:
        raise ValueError(f"currency must be an active ISO-4217 code in upper case (e.g. EUR), got {code!r}")
    return code


Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str, when_used="json"),
]
"""A non-negative amount with two places (balances, limits)."""

Amount = Annotated[Money, AfterValidator(_positive)]
"""A strictly positive Money (what an order costs, what is charged or refunded)."""

Currency = Annotated[str, BeforeValidator(_active_currency)]
"""An active ISO-4217 code, upper case."""
