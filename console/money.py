"""Money as the gateway sends it (currency code + integer minor units), formatted exactly.

The exponent comes from the kit's ISO 4217 table, so JPY shows no decimals
and KWD three; the arithmetic is Decimal from the integer, never float.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.kit.currency import minor_units

# The few symbols shown instead of the code; every other currency shows its code.
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def major_amount(amount_minor: int, currency_code: str) -> Decimal:
    """12345 USD cents -> Decimal('123.45'): exact, with the currency's own decimals."""
    exponent = minor_units(currency_code)
    return Decimal(amount_minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_amount(amount_minor: int, currency_code: str) -> str:
    exponent = minor_units(currency_code)
    value = major_amount(amount_minor, currency_code)
    digits = f"{abs(value):,.{exponent}f}"
    symbol = _SYMBOLS.get(currency_code)
    text = f"{symbol}{digits}" if symbol else f"{digits} {currency_code}"
    return f"-{text}" if value < 0 else text


def format_money(money: Mapping[str, Any] | None, default_currency: str = "") -> str:
    """A ``tally.type.v1.Money`` in protobuf JSON (``amountMinor`` is an int64 string)."""
    if not money:
        return "—"
    code = str(money.get("currencyCode") or default_currency)
    if not code:
        return "—"
    return format_amount(int(money.get("amountMinor") or 0), code)
