"""The rating engine: a charge and a period's usage -> an exact amount with its breakdown.

Pure: no I/O, no clock, no rounding except ``Rating.amount_minor`` (the
line's single rounding, ``money.round_to_minor``). Every detail amount is
exact, and the details always add up to ``Rating.amount``.

Semantics (issue 3's definitions; docs/money.md):

- A tier covers quantities above the previous tier's ``up_to`` (0 for the
  first) up to its own ``up_to`` inclusive. Usage *enters* a tier when the
  quantity is strictly above the tier's lower bound, so zero usage enters no
  tier and a tiered charge rates zero usage at 0 (no flat amount), whatever
  the first tier's flat amount (a commitment is what ``minimum_amount`` is for).
- standard: quantity x unit_amount.
- graduated: each entered tier prices its own units, plus its flat amount.
- volume: every unit at the tier the quantity reaches, plus that tier's flat amount.
- package: ceil((quantity - free_units) / package_size) blocks x package_amount.
- percentage: per event, rate % of the amount + fixed_amount, clamped to the
  per-transaction min/max, after the free allowance (see ``_rate_percentage``).
- graduated_percentage: graduated tiers of a rate over the total amount
  (the quantity, or the sum of the events), each entered tier's flat amount once.
- minimum_amount: when the rated amount is below it, a true-up detail adds the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from services.invoicing.rating.charges import (
    EVENT_MODELS,
    ZERO,
    Charge,
    Tier,
    parse_decimal,
)
from services.invoicing.rating.money import EXACT, decimal_text, format_amount, round_to_minor
from services.kit.errors import InvalidArgument, Violations


@dataclass(frozen=True)
class RatingDetail:
    """One row of the breakdown (a tier, the blocks, an allowance, an adjustment).

    Mirrors ``tally.invoicing.v1.RatingStep``: ``tier`` is 1-based for tiered
    models and 0 otherwise; unset decimals are not applicable. ``amount`` is exact.
    """

    description: str
    amount: Decimal
    tier: int = 0
    quantity: Decimal | None = None
    unit_amount: Decimal | None = None
    flat_amount: Decimal | None = None
    rate: Decimal | None = None

    def to_json(self) -> dict[str, str]:
        out = {"description": self.description}
        if self.tier:
            out["tier"] = str(self.tier)
        for key in ("quantity", "unit_amount", "flat_amount", "rate"):
            value = getattr(self, key)
            if value is not None:
                out[key] = decimal_text(value)
        out["amount"] = decimal_text(self.amount)
        return out


@dataclass(frozen=True)
class Rating:
    amount: Decimal  # exact, unrounded; the sum of the details' amounts
    currency: str
    details: tuple[RatingDetail, ...]

    @property
    def amount_minor(self) -> int:
        """The line's single rounding: HALF_UP to the currency's minor unit."""
        return round_to_minor(self.amount, self.currency)

    def to_json(self) -> dict[str, Any]:
        minor = self.amount_minor
        return {
            "amount": format_amount(minor, self.currency),
            "amount_minor": minor,
            "currency": self.currency,
            "unrounded_amount": decimal_text(self.amount),
            "details": [d.to_json() for d in self.details],
        }


@dataclass(frozen=True)
class Usage:
    """What a USAGE.json holds: a quantity, or the period's per-event amounts."""

    quantity: Decimal | None = None
    events: tuple[Decimal, ...] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Usage:
        """``{"quantity": "1500"}`` or ``{"events": ["12.50", ...]}``; else ``InvalidArgument``."""
        v = Violations()
        if not isinstance(data, Mapping):
            raise InvalidArgument.field("", 'usage must be a JSON object: {"quantity": "..."}')
        for key in sorted(set(data) - {"quantity", "events"}):
            v.add(key, 'is not a usage field (use "quantity" or "events")')
        has_quantity, has_events = "quantity" in data, "events" in data
        if has_quantity == has_events:
            v.add("", 'give exactly one of "quantity" and "events"')
        quantity = None
        events: tuple[Decimal, ...] | None = None
        if has_quantity:
            quantity = parse_decimal(data["quantity"], "quantity", v, required=True)
        if has_events:
            raw = data["events"]
            if not isinstance(raw, list):
                v.add("events", "must be a list of decimal strings")
            else:
                parsed = [
                    parse_decimal(x, f"events[{i}]", v, required=True) for i, x in enumerate(raw)
                ]
                events = tuple(x for x in parsed if x is not None)
        v.raise_if_any()
        return cls(quantity=quantity, events=events)


def rate(
    charge: Charge,
    *,
    quantity: Decimal | None = None,
    events: Sequence[Decimal] | None = None,
) -> Rating:
    """Rate ``charge`` on a period's usage.

    standard, graduated, volume and package need ``quantity``; percentage needs
    ``events`` (possibly empty); graduated_percentage takes either the total
    amount as ``quantity`` or the ``events`` (summed). Negative or non-finite
    usage raises ``InvalidArgument``.
    """
    v = Violations()
    if quantity is not None:
        v.check(quantity.is_finite() and quantity >= 0, "quantity", "must not be negative")
    if events is not None:
        for i, amount in enumerate(events):
            v.check(amount.is_finite() and amount >= 0, f"events[{i}]", "must not be negative")
    if charge.model == "package":
        v.check(charge.package_size > 0, "package_size", "must be greater than 0")
    if charge.model == "percentage":
        v.check(events is not None, "events", "the percentage model rates per-event amounts")
    elif charge.model == "graduated_percentage":
        v.check(
            (quantity is None) != (events is None),
            "quantity",
            "give either the total amount (quantity) or the events",
        )
    else:
        v.check(quantity is not None, "quantity", f"the {charge.model} model rates a quantity")
        v.check(events is None, "events", f"the {charge.model} model rates a quantity, not events")
    v.raise_if_any()

    with localcontext(EXACT):
        if charge.model == "percentage":
            assert events is not None
            details = _rate_percentage(charge, events)
        else:
            if quantity is None:
                assert events is not None
                quantity = sum(events, ZERO)
            details = _RATERS[charge.model](charge, quantity)
        amount = sum((d.amount for d in details), ZERO)
        if charge.minimum_amount is not None and amount < charge.minimum_amount:
            shortfall = charge.minimum_amount - amount
            details.append(
                RatingDetail(
                    description=(
                        f"minimum commitment {decimal_text(charge.minimum_amount)}: true-up"
                    ),
                    amount=shortfall,
                )
            )
            amount += shortfall
    return Rating(amount=amount, currency=charge.currency, details=tuple(details))


def _bounds(lower: Decimal, upper: Decimal | None) -> str:
    if upper is None:
        return f"over {decimal_text(lower)}"
    if lower == 0:
        return f"0 to {decimal_text(upper)}"
    return f"over {decimal_text(lower)} up to {decimal_text(upper)}"


def _entered(tiers: Sequence[Tier], quantity: Decimal) -> list[tuple[int, Tier, Decimal, Decimal]]:
    """(1-based index, tier, lower bound, units inside) of every tier the quantity enters."""
    out = []
    lower = ZERO
    for i, tier in enumerate(tiers, 1):
        if quantity <= lower:
            break
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        out.append((i, tier, lower, top - lower))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return out


def _standard(charge: Charge, quantity: Decimal) -> list[RatingDetail]:
    return [
        RatingDetail(
            description=f"{decimal_text(quantity)} units at {decimal_text(charge.unit_amount)}",
            quantity=quantity,
            unit_amount=charge.unit_amount,
            amount=quantity * charge.unit_amount,
        )
    ]


def _graduated(charge: Charge, quantity: Decimal) -> list[RatingDetail]:
    return [
        RatingDetail(
            description=f"tier {i}: {_bounds(lower, tier.up_to)}",
            tier=i,
            quantity=units,
            unit_amount=tier.unit_amount,
            flat_amount=tier.flat_amount,
            amount=units * tier.unit_amount + tier.flat_amount,
        )
        for i, tier, lower, units in _entered(charge.tiers, quantity)
    ]


def _volume(charge: Charge, quantity: Decimal) -> list[RatingDetail]:
    entered = _entered(charge.tiers, quantity)
    if not entered:
        return []
    i, tier, lower, _ = entered[-1]
    return [
        RatingDetail(
            description=(
                f"tier {i} ({_bounds(lower, tier.up_to)}): all {decimal_text(quantity)} units"
            ),
            tier=i,
            quantity=quantity,
            unit_amount=tier.unit_amount,
            flat_amount=tier.flat_amount,
            amount=quantity * tier.unit_amount + tier.flat_amount,
        )
    ]


def package_blocks(charge: Charge, quantity: Decimal) -> Decimal:
    """Blocks charged for ``quantity``: every started block after the free units."""
    billable = max(quantity - charge.free_units, ZERO)
    with localcontext(EXACT):
        whole, rest = divmod(billable, charge.package_size)
    return whole + 1 if rest else whole


def _package(charge: Charge, quantity: Decimal) -> list[RatingDetail]:
    details = []
    free = min(quantity, charge.free_units)
    if free > 0:
        details.append(
            RatingDetail(description=f"{decimal_text(free)} free units", quantity=free, amount=ZERO)
        )
    blocks = package_blocks(charge, quantity)
    if blocks > 0:
        billable = quantity - free
        details.append(
            RatingDetail(
                description=(
                    f"{decimal_text(blocks)} packages of {decimal_text(charge.package_size)}"
                    f" units for {decimal_text(billable)} units"
                ),
                quantity=blocks,
                unit_amount=charge.package_amount,
                amount=blocks * charge.package_amount,
            )
        )
    return details


def _graduated_percentage(charge: Charge, total: Decimal) -> list[RatingDetail]:
    return [
        RatingDetail(
            description=f"tier {i}: {_bounds(lower, tier.up_to)}",
            tier=i,
            quantity=units,
            rate=tier.rate,
            flat_amount=tier.flat_amount,
            amount=units * tier.rate.scaleb(-2) + tier.flat_amount,
        )
        for i, tier, lower, units in _entered(charge.tiers, total)
    ]


@dataclass(frozen=True)
class EventFee:
    """How one event of the percentage model was charged (exact amounts)."""

    amount: Decimal  # the event's amount
    free_amount: Decimal  # part covered by the free allowance
    fee: Decimal  # final fee after min/max; 0 when entirely free
    uncapped_fee: Decimal  # rate x chargeable + fixed, before min/max
    free: bool = False  # entirely covered by the free allowance


def percentage_fees(charge: Charge, events: Sequence[Decimal]) -> list[EventFee]:
    """Per-event fees of the percentage model, in event order.

    Free allowance: the first ``free_units_per_events`` events and/or the first
    ``free_units_per_total_aggregation`` of amount are free; with both set,
    whichever runs out first ends the free part. An event is free while the
    event allowance has an event left and the amount allowance covers all of
    it. An event the amount allowance covers only partly is charged (rate on
    the uncovered part, the fixed fee, then min/max) and ends the free part.
    Free events pay nothing (no fixed fee, no per-transaction minimum).
    """
    with localcontext(EXACT):
        return _percentage_fees(charge, events)


def _percentage_fees(charge: Charge, events: Sequence[Decimal]) -> list[EventFee]:
    rate = charge.rate.scaleb(-2)
    by_events = charge.free_units_per_events
    by_amount = charge.free_units_per_total_aggregation
    has_allowance = by_events > 0 or by_amount > 0
    free_open = has_allowance
    events_left = by_events
    amount_left = by_amount
    out: list[EventFee] = []
    for amount in events:
        free = ZERO
        if free_open:
            if by_events > 0 and events_left == 0:
                free_open = False
            elif by_amount > 0 and amount > amount_left:
                free = amount_left
                free_open = False
            else:
                out.append(EventFee(amount, amount, ZERO, ZERO, free=True))
                events_left -= 1 if by_events > 0 else 0
                amount_left -= amount if by_amount > 0 else 0
                if (by_events > 0 and events_left == 0) or (by_amount > 0 and amount_left == 0):
                    free_open = False
                continue
        uncapped = (amount - free) * rate + charge.fixed_amount
        fee = uncapped
        if charge.per_transaction_min_amount is not None:
            fee = max(fee, charge.per_transaction_min_amount)
        if charge.per_transaction_max_amount is not None:
            fee = min(fee, charge.per_transaction_max_amount)
        out.append(EventFee(amount, free, fee, uncapped))
    return out


def _rate_percentage(charge: Charge, events: Sequence[Decimal]) -> list[RatingDetail]:
    """Bounded breakdown (never one row per event): free part, rate, fixed fees, min/max."""
    fees = percentage_fees(charge, events)
    details: list[RatingDetail] = []
    free_events = [f for f in fees if f.free]
    charged = [f for f in fees if not f.free]
    free_total = sum((f.free_amount for f in fees), ZERO)
    if free_total > 0 or free_events:
        details.append(
            RatingDetail(
                description=(
                    f"free allowance: {len(free_events)} events,"
                    f" {decimal_text(free_total)} of amount"
                ),
                quantity=free_total,
                amount=ZERO,
            )
        )
    chargeable = sum((f.amount - f.free_amount for f in charged), ZERO)
    if charged:
        details.append(
            RatingDetail(
                description=f"{decimal_text(charge.rate)}% of {decimal_text(chargeable)}",
                quantity=chargeable,
                rate=charge.rate,
                amount=chargeable * charge.rate.scaleb(-2),
            )
        )
        if charge.fixed_amount > 0:
            details.append(
                RatingDetail(
                    description=(
                        f"fixed fee on {len(charged)} transactions at"
                        f" {decimal_text(charge.fixed_amount)}"
                    ),
                    quantity=Decimal(len(charged)),
                    unit_amount=charge.fixed_amount,
                    amount=len(charged) * charge.fixed_amount,
                )
            )
    raised = [f for f in charged if f.fee > f.uncapped_fee]
    capped = [f for f in charged if f.fee < f.uncapped_fee]
    if raised:
        details.append(
            RatingDetail(
                description=(
                    "per-transaction minimum"
                    f" {decimal_text(charge.per_transaction_min_amount or ZERO)}"
                    f" on {len(raised)} transactions"
                ),
                quantity=Decimal(len(raised)),
                amount=sum((f.fee - f.uncapped_fee for f in raised), ZERO),
            )
        )
    if capped:
        details.append(
            RatingDetail(
                description=(
                    "per-transaction maximum"
                    f" {decimal_text(charge.per_transaction_max_amount or ZERO)}"
                    f" on {len(capped)} transactions"
                ),
                quantity=Decimal(len(capped)),
                amount=sum((f.fee - f.uncapped_fee for f in capped), ZERO),
            )
        )
    return details


_RATERS = {
    "standard": _standard,
    "graduated": _graduated,
    "volume": _volume,
    "package": _package,
    "graduated_percentage": _graduated_percentage,
}

__all__ = ["EVENT_MODELS", "EventFee", "Rating", "RatingDetail", "Usage", "percentage_fees", "rate"]
