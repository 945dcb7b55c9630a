"""Domain events: what happened, each with the subscription right after it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from services.subscriptions.domain.values import ClosedPeriod, Direction, Kind, Timing

if TYPE_CHECKING:
    from services.subscriptions.domain.model import Subscription


@dataclass(frozen=True)
class Created:
    subscription: Subscription


@dataclass(frozen=True)
class Changed:
    subscription: Subscription
    previous_package_version_id: str
    direction: Direction
    timing: Timing
    effective_time: datetime


@dataclass(frozen=True)
class Canceled:
    subscription: Subscription
    timing: Timing
    effective_time: datetime
    reason: str


@dataclass(frozen=True)
class Paused:
    subscription: Subscription
    at: datetime


@dataclass(frozen=True)
class Resumed:
    subscription: Subscription
    at: datetime


@dataclass(frozen=True)
class TrialEnded:
    subscription: Subscription
    at: datetime


@dataclass(frozen=True)
class PeriodClosed:
    subscription: Subscription
    period: ClosedPeriod
    ended: bool
    next_start: datetime | None
    next_end: datetime | None
    next_package_version_id: str
    next_kind: Kind | None


@dataclass(frozen=True)
class Renewed:
    subscription: Subscription
    start: datetime
    end: datetime


@dataclass(frozen=True)
class PastDue:
    subscription: Subscription
    at: datetime


@dataclass(frozen=True)
class Recovered:
    subscription: Subscription
    at: datetime


DomainEvent = (
    Created
    | Changed
    | Canceled
    | Paused
    | Resumed
    | TrialEnded
    | PeriodClosed
    | Renewed
    | PastDue
    | Recovered
)
