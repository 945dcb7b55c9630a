"""Protobuf <-> rating engine. The only module of ``rating`` that imports protobuf.

- ``charge_from_proto``: a catalog ``Charge`` (from ``PackagePublishedEvent`` or a
  request) -> ``Charge``, validated; violations name proto paths
  (``charge.graduated.tiers[2].up_to``).
- ``rating_steps`` / ``rating_to_proto``: a ``Rating`` -> ``RatingStep``s (for
  invoice lines) / a whole ``PreviewChargeResponse``.
- ``preview_charge``: the whole PreviewCharge RPC minus the servicer, so the
  servicer method is one line.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.invoicing.v1 import invoicing_pb2
from tally.invoicing.v1 import resources_pb2 as invoicing_resources_pb2

from services.invoicing.rating.charges import Charge, parse_decimal
from services.invoicing.rating.engine import Rating, rate
from services.invoicing.rating.money import decimal_text, format_amount
from services.kit.errors import FieldViolation, InvalidArgument, Violations


def _tier_dict(tier: Any, with_rate: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"flat_amount": tier.flat_amount}
    if tier.HasField("up_to"):
        out["up_to"] = tier.up_to
    if with_rate:
        out["rate"] = tier.rate
    else:
        out["unit_amount"] = tier.unit_amount
    return out


def charge_json(charge: catalog_pb2.Charge, currency: str) -> dict[str, Any]:
    """The CHARGE.json mapping of a catalog ``Charge`` (what ``tally rate`` reads)."""
    model = charge.WhichOneof("properties")
    out: dict[str, Any] = {"model": model, "currency": currency}
    if charge.HasField("minimum_amount"):
        out["minimum_amount"] = charge.minimum_amount
    if model == "standard":
        out["unit_amount"] = charge.standard.unit_amount
    elif model in ("graduated", "volume"):
        tiers = getattr(charge, model).tiers
        out["tiers"] = [_tier_dict(t, with_rate=False) for t in tiers]
    elif model == "graduated_percentage":
        out["tiers"] = [_tier_dict(t, with_rate=True) for t in charge.graduated_percentage.tiers]
    elif model == "package":
        pkg = charge.package
        out.update(
            package_size=pkg.package_size,
            package_amount=pkg.package_amount,
            free_units=pkg.free_units,
        )
    elif model == "percentage":
        p = charge.percentage
        out.update(
            rate=p.rate,
            fixed_amount=p.fixed_amount,
            free_units_per_events=p.free_units_per_events,
            free_units_per_total_aggregation=p.free_units_per_total_aggregation,
        )
        if p.HasField("per_transaction_min_amount"):
            out["per_transaction_min_amount"] = p.per_transaction_min_amount
        if p.HasField("per_transaction_max_amount"):
            out["per_transaction_max_amount"] = p.per_transaction_max_amount
    return out


def _proto_field(name: str, model: str | None, prefix: str) -> str:
    if name == "currency":
        return "currency_code"
    if name == "model":
        return f"{prefix}.properties"
    if name == "minimum_amount" or model is None:
        return f"{prefix}.{name}"
    return f"{prefix}.{model}.{name}" if name else f"{prefix}.{model}"


def charge_from_proto(
    charge: catalog_pb2.Charge, currency: str, *, prefix: str = "charge"
) -> Charge:
    """A validated ``Charge``; ``InvalidArgument`` naming proto fields under ``prefix``."""
    model = charge.WhichOneof("properties")
    if model is None:
        raise InvalidArgument.of(
            [FieldViolation(f"{prefix}.properties", "exactly one charge model is required")]
        )
    try:
        return Charge.from_json(charge_json(charge, currency))
    except InvalidArgument as exc:
        raise InvalidArgument.of(
            FieldViolation(_proto_field(v.field, model, prefix), v.description)
            for v in exc.violations
        ) from None


def rating_steps(r: Rating) -> list[invoicing_resources_pb2.RatingStep]:
    """The breakdown of ``r`` as ``RatingStep``s (exact decimal strings; empty = n/a)."""

    def text(value: Decimal | None) -> str:
        return "" if value is None else decimal_text(value)

    return [
        invoicing_resources_pb2.RatingStep(
            description=d.description,
            tier=d.tier,
            quantity=text(d.quantity),
            unit_amount=text(d.unit_amount),
            flat_amount=text(d.flat_amount),
            rate=text(d.rate),
            amount=decimal_text(d.amount),
        )
        for d in r.details
    ]


def rating_to_proto(r: Rating) -> invoicing_pb2.PreviewChargeResponse:
    minor = r.amount_minor
    return invoicing_pb2.PreviewChargeResponse(
        amount=format_amount(minor, r.currency),
        amount_minor=minor,
        currency_code=r.currency,
        unrounded_amount=decimal_text(r.amount),
        details=rating_steps(r),
    )


def preview_charge(
    request: invoicing_pb2.PreviewChargeRequest,
) -> invoicing_pb2.PreviewChargeResponse:
    """PreviewCharge: validate, rate, answer. Raises ``InvalidArgument`` with every violation."""
    v = Violations()
    charge: Charge | None = None
    if not request.HasField("charge"):
        v.add("charge", "is required")
    else:
        try:
            charge = charge_from_proto(request.charge, request.currency_code)
        except InvalidArgument as exc:
            v.items.extend(exc.violations)
    quantity = None
    if request.quantity:
        quantity = parse_decimal(request.quantity, "quantity", v, required=True)
    events = [
        parse_decimal(x, f"event_values[{i}]", v, required=True)
        for i, x in enumerate(request.event_values)
    ]
    v.raise_if_any()
    assert charge is not None
    amounts = [e for e in events if e is not None]
    try:
        by_events = charge.model == "graduated_percentage" and quantity is None
        if charge.model == "percentage" or by_events:
            rating = rate(charge, events=amounts)
        else:
            if quantity is None:
                raise InvalidArgument.field(
                    "quantity", f"is required for the {charge.model} model (a decimal string)"
                )
            rating = rate(charge, quantity=quantity)
    except InvalidArgument as exc:
        raise InvalidArgument.of(
            FieldViolation("event_values" if f.field == "events" else f.field, f.description)
            for f in exc.violations
        ) from None
    return rating_to_proto(rating)
