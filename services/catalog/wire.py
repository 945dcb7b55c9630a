"""Protobuf <-> domain: the catalog's resources and inputs on the wire.

Shared by the gRPC adapter (requests and responses) and the handlers (event
payloads), so a resource looks the same in a response and in an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from tally.catalog.v1 import resources_pb2 as pb

from services.catalog.domain.drafts import (
    ChargeInput,
    FeatureLimitInput,
    VersionInput,
)
from services.catalog.domain.metrics import Metric, MetricInput
from services.catalog.domain.packages import (
    Charge,
    FeatureLimit,
    Package,
    PackageVersion,
)
from services.catalog.domain.pricing import ChargeModel, model_of, properties_dict
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
from services.kit.protoconv import to_timestamp

E = TypeVar("E", bound=Enum)

AGGREGATIONS = {
    pb.AGGREGATION_COUNT: Aggregation.COUNT,
    pb.AGGREGATION_SUM: Aggregation.SUM,
    pb.AGGREGATION_MAX: Aggregation.MAX,
    pb.AGGREGATION_UNIQUE_COUNT: Aggregation.UNIQUE_COUNT,
    pb.AGGREGATION_LATEST: Aggregation.LATEST,
}
ROUNDINGS = {
    pb.ROUNDING_FUNCTION_ROUND: RoundingFunction.ROUND,
    pb.ROUNDING_FUNCTION_CEIL: RoundingFunction.CEIL,
    pb.ROUNDING_FUNCTION_FLOOR: RoundingFunction.FLOOR,
}
METRIC_STATES = {
    pb.METRIC_STATE_ACTIVE: MetricState.ACTIVE,
    pb.METRIC_STATE_ARCHIVED: MetricState.ARCHIVED,
}
INTERVALS = {
    pb.BILLING_INTERVAL_WEEKLY: BillingInterval.WEEKLY,
    pb.BILLING_INTERVAL_MONTHLY: BillingInterval.MONTHLY,
    pb.BILLING_INTERVAL_YEARLY: BillingInterval.YEARLY,
}
TIMINGS = {
    pb.BASE_FEE_TIMING_IN_ADVANCE: BaseFeeTiming.IN_ADVANCE,
    pb.BASE_FEE_TIMING_IN_ARREARS: BaseFeeTiming.IN_ARREARS,
}
PACKAGE_STATES = {
    pb.PACKAGE_STATE_DRAFT: PackageState.DRAFT,
    pb.PACKAGE_STATE_ACTIVE: PackageState.ACTIVE,
    pb.PACKAGE_STATE_ARCHIVED: PackageState.ARCHIVED,
}
VERSION_STATES = {
    pb.PACKAGE_VERSION_STATE_DRAFT: VersionState.DRAFT,
    pb.PACKAGE_VERSION_STATE_PUBLISHED: VersionState.PUBLISHED,
}
ENFORCEMENTS = {
    pb.LIMIT_ENFORCEMENT_HARD: LimitEnforcement.HARD,
    pb.LIMIT_ENFORCEMENT_SOFT: LimitEnforcement.SOFT,
}


def _reverse(mapping: Mapping[Any, E]) -> dict[E, Any]:
    return {value: key for key, value in mapping.items()}


_AGGREGATION_OUT = _reverse(AGGREGATIONS)
_ROUNDING_OUT = _reverse(ROUNDINGS)
_METRIC_STATE_OUT = _reverse(METRIC_STATES)
_INTERVAL_OUT = _reverse(INTERVALS)
_TIMING_OUT = _reverse(TIMINGS)
_PACKAGE_STATE_OUT = _reverse(PACKAGE_STATES)
_VERSION_STATE_OUT = _reverse(VERSION_STATES)
_ENFORCEMENT_OUT = _reverse(ENFORCEMENTS)

# Unknown enum numbers (a newer client) read as "unset": the domain then names
# the field as required, which is the honest answer for a value it cannot use.


def metric_input(message: pb.BillableMetric) -> MetricInput:
    return MetricInput(
        code=message.code,
        name=message.name,
        description=message.description,
        aggregation=AGGREGATIONS.get(message.aggregation),
        property_key=message.property_key,
        rounding_function=ROUNDINGS.get(message.rounding.function),
        rounding_precision=message.rounding.precision,
        aliases=tuple(message.aliases),
    )


def version_input(message: pb.PackageVersion) -> VersionInput:
    return VersionInput(
        name=message.name,
        description=message.description,
        currency_code=message.currency_code,
        billing_interval=INTERVALS.get(message.billing_interval),
        base_fee_amount=message.base_fee_amount,
        base_fee_timing=TIMINGS.get(message.base_fee_timing),
        trial_days=message.trial_days,
        charges=tuple(_charge_input(c) for c in message.charges),
        feature_limits=tuple(
            FeatureLimitInput(
                feature_key=f.feature_key,
                unlimited=f.unlimited,
                limit=f.limit,
                enforcement=ENFORCEMENTS.get(f.enforcement),
                resets_each_period=f.resets_each_period,
                metric_code=f.metric_code,
            )
            for f in message.feature_limits
        ),
    )


def _charge_input(message: pb.Charge) -> ChargeInput:
    which = message.WhichOneof("properties")
    properties: dict[str, Any] = {}
    if which is not None:
        properties = json_format.MessageToDict(
            getattr(message, which),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    return ChargeInput(
        metric_id=message.metric_id,
        display_name=message.display_name,
        model=ChargeModel(which) if which is not None else None,
        properties=properties,
        minimum_amount=message.minimum_amount if message.HasField("minimum_amount") else None,
    )


def metric_message(metric: Metric) -> pb.BillableMetric:
    d = metric.definition
    message = pb.BillableMetric(
        metric_id=metric.metric_id,
        code=metric.code,
        name=d.name,
        description=d.description,
        aggregation=_AGGREGATION_OUT[d.aggregation],
        property_key=d.property_key,
        state=_METRIC_STATE_OUT[metric.state],
        in_use=metric.in_use,
        create_time=to_timestamp(metric.create_time),
        update_time=to_timestamp(metric.update_time),
        archive_time=to_timestamp(metric.archive_time),
        aliases=d.aliases,
    )
    if d.rounding is not None:
        message.rounding.function = _ROUNDING_OUT[d.rounding.function]
        message.rounding.precision = d.rounding.precision
    return message


def _charge_message(charge: Charge) -> pb.Charge:
    message = pb.Charge(
        charge_id=charge.charge_id,
        metric_id=charge.metric_id,
        metric_code=charge.metric_code,
        display_name=charge.display_name,
    )
    if charge.minimum_amount is not None:
        message.minimum_amount = decimal_text(charge.minimum_amount)
    model = model_of(charge.properties)
    target: Message = getattr(message, model.value)
    target.SetInParent()  # selects the oneof member even if every field is default
    json_format.ParseDict(properties_dict(charge.properties), target)
    return message


def _limit_message(limit: FeatureLimit) -> pb.FeatureLimit:
    return pb.FeatureLimit(
        feature_key=limit.feature_key,
        unlimited=limit.limit is None,
        limit="" if limit.limit is None else decimal_text(limit.limit),
        enforcement=_ENFORCEMENT_OUT[limit.enforcement],
        resets_each_period=limit.resets_each_period,
        metric_code=limit.metric_code,
    )


def version_message(version: PackageVersion) -> pb.PackageVersion:
    content = version.content
    return pb.PackageVersion(
        package_version_id=version.package_version_id,
        package_id=version.package_id,
        package_code=version.package_code,
        version=version.version,
        state=_VERSION_STATE_OUT[version.state],
        name=content.name,
        description=content.description,
        currency_code=content.currency_code,
        billing_interval=_INTERVAL_OUT[content.billing_interval],
        base_fee_amount=decimal_text(content.base_fee_amount),
        base_fee_timing=_TIMING_OUT[content.base_fee_timing],
        trial_days=content.trial_days,
        charges=[_charge_message(c) for c in content.charges],
        feature_limits=[_limit_message(f) for f in content.feature_limits],
        create_time=to_timestamp(version.create_time),
        update_time=to_timestamp(version.update_time),
        publish_time=to_timestamp(version.publish_time),
    )


def package_message(
    package: Package, published: PackageVersion | None, draft: PackageVersion | None
) -> pb.Package:
    message = pb.Package(
        package_id=package.package_id,
        code=package.code,
        state=_PACKAGE_STATE_OUT[package.state],
        create_time=to_timestamp(package.create_time),
        update_time=to_timestamp(package.update_time),
        archive_time=to_timestamp(package.archive_time),
    )
    if published is not None:
        message.published_version.CopyFrom(version_message(published))
    if draft is not None:
        message.draft_version.CopyFrom(version_message(draft))
    return message
