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
    return _shown(
        major_amount(amount_minor, currency_code), minor_units(currency_code), currency_code
    )


def _shown(value: Decimal, places: int, currency_code: str) -> str:
    digits = f"{abs(value):,.{places}f}"
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


def format_price(amount: object, currency_code: str) -> str:
    """A decimal price string ("49.00", "0.002") in major units, exactly as priced.

    Catalog prices may go below the minor unit (usage is often sub-cent), so
    the currency's decimals are a minimum, never a rounding.
    """
    try:
        value = Decimal(str(amount)) if amount not in (None, "") else Decimal(0)
        exponent = value.normalize().as_tuple().exponent
        if not isinstance(exponent, int):  # NaN and infinities are no price
            return "—"
        return _shown(value, max(minor_units(currency_code), -exponent), currency_code)
    except (ArithmeticError, ValueError):  # not a number, or not a currency
        return "—"
