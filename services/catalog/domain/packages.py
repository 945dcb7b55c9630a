"""Packages (plans), their versions, charges and feature limits.

A package's content lives in its versions. There is at most one draft
(``drafts.py`` validates what a caller sends for it); published versions never
change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.catalog.domain import reasons
from services.catalog.domain.pricing import ChargeProperties
from services.catalog.domain.values import (
    BaseFeeTiming,
    BillingInterval,
    LimitEnforcement,
    MetricState,
    PackageState,
    VersionState,
)
from services.kit.errors import FailedPrecondition


@dataclass(frozen=True)
class MetricRef:
    """What a package needs to know about a metric it refers to."""

    metric_id: str
    code: str
    name: str
    state: MetricState


@dataclass(frozen=True)
class Charge:
    charge_id: str
    metric_id: str
    metric_code: str
    display_name: str
    properties: ChargeProperties
    minimum_amount: Decimal | None


@dataclass(frozen=True)
class FeatureLimit:
    feature_key: str
    limit: Decimal | None  # None = unlimited
    enforcement: LimitEnforcement
    resets_each_period: bool
    metric_code: str


@dataclass(frozen=True)
class VersionContent:
    name: str
    description: str
    currency_code: str
    billing_interval: BillingInterval
    base_fee_amount: Decimal
    base_fee_timing: BaseFeeTiming
    trial_days: int
    charges: tuple[Charge, ...]
    feature_limits: tuple[FeatureLimit, ...]

    def metric_ids(self) -> set[str]:
        return {c.metric_id for c in self.charges}

    def limit_metric_codes(self) -> set[str]:
        return {f.metric_code for f in self.feature_limits if f.metric_code}


@dataclass(frozen=True)
class PackageVersion:
    package_version_id: str
    package_id: str
    package_code: str
    version: int
    state: VersionState
    content: VersionContent
    create_time: datetime
    update_time: datetime
    publish_time: datetime | None


@dataclass(frozen=True)
class Package:
    package_id: str
    code: str
    state: PackageState
    published_version_id: str | None
    create_time: datetime
    update_time: datetime
    archive_time: datetime | None


def ensure_not_archived(package: Package) -> None:
    if package.state is PackageState.ARCHIVED:
        raise FailedPrecondition(
            f"package {package.code!r} is archived; its versions can be read but not changed",
            reason=reasons.PACKAGE_ARCHIVED,
            metadata={"package_id": package.package_id, "state": package.state.value},
        )


def ensure_publishable(package: Package, draft: PackageVersion | None) -> PackageVersion:
    ensure_not_archived(package)
    if draft is None:
        raise FailedPrecondition(
            f"package {package.code!r} has no draft to publish; edit it first",
            reason=reasons.NO_DRAFT_VERSION,
            metadata={"package_id": package.package_id, "state": package.state.value},
        )
    return draft


def ensure_metrics_active(draft: PackageVersion, metrics: Mapping[str, MetricRef]) -> None:
    """A metric archived after the draft was saved makes the draft unpublishable.

    ``metrics`` holds the draft's metrics keyed by id (charges) and by code
    (feature limits).
    """
    archived = sorted(
        m.code
        for key in (*draft.content.metric_ids(), *draft.content.limit_metric_codes())
        if (m := metrics.get(key)) is not None and m.state is MetricState.ARCHIVED
    )
    if archived:
        raise FailedPrecondition(
            f"the draft uses archived metrics ({', '.join(archived)}); update the draft first",
            reason=reasons.DRAFT_USES_ARCHIVED_METRIC,
            metadata={"package_id": draft.package_id, "metrics": ",".join(archived)},
        )
