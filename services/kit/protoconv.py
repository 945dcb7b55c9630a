"""Wire <-> Python values every adapter needs: instants and decimal strings.

Decimals travel as strings (never float); a malformed one is a field violation
naming the field, gathered with the request's other violations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from google.protobuf.timestamp_pb2 import Timestamp

from services.kit.errors import InvalidArgument, Violations

MAX_DECIMAL_PLACES = 12


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


# What a google.protobuf.Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62135596800
MAX_TIMESTAMP_SECONDS = 253402300799


INVALID_INSTANT = "is not a valid instant (0001-01-01 to 9999-12-31 UTC, nanos 0-999999999)"


def from_timestamp(
    value: Timestamp, *, present: bool = True, field: str = "(timestamp)"
) -> datetime | None:
    """An aware UTC datetime; None when the field was not set (``present=False``).

    A Timestamp outside its documented range is the caller's mistake
    (INVALID_ARGUMENT naming ``field``), not a crash in the adapter.
    """
    if not present:
        return None
    if not (
        MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS
        and 0 <= value.nanos <= 999_999_999
    ):
        raise InvalidArgument.field(field, INVALID_INSTANT)
    return value.ToDatetime(tzinfo=UTC)


def parse_decimal(
    text: str,
    field: str,
    violations: Violations,
    *,
    required: bool = True,
    allow_negative: bool = False,
    max_places: int = MAX_DECIMAL_PLACES,
) -> Decimal | None:
    """Parse ``"0.000125"``; records a violation and returns None when it is not acceptable."""
    if text == "":
        if required:
            violations.add(field, 'is required (a decimal string such as "0.25")')
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        violations.add(field, f"{text!r} is not a decimal number")
        return None
    if not value.is_finite():
        violations.add(field, f"{text!r} is not a finite number")
        return None
    if not allow_negative and value < 0:
        violations.add(field, "must not be negative")
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_places:
        violations.add(field, f"has more than {max_places} decimal places")
        return None
    return value


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: ``Decimal("1E+2")`` -> ``"100"``."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
