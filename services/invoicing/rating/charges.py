"""A usage charge as the rating engine sees it: one model and its properties.

``Charge.from_json`` reads the CHARGE.json shape of ``tally rate`` (the
catalog's properties with the same names, flattened, plus ``model`` and
``currency``) and validates it as the catalog does, collecting every bad
field before failing once with ``InvalidArgument``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from services.kit.currency import is_iso4217
from services.kit.errors import Violations

MODELS = ("standard", "graduated", "volume", "package", "percentage", "graduated_percentage")
TIERED_MODELS = ("graduated", "volume", "graduated_percentage")
EVENT_MODELS = ("percentage", "graduated_percentage")

MAX_DECIMAL_PLACES = 12
MAX_INTEGER_DIGITS = 24
HUNDRED = Decimal(100)
ZERO = Decimal(0)

# Keys of the catalog's charge resource that carry no pricing: accepted and ignored.
_IGNORED_KEYS = frozenset({"charge_id", "metric_id", "metric_code", "display_name"})
_TOP_KEYS = frozenset(
    {
        "model",
        "currency",
        "unit_amount",
        "tiers",
        "package_size",
        "package_amount",
        "free_units",
        "rate",
        "fixed_amount",
        "free_units_per_events",
        "free_units_per_total_aggregation",
        "per_transaction_min_amount",
        "per_transaction_max_amount",
        "minimum_amount",
    }
)
_TIER_KEYS = frozenset({"up_to", "unit_amount", "flat_amount", "rate"})


@dataclass(frozen=True)
class Tier:
    """One tier; it covers quantities above the previous tier's ``up_to`` up to
    its own (inclusive). ``up_to`` None = open-ended (the last tier).
    ``unit_amount`` for graduated/volume, ``rate`` (percent) for graduated_percentage."""

    up_to: Decimal | None
    unit_amount: Decimal = ZERO
    flat_amount: Decimal = ZERO
    rate: Decimal = ZERO


@dataclass(frozen=True)
class Charge:
    model: str
    currency: str
    unit_amount: Decimal = ZERO
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal = ZERO
    package_amount: Decimal = ZERO
    free_units: Decimal = ZERO
    rate: Decimal = ZERO
    fixed_amount: Decimal = ZERO
    free_units_per_events: int = 0
    free_units_per_total_aggregation: Decimal = ZERO
    per_transaction_min_amount: Decimal | None = None
    per_transaction_max_amount: Decimal | None = None
    minimum_amount: Decimal | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Charge:
        """The validated charge of a CHARGE.json mapping; ``InvalidArgument`` otherwise."""
        v = Violations()
        charge = _parse(data, v)
        v.raise_if_any()
        assert charge is not None
        return charge


def parse_decimal(
    value: Any,
    field: str,
    v: Violations,
    *,
    required: bool,
    maximum: Decimal | None = None,
    positive: bool = False,
) -> Decimal | None:
    """A non-negative decimal string (or JSON integer) of at most 12 places.

    Floats are refused: ``0.1`` in JSON is already not 0.1. Missing optional
    values are None without a violation.
    """
    if value is None or value == "":
        if required:
            v.add(field, 'is required (a decimal string such as "0.25")')
        return None
    if isinstance(value, bool | float):
        v.add(field, f'must be a decimal string such as "0.25", not {value!r}')
        return None
    if not isinstance(value, str | int):
        v.add(field, f"must be a decimal string, not {type(value).__name__}")
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        v.add(field, f"{value!r} is not a decimal number")
        return None
    if not number.is_finite():
        v.add(field, f"{value!r} is not a finite number")
        return None
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        v.add(field, f"has more than {MAX_DECIMAL_PLACES} decimal places")
        return None
    if number != 0 and number.adjusted() >= MAX_INTEGER_DIGITS:
        v.add(field, f"has more than {MAX_INTEGER_DIGITS} digits before the decimal point")
        return None
    if number < 0:
        v.add(field, "must not be negative")
        return None
    if positive and number == 0:
        v.add(field, "must be greater than 0")
        return None
    if maximum is not None and number > maximum:
        v.add(field, f"must be at most {maximum}")
        return None
    return number


def _parse_int(value: Any, field: str, v: Violations) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        v.add(field, f"must be a whole number, not {value!r}")
        return 0
    try:
        number = int(value)
    except ValueError:
        v.add(field, f"{value!r} is not a whole number")
        return 0
    if number < 0:
        v.add(field, "must not be negative")
        return 0
    return number


def _parse_tiers(raw: Any, model: str, v: Violations) -> tuple[Tier, ...]:
    if raw is None or raw == []:
        v.add("tiers", "at least one tier is required")
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        v.add("tiers", "must be a list of tiers")
        return ()
    tiers: list[Tier] = []
    previous: Decimal | None = ZERO
    last = len(raw) - 1
    for i, item in enumerate(raw):
        at = f"tiers[{i}]"
        if not isinstance(item, Mapping):
            v.add(at, "must be an object")
            previous = None
            continue
        for key in sorted(set(item) - _TIER_KEYS):
            v.add(f"{at}.{key}", "is not a tier property")
        up_to = parse_decimal(item.get("up_to"), f"{at}.up_to", v, required=False)
        present = item.get("up_to") not in (None, "")
        if i == last:
            if present:
                v.add(f"{at}.up_to", "the last tier must be open-ended: leave up_to unset")
        elif not present:
            v.add(f"{at}.up_to", "only the last tier may be open-ended")
        elif up_to is not None and previous is not None and up_to <= previous:
            where = "0" if i == 0 else f"tiers[{i - 1}].up_to"
            v.add(f"{at}.up_to", f"must be greater than {where}: tiers are in increasing order")
        previous = up_to
        flat = parse_decimal(item.get("flat_amount"), f"{at}.flat_amount", v, required=False)
        rate: Decimal | None
        unit: Decimal | None
        if model == "graduated_percentage":
            rate = parse_decimal(item.get("rate"), f"{at}.rate", v, required=True, maximum=HUNDRED)
            if item.get("unit_amount") not in (None, "", "0"):
                v.add(f"{at}.unit_amount", "graduated_percentage tiers have a rate, not a price")
            unit = ZERO
        else:
            unit = parse_decimal(item.get("unit_amount"), f"{at}.unit_amount", v, required=True)
            if item.get("rate") not in (None, "", "0"):
                v.add(f"{at}.rate", f"{model} tiers have a unit_amount, not a rate")
            rate = ZERO
        tiers.append(
            Tier(
                up_to=up_to if i != last else None,
                unit_amount=unit or ZERO,
                flat_amount=flat or ZERO,
                rate=rate or ZERO,
            )
        )
    return tuple(tiers)


# Properties each model may carry; anything else set is a mistake worth naming.
_MODEL_KEYS: dict[str, frozenset[str]] = {
    "standard": frozenset({"unit_amount"}),
    "graduated": frozenset({"tiers"}),
    "volume": frozenset({"tiers"}),
    "package": frozenset({"package_size", "package_amount", "free_units"}),
    "percentage": frozenset(
        {
            "rate",
            "fixed_amount",
            "free_units_per_events",
            "free_units_per_total_aggregation",
            "per_transaction_min_amount",
            "per_transaction_max_amount",
        }
    ),
    "graduated_percentage": frozenset({"tiers"}),
}


def _parse(data: Any, v: Violations) -> Charge | None:
    if not isinstance(data, Mapping):
        v.add("", "a charge must be a JSON object")
        return None
    model = data.get("model")
    if model not in MODELS:
        v.add("model", f"must be one of {', '.join(MODELS)}; got {model!r}")
    currency = data.get("currency")
    if not isinstance(currency, str) or not is_iso4217(currency):
        v.add("currency", f"{currency!r} is not an active ISO 4217 code (upper case, e.g. USD)")
    for key in sorted(set(data) - _TOP_KEYS - _IGNORED_KEYS):
        v.add(key, "is not a charge property")
    minimum = parse_decimal(data.get("minimum_amount"), "minimum_amount", v, required=False)
    if model not in MODELS or not isinstance(currency, str):
        return None
    for key in sorted(set(data) & (_TOP_KEYS - {"model", "currency", "minimum_amount"})):
        if key not in _MODEL_KEYS[model] and data.get(key) not in (None, "", 0, "0", []):
            v.add(key, f"is not a property of the {model} model")

    def dec(key: str, *, required: bool, **kw: Any) -> Decimal | None:
        return parse_decimal(data.get(key), key, v, required=required, **kw)

    common = {"model": model, "currency": currency, "minimum_amount": minimum}
    if model == "standard":
        return Charge(unit_amount=dec("unit_amount", required=True) or ZERO, **common)
    if model in TIERED_MODELS:
        return Charge(tiers=_parse_tiers(data.get("tiers"), model, v), **common)
    if model == "package":
        return Charge(
            package_size=dec("package_size", required=True, positive=True) or Decimal(1),
            package_amount=dec("package_amount", required=True) or ZERO,
            free_units=dec("free_units", required=False) or ZERO,
            **common,
        )
    low = dec("per_transaction_min_amount", required=False)
    high = dec("per_transaction_max_amount", required=False)
    if low is not None and high is not None and low > high:
        v.add("per_transaction_max_amount", "must not be less than per_transaction_min_amount")
    return Charge(
        rate=dec("rate", required=True, maximum=HUNDRED) or ZERO,
        fixed_amount=dec("fixed_amount", required=False) or ZERO,
        free_units_per_events=_parse_int(
            data.get("free_units_per_events"), "free_units_per_events", v
        ),
        free_units_per_total_aggregation=dec("free_units_per_total_aggregation", required=False)
        or ZERO,
        per_transaction_min_amount=low,
        per_transaction_max_amount=high,
        **common,
    )
