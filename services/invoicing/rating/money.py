"""The one rounding rule of Tally, and money formatting.

Prices and intermediate amounts are exact ``Decimal`` values in major units.
An invoice line is rounded exactly once, with ROUND_HALF_UP (ties away from
zero, so a credit mirrors its charge), to the minor unit of its ISO 4217
currency (0, 2 or 3 decimals; see ``services.kit.currency``). Totals are sums
of rounded lines, in integer minor units. See docs/money.md.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, localcontext

from services.kit.currency import minor_units

# Inputs have at most 24 integer digits and 12 decimals (catalog rules), so a
# product of two of them has at most 72 significant digits: 100 keeps every
# multiplication and sum of the engine exact.
EXACT = Context(prec=100)


def round_to_minor(amount: Decimal, currency: str) -> int:
    """``amount`` (major units) rounded HALF_UP to ``currency``'s minor unit, as an integer.

    ``round_to_minor(Decimal("0.125"), "USD") == 13``; ``-0.125`` gives ``-13``.
    """
    places = minor_units(currency)
    if not amount.is_finite():
        raise ValueError(f"cannot round {amount!r}")
    with localcontext(EXACT):
        scaled = amount.scaleb(places)
        return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def minor_to_decimal(minor: int, currency: str) -> Decimal:
    """Integer minor units as a Decimal in major units with the currency's scale (4900 -> 49.00)."""
    places = minor_units(currency)
    with localcontext(EXACT):
        return Decimal(minor).scaleb(-places)


def format_amount(minor: int, currency: str) -> str:
    """Major-unit text: USD 4900 -> "49.00", JPY 4900 -> "4900", KWD 1500 -> "1.500"."""
    return format(minor_to_decimal(minor, currency), "f")


def decimal_text(value: Decimal) -> str:
    """Plain fixed-point text without trailing zeros ("125", "0.000125", "0")."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
