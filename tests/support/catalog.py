"""Builders of catalog requests for tests (catalog's own and, later, its consumers')."""

from __future__ import annotations

from typing import Any

from tally.catalog.v1 import catalog_pb2 as catalog_api_pb2
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


async def publish_per_call_package(
    catalog_api: Any,
    *,
    metric_code: str = "api_calls",
    metric_name: str = "API calls",
    package_code: str = "starter",
    unit_amount: str = "0.5",
    metric_request_id: str = "",
    timeout: float = 10.0,
    **version_fields: object,
) -> tuple[pb.BillableMetric, pb.Package]:
    """A count metric and a published monthly package (10.00 in advance plus
    ``unit_amount`` per event) through the catalog's API: the set-up every
    cross-service test starts from."""
    made = await catalog_api.CreateMetric(
        catalog_api_pb2.CreateMetricRequest(
            metric=pb.BillableMetric(
                code=metric_code,
                name=metric_name,
                aggregation=pb.AGGREGATION_COUNT,
            ),
            request_id=metric_request_id,
        ),
        timeout=timeout,
    )
    draft = pb.PackageVersion(
        **{
            "name": "Starter",
            "currency_code": "USD",
            "billing_interval": pb.BILLING_INTERVAL_MONTHLY,
            "base_fee_amount": "10.00",
            "base_fee_timing": pb.BASE_FEE_TIMING_IN_ADVANCE,
            "charges": [
                pb.Charge(
                    metric_id=made.metric.metric_id,
                    standard=pb.StandardProperties(unit_amount=unit_amount),
                )
            ],
            **version_fields,
        }
    )
    created = await catalog_api.CreatePackage(
        catalog_api_pb2.CreatePackageRequest(code=package_code, draft=draft), timeout=timeout
    )
    await catalog_api.PublishPackage(
        catalog_api_pb2.PublishPackageRequest(package_id=created.package.package_id),
        timeout=timeout,
    )
    return made.metric, created.package
