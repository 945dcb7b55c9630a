"""Builders of catalog requests for tests (catalog's own and, later, its consumers')."""

from __future__ import annotations

from tally.catalog.v1 import resources_pb2 as pb


def metric(code: str, aggregation: int = pb.AGGREGATION_SUM, **fields: object) -> pb.BillableMetric:
    values: dict[str, object] = {
        "code": code,
        "name": code.replace("_", " ").title(),
        "aggregation": aggregation,
        "property_key": "" if aggregation == pb.AGGREGATION_COUNT else "value",
    }
    values.update(fields)
    return pb.BillableMetric(**values)


def tiers(*bounds: tuple[str | None, str, str]) -> list[pb.Tier]:
    return [
        pb.Tier(unit_amount=unit, flat_amount=flat)
        if up_to is None
        else pb.Tier(up_to=up_to, unit_amount=unit, flat_amount=flat)
        for up_to, unit, flat in bounds
    ]


def version(name: str = "Growth", **fields: object) -> pb.PackageVersion:
    values: dict[str, object] = {
        "name": name,
        "currency_code": "USD",
        "billing_interval": pb.BILLING_INTERVAL_MONTHLY,
        "base_fee_amount": "49.00",
        "base_fee_timing": pb.BASE_FEE_TIMING_IN_ADVANCE,
        "trial_days": 14,
    }
    values.update(fields)
    return pb.PackageVersion(**values)
