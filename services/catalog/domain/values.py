"""Value rules shared by metrics and packages: codes, decimals, enumerations."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from services.kit.errors import Violations

MAX_DECIMAL_PLACES = 12
# Digits before the point: far beyond any price or quantity, small enough that
# "1E+100000" cannot become a 100k-digit NUMERIC.
MAX_INTEGER_DIGITS = 24
MAX_CODE_LENGTH = 64

# Codes appear in usage events, URLs and invoice exports: lower-case ASCII keeps
# them unambiguous in all three.
_SLUG = re.compile(r"[a-z][a-z0-9_-]*")


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


class RoundingFunction(StrEnum):
    ROUND = "round"
    CEIL = "ceil"
    FLOOR = "floor"


class MetricState(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class BillingInterval(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class BaseFeeTiming(StrEnum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class PackageState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


class VersionState(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"


class LimitEnforcement(StrEnum):
    HARD = "hard"
    SOFT = "soft"


def check_slug(value: str, field: str, v: Violations) -> bool:
    if not value:
        v.add(field, "is required")
        return False
    if len(value) > MAX_CODE_LENGTH:
        v.add(field, f"must be at most {MAX_CODE_LENGTH} characters")
        return False
    if not _SLUG.fullmatch(value):
        v.add(
            field,
            "must start with a lower-case letter and contain only a-z, 0-9, '_' and '-'",
        )
        return False
    return True


def parse_decimal(
    text: str | None,
    field: str,
    v: Violations,
    *,
    required: bool,
    minimum: Decimal | None = Decimal(0),
    maximum: Decimal | None = None,
) -> Decimal | None:
    """A non-negative decimal of at most 12 places, or None with a violation recorded.

    Missing optional values are None without a violation; callers pick the default.
    """
    if text is None or text == "":
        if required:
            v.add(field, 'is required (a decimal string such as "0.25")')
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        v.add(field, f"{text!r} is not a decimal number")
        return None
    if not value.is_finite():
        v.add(field, f"{text!r} is not a finite number")
        return None
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        v.add(field, f"has more than {MAX_DECIMAL_PLACES} decimal places")
        return None
    if value != 0 and value.adjusted() >= MAX_INTEGER_DIGITS:
        v.add(field, f"has more than {MAX_INTEGER_DIGITS} digits before the decimal point")
        return None
    if minimum is not None and value < minimum:
        v.add(field, "must not be negative" if minimum == 0 else f"must be at least {minimum}")
        return None
    if maximum is not None and value > maximum:
        v.add(field, f"must be at most {maximum}")
        return None
    return value


def decimal_text(value: Decimal) -> str:
    """Fixed-point text keeping the scale the caller gave ("49.00" stays "49.00")."""
    return format(value, "f")
