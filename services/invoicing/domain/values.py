"""Values of the invoicing domain: states, kinds, lines, plans. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class InvoiceState(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class InvoiceReason(StrEnum):
    SUBSCRIPTION_START = "subscription_start"
    PERIOD_CLOSE = "period_close"
    PLAN_CHANGE = "plan_change"
    CANCELLATION = "cancellation"
    MANUAL = "manual"


class LineKind(StrEnum):
    BASE_FEE = "base_fee"
    USAGE = "usage"
    PRORATION_CREDIT = "proration_credit"
    MINIMUM_COMMITMENT = "minimum_commitment"
    ADJUSTMENT = "adjustment"
    TAX = "tax"


class SegmentKind(StrEnum):
    TRIAL = "trial"
    ACTIVE = "active"
    PAUSED = "paused"


class Settlement(StrEnum):
    REDUCE_AMOUNT_DUE = "reduce_amount_due"
    CREDIT_BALANCE = "credit_balance"
    REFUND = "refund"


class Interval(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


@dataclass(frozen=True)
class Plan:
    """A published package version as invoicing prices it (projection)."""

    package_version_id: str
    package_code: str
    name: str
    currency_code: str
    interval: Interval
    base_fee: Decimal
    in_advance: bool
    trial_days: int


@dataclass(frozen=True)
class Segment:
    package_version_id: str
    kind: SegmentKind
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


@dataclass
class Line:
    """One invoice line; ``amount_minor`` is ``unrounded`` rounded once."""

    line_id: str
    kind: LineKind
    description: str
    amount_minor: int
    unrounded: Decimal
    quantity: Decimal = Decimal(1)
    unit_amount: Decimal | None = None
    charge_id: str = ""
    metric_code: str = ""
    package_version_id: str = ""
    period_start: datetime | None = None
    period_end: datetime | None = None
    seconds_used: int = 0
    seconds_in_period: int = 0
    full_amount: Decimal | None = None
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prorated(self) -> bool:
        return self.seconds_in_period > 0 and self.seconds_used != self.seconds_in_period
