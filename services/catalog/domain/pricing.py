"""Charge models and their properties: what the invoicing rating engine can rate.

Properties arrive as plain mappings shaped like the proto messages (field name
-> string/int/list, optional fields absent when unset) so this module stays free
of protobuf. ``parse_properties`` turns one into a typed, validated value and
records a violation per problem, each named by its path below ``path``
(``draft.charges[1].graduated.tiers[2].up_to``). ``properties_dict`` is the
inverse, used for storage and for the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from services.catalog.domain.values import decimal_text, parse_decimal
from services.kit.errors import Violations

HUNDRED = Decimal(100)
ZERO = Decimal(0)


class ChargeModel(StrEnum):
    """Names match the proto's ``Charge.properties`` oneof members."""

    STANDARD = "standard"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive; None = open-ended (last tier only)
    unit_amount: Decimal
    flat_amount: Decimal


@dataclass(frozen=True)
class PercentageTier:
    up_to: Decimal | None
    rate: Decimal
    flat_amount: Decimal


@dataclass(frozen=True)
class Standard:
    unit_amount: Decimal


@dataclass(frozen=True)
class Graduated:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Volume:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class PackagePricing:
    package_size: int
    package_amount: Decimal
    free_units: int


@dataclass(frozen=True)
class Percentage:
    rate: Decimal
    fixed_amount: Decimal
    free_units_per_events: int
    free_units_per_total_aggregation: Decimal | None
    per_transaction_min_amount: Decimal | None
    per_transaction_max_amount: Decimal | None


@dataclass(frozen=True)
class GraduatedPercentage:
    tiers: tuple[PercentageTier, ...]


ChargeProperties = Standard | Graduated | Volume | PackagePricing | Percentage | GraduatedPercentage


def model_of(properties: ChargeProperties) -> ChargeModel:
    return _MODEL_OF[type(properties)]


_MODEL_OF: dict[type[Any], ChargeModel] = {
    Standard: ChargeModel.STANDARD,
    Graduated: ChargeModel.GRADUATED,
    Volume: ChargeModel.VOLUME,
    PackagePricing: ChargeModel.PACKAGE,
    Percentage: ChargeModel.PERCENTAGE,
    GraduatedPercentage: ChargeModel.GRADUATED_PERCENTAGE,
}


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    return str(value)


def _int(raw: Mapping[str, Any], key: str, field: str, v: Violations, *, minimum: int) -> int:
    value = raw.get(key, 0)
    try:
        number = int(value)
    except (TypeError, ValueError):
        v.add(field, f"{value!r} is not an integer")
        return minimum
    if number < minimum:
        v.add(field, f"must be at least {minimum}")
    return number


T = TypeVar("T", Tier, PercentageTier)


def _tiers(
    raw: Mapping[str, Any],
    path: str,
    v: Violations,
    build: Callable[[Mapping[str, Any], str, Decimal | None, Violations], T | None],
) -> tuple[T, ...]:
    """Tier structure shared by every tiered model.

    The proto carries only each tier's upper bound, so tiers are contiguous by
    construction (each starts where the previous ended, the first at zero);
    what can go wrong is the order of the bounds and which tier is open-ended.
    """
    items: Sequence[Mapping[str, Any]] = raw.get("tiers") or ()
    field = f"{path}.tiers"
    if not items:
        v.add(field, "at least one tier is required")
        return ()
    tiers: list[T] = []
    previous: Decimal | None = ZERO
    last = len(items) - 1
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        up_to = parse_decimal(_text(item, "up_to"), f"{at}.up_to", v, required=False)
        if i == last:
            if item.get("up_to") not in (None, ""):
                v.add(f"{at}.up_to", "the last tier must be open-ended: leave up_to unset")
        elif up_to is None:
            if item.get("up_to") in (None, ""):
                v.add(f"{at}.up_to", "only the last tier may be open-ended")
        elif previous is not None and up_to <= previous:
            where = "0" if i == 0 else f"tiers[{i - 1}].up_to ({decimal_text(previous)})"
            v.add(f"{at}.up_to", f"must be greater than {where}: tiers are in increasing order")
        # An unparseable bound hides the order of the rest, so stop comparing.
        previous = up_to if up_to is not None else None
        tier = build(item, at, up_to if i != last else None, v)
        if tier is not None:
            tiers.append(tier)
    return tuple(tiers)


def _tier(item: Mapping[str, Any], at: str, up_to: Decimal | None, v: Violations) -> Tier | None:
    unit = parse_decimal(_text(item, "unit_amount"), f"{at}.unit_amount", v, required=True)
    flat = parse_decimal(_text(item, "flat_amount"), f"{at}.flat_amount", v, required=False)
    if unit is None:
        return None
    return Tier(up_to=up_to, unit_amount=unit, flat_amount=flat if flat is not None else ZERO)


def _percentage_tier(
    item: Mapping[str, Any], at: str, up_to: Decimal | None, v: Violations
) -> PercentageTier | None:
    rate = parse_decimal(_text(item, "rate"), f"{at}.rate", v, required=True, maximum=HUNDRED)
    flat = parse_decimal(_text(item, "flat_amount"), f"{at}.flat_amount", v, required=False)
    if rate is None:
        return None
    return PercentageTier(up_to=up_to, rate=rate, flat_amount=flat if flat is not None else ZERO)


def parse_properties(
    model: ChargeModel, raw: Mapping[str, Any], path: str, v: Violations
) -> ChargeProperties | None:
    """Validated properties of ``model``; None when any violation was recorded."""
    before = len(v.items)
    result: ChargeProperties
    if model is ChargeModel.STANDARD:
        unit = parse_decimal(_text(raw, "unit_amount"), f"{path}.unit_amount", v, required=True)
        result = Standard(unit_amount=unit or ZERO)
    elif model is ChargeModel.GRADUATED:
        result = Graduated(tiers=_tiers(raw, path, v, _tier))
    elif model is ChargeModel.VOLUME:
        result = Volume(tiers=_tiers(raw, path, v, _tier))
    elif model is ChargeModel.PACKAGE:
        size = _int(raw, "package_size", f"{path}.package_size", v, minimum=1)
        amount = parse_decimal(
            _text(raw, "package_amount"), f"{path}.package_amount", v, required=True
        )
        free = _int(raw, "free_units", f"{path}.free_units", v, minimum=0)
        result = PackagePricing(package_size=size, package_amount=amount or ZERO, free_units=free)
    elif model is ChargeModel.PERCENTAGE:
        result = _percentage(raw, path, v)
    else:
        result = GraduatedPercentage(tiers=_tiers(raw, path, v, _percentage_tier))
    return result if len(v.items) == before else None


def _percentage(raw: Mapping[str, Any], path: str, v: Violations) -> Percentage:
    rate = parse_decimal(_text(raw, "rate"), f"{path}.rate", v, required=True, maximum=HUNDRED)
    fixed = parse_decimal(_text(raw, "fixed_amount"), f"{path}.fixed_amount", v, required=False)
    free_events = _int(raw, "free_units_per_events", f"{path}.free_units_per_events", v, minimum=0)
    free_total = parse_decimal(
        _text(raw, "free_units_per_total_aggregation"),
        f"{path}.free_units_per_total_aggregation",
        v,
        required=False,
    )
    low = parse_decimal(
        _text(raw, "per_transaction_min_amount"),
        f"{path}.per_transaction_min_amount",
        v,
        required=False,
    )
    high = parse_decimal(
        _text(raw, "per_transaction_max_amount"),
        f"{path}.per_transaction_max_amount",
        v,
        required=False,
    )
    if low is not None and high is not None and low > high:
        v.add(
            f"{path}.per_transaction_max_amount",
            "must not be less than per_transaction_min_amount",
        )
    return Percentage(
        rate=rate or ZERO,
        fixed_amount=fixed if fixed is not None else ZERO,
        free_units_per_events=free_events,
        free_units_per_total_aggregation=free_total,
        per_transaction_min_amount=low,
        per_transaction_max_amount=high,
    )


def _tier_dict(tier: Tier | PercentageTier) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tier.up_to is not None:
        out["up_to"] = decimal_text(tier.up_to)
    if isinstance(tier, Tier):
        out["unit_amount"] = decimal_text(tier.unit_amount)
    else:
        out["rate"] = decimal_text(tier.rate)
    out["flat_amount"] = decimal_text(tier.flat_amount)
    return out


def properties_dict(properties: ChargeProperties) -> dict[str, Any]:
    """The proto-shaped mapping of ``properties``; ``parse_properties`` reads it back."""
    if isinstance(properties, Standard):
        return {"unit_amount": decimal_text(properties.unit_amount)}
    if isinstance(properties, Graduated | Volume | GraduatedPercentage):
        return {"tiers": [_tier_dict(t) for t in properties.tiers]}
    if isinstance(properties, PackagePricing):
        return {
            "package_size": properties.package_size,
            "package_amount": decimal_text(properties.package_amount),
            "free_units": properties.free_units,
        }
    out: dict[str, Any] = {
        "rate": decimal_text(properties.rate),
        "fixed_amount": decimal_text(properties.fixed_amount),
        "free_units_per_events": properties.free_units_per_events,
    }
    optional = {
        "free_units_per_total_aggregation": properties.free_units_per_total_aggregation,
        "per_transaction_min_amount": properties.per_transaction_min_amount,
        "per_transaction_max_amount": properties.per_transaction_max_amount,
    }
    out.update({k: decimal_text(value) for k, value in optional.items() if value is not None})
    return out
