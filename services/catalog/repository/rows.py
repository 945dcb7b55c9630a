"""Rows <-> domain values for the catalog's tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Row

from services.catalog.domain.metrics import Metric, MetricDefinition, Rounding
from services.catalog.domain.packages import (
    Charge,
    FeatureLimit,
    Package,
    PackageVersion,
    VersionContent,
)
from services.catalog.domain.pricing import ChargeModel, parse_properties
from services.catalog.domain.values import (
    Aggregation,
    BaseFeeTiming,
    BillingInterval,
    LimitEnforcement,
    MetricState,
    PackageState,
    RoundingFunction,
    VersionState,
    decimal_text,
)
from services.kit.errors import Violations


def metric(row: Row[Any]) -> Metric:
    rounding = (
        Rounding(RoundingFunction(row.rounding_function), int(row.rounding_precision or 0))
        if row.rounding_function
        else None
    )
    return Metric(
        metric_id=row.metric_id,
        code=row.code,
        definition=MetricDefinition(
            name=row.name,
            description=row.description,
            aggregation=Aggregation(row.aggregation),
            property_key=row.property_key,
            rounding=rounding,
            aliases=tuple(row.aliases),
        ),
        state=MetricState(row.state),
        in_use=bool(row.in_use),
        create_time=row.create_time,
        update_time=row.update_time,
        archive_time=row.archive_time,
    )


def metric_values(metric: Metric) -> dict[str, Any]:
    d = metric.definition
    return {
        "metric_id": metric.metric_id,
        "code": metric.code,
        "name": d.name,
        "description": d.description,
        "aggregation": d.aggregation.value,
        "property_key": d.property_key,
        "rounding_function": d.rounding.function.value if d.rounding else None,
        "rounding_precision": d.rounding.precision if d.rounding else None,
        "state": metric.state.value,
        "create_time": metric.create_time,
        "update_time": metric.update_time,
        "archive_time": metric.archive_time,
        "aliases": list(d.aliases),
    }


def package(row: Row[Any]) -> Package:
    return Package(
        package_id=row.package_id,
        code=row.code,
        state=PackageState(row.state),
        published_version_id=row.published_version_id,
        create_time=row.create_time,
        update_time=row.update_time,
        archive_time=row.archive_time,
    )


def package_values(package: Package) -> dict[str, Any]:
    return {
        "package_id": package.package_id,
        "code": package.code,
        "state": package.state.value,
        "published_version_id": package.published_version_id,
        "create_time": package.create_time,
        "update_time": package.update_time,
        "archive_time": package.archive_time,
    }


def charge(row: Row[Any]) -> Charge:
    # Stored properties were validated when written; a violation here would be
    # a bug or a hand-edited row, and must not pass silently.
    v = Violations()
    properties = parse_properties(ChargeModel(row.model), row.properties, "properties", v)
    if properties is None:
        raise ValueError(f"charge {row.charge_id} has unreadable properties: {v.items}")
    return Charge(
        charge_id=row.charge_id,
        metric_id=row.metric_id,
        metric_code=row.metric_code,
        display_name=row.display_name,
        properties=properties,
        minimum_amount=row.minimum_amount,
    )


def limit_dict(limit: FeatureLimit) -> dict[str, Any]:
    return {
        "feature_key": limit.feature_key,
        "limit": None if limit.limit is None else decimal_text(limit.limit),
        "enforcement": limit.enforcement.value,
        "resets_each_period": limit.resets_each_period,
        "metric_code": limit.metric_code,
    }


def limit(raw: dict[str, Any]) -> FeatureLimit:
    return FeatureLimit(
        feature_key=raw["feature_key"],
        limit=None if raw["limit"] is None else Decimal(raw["limit"]),
        enforcement=LimitEnforcement(raw["enforcement"]),
        resets_each_period=bool(raw["resets_each_period"]),
        metric_code=raw["metric_code"],
    )


def version_values(version: PackageVersion) -> dict[str, Any]:
    content = version.content
    return {
        "package_version_id": version.package_version_id,
        "package_id": version.package_id,
        "version": version.version,
        "state": version.state.value,
        "name": content.name,
        "description": content.description,
        "currency_code": content.currency_code,
        "billing_interval": content.billing_interval.value,
        "base_fee_amount": content.base_fee_amount,
        "base_fee_timing": content.base_fee_timing.value,
        "trial_days": content.trial_days,
        "feature_limits": [limit_dict(f) for f in content.feature_limits],
        "create_time": version.create_time,
        "update_time": version.update_time,
        "publish_time": version.publish_time,
    }


def version(row: Row[Any], charges: tuple[Charge, ...]) -> PackageVersion:
    return PackageVersion(
        package_version_id=row.package_version_id,
        package_id=row.package_id,
        package_code=row.package_code,
        version=row.version,
        state=VersionState(row.state),
        content=VersionContent(
            name=row.name,
            description=row.description,
            currency_code=row.currency_code,
            billing_interval=BillingInterval(row.billing_interval),
            base_fee_amount=row.base_fee_amount,
            base_fee_timing=BaseFeeTiming(row.base_fee_timing),
            trial_days=row.trial_days,
            charges=charges,
            feature_limits=tuple(limit(f) for f in row.feature_limits),
        ),
        create_time=row.create_time,
        update_time=row.update_time,
        publish_time=row.publish_time,
    )
