"""Commands the use cases take and the outcomes they return: plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.subscriptions import domain as d

# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class CreateSubscription:
    org_id: str
    package_id: str
    package_version_id: str = ""
    trial_days: int | None = None
    anchor: d.Anchor = d.Anchor.CALENDAR
    start_time: datetime | None = None
    allow_multiple: bool = False
    external_id: str = ""


@dataclass(frozen=True)
class ChangePlan:
    subscription_id: str
    org_id: str = ""
    package_id: str = ""
    package_version_id: str = ""
    timing: d.Timing = d.Timing.AUTOMATIC


@dataclass(frozen=True)
class CancelSubscription:
    subscription_id: str
    org_id: str = ""
    timing: d.Timing = d.Timing.PERIOD_END
    reason: str = ""


@dataclass(frozen=True)
class PauseOrResume:
    subscription_id: str
    org_id: str = ""


@dataclass(frozen=True)
class CancelSchedule:
    schedule_id: str
    org_id: str = ""


@dataclass(frozen=True)
class ClosePeriods:
    now: datetime | None = None
    max_periods: int | None = None


@dataclass(frozen=True)
class CheckEntitlement:
    org_id: str
    feature_key: str
    quantity: Decimal | None = None


@dataclass(frozen=True)
class RecordPackageVersion:
    plan: d.Plan
    name: str
    base_fee_timing: str
    metric_codes: tuple[str, ...]
    limits: tuple[d.FeatureLimit, ...]
    publish_time: datetime | None


@dataclass(frozen=True)
class ArchivePackage:
    package_id: str
    package_code: str


@dataclass(frozen=True)
class RecordUsage:
    subscription_id: str
    org_id: str
    metric_code: str
    period_start: datetime
    period_end: datetime
    value: Decimal
    revision: int


@dataclass(frozen=True)
class PaymentOutcome:
    subscription_id: str
    succeeded: bool
    final_attempt: bool = False


# ---------------------------------------------------------------- outcomes


@dataclass
class ChangeOutcome:
    subscription: d.Subscription
    direction: d.Direction
    effective_time: datetime
    schedule: d.Schedule | None
    previous_package_version_id: str = ""


@dataclass
class CloseOutcome:
    closed: list[d.ClosedPeriod] = field(default_factory=list)
    trials_ended: int = 0
    schedules_applied: int = 0
    more_due: bool = False
    plans: dict[str, d.Plan] = field(default_factory=dict)


@dataclass
class PeriodsPage:
    open_period: d.Subscription | None
    closed: list[d.ClosedPeriod]
    plans: dict[str, d.Plan]
    next_after: list[Any] | None


@dataclass(frozen=True)
class EntitlementOutcome:
    decision: d.Decision
    subscription_id: str
