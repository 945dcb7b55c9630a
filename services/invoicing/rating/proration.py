"""Proration to the second: ``fee x seconds_used / seconds_in_period``.

No rounding happens here: the prorated amount is rounded once, with the rest
of its invoice line (``money.round_to_minor``). Day-based examples come out
the same when changes happen at midnight, because days are whole multiples of
86,400 seconds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Context, Decimal, localcontext

# A quotient such as 1/3 does not terminate; 60 significant digits is far
# below any minor unit for every amount the catalog accepts (< 10^24).
_PRORATION = Context(prec=60)


def prorate(amount: Decimal, used_seconds: int | Decimal, period_seconds: int | Decimal) -> Decimal:
    """``amount x used_seconds / period_seconds``, unrounded.

    ``period_seconds`` must be positive and ``used_seconds`` within
    ``0..period_seconds``; a negative ``amount`` (a credit) is fine.
    """
    used = Decimal(used_seconds)
    period = Decimal(period_seconds)
    if period <= 0:
        raise ValueError(f"period_seconds must be positive, got {period_seconds}")
    if used < 0 or used > period:
        raise ValueError(f"used_seconds must be within 0..{period_seconds}, got {used_seconds}")
    if used == period:
        return amount
    with localcontext(_PRORATION):
        return amount * used / period


def seconds_between(start: datetime, end: datetime) -> int:
    """Whole seconds from ``start`` to ``end`` (both timezone-aware; sub-second parts dropped)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("seconds_between needs timezone-aware datetimes")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    delta = end - start
    return delta.days * 86_400 + delta.seconds
