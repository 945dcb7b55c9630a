"""Values of the subscriptions domain: states, plans, marks, segments, schedules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from services.subscriptions.domain.periods import Interval, price_per_day


class State(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"


# The only legal transitions; everything else is FAILED_PRECONDITION.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.TRIALING: frozenset({State.ACTIVE, State.CANCELED}),
    State.ACTIVE: frozenset({State.PAST_DUE, State.PAUSED, State.CANCELED}),
    State.PAST_DUE: frozenset({State.ACTIVE, State.CANCELED}),
    State.PAUSED: frozenset({State.ACTIVE}),
    State.CANCELED: frozenset(),
}

# States in which the organisation is entitled to its plan.
ENTITLED_STATES = (State.TRIALING, State.ACTIVE, State.PAST_DUE)


class Kind(StrEnum):
    """What a stretch of a period is billed as."""

    TRIAL = "trial"
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"  # a mark only: nothing is billed after it


class Timing(StrEnum):
    AUTOMATIC = "automatic"
    IMMEDIATE = "immediate"
    PERIOD_END = "period_end"


class Direction(StrEnum):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    LATERAL = "lateral"


class Action(StrEnum):
    CHANGE_PLAN = "change_plan"
    CANCEL = "cancel"


class ScheduleState(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Plan:
    """A published package version, as the local catalog projection knows it."""

    package_version_id: str
    package_id: str
    package_code: str
    version: int
    currency_code: str
    interval: Interval
    base_fee: Decimal
    trial_days: int = 0


@dataclass(frozen=True)
class Mark:
    """From ``at`` on, the subscription is billed on this version as this kind."""

    at: datetime
    package_version_id: str
    kind: Kind


@dataclass(frozen=True)
class Segment:
    package_version_id: str
    kind: Kind
    start: datetime
    end: datetime


@dataclass
class Schedule:
    schedule_id: str
    subscription_id: str
    org_id: str
    action: Action
    target_package_version_id: str
    direction: Direction | None
    effective_time: datetime
    state: ScheduleState
    create_time: datetime
    resolve_time: datetime | None = None


@dataclass(frozen=True)
class ClosedPeriod:
    subscription_id: str
    org_id: str
    start: datetime
    end: datetime
    segments: tuple[Segment, ...]
    close_time: datetime
    package_version_id: str


def direction_of(current: Plan, target: Plan) -> Direction:
    """Upgrade or downgrade by base fee per day (plans may differ in interval)."""
    old = price_per_day(current.base_fee, current.interval)
    new = price_per_day(target.base_fee, target.interval)
    if new > old:
        return Direction.UPGRADE
    if new < old:
        return Direction.DOWNGRADE
    return Direction.LATERAL


def resolve_timing(requested: Timing, direction: Direction) -> Timing:
    """AUTOMATIC: upgrades (and lateral moves, nothing to prorate) now, downgrades later."""
    if requested is not Timing.AUTOMATIC:
        return requested
    return Timing.PERIOD_END if direction is Direction.DOWNGRADE else Timing.IMMEDIATE


def segments_of(marks: list[Mark], start: datetime, end: datetime) -> tuple[Segment, ...]:
    """Consecutive segments covering ``[start, end)`` up to an ENDED mark, if any."""
    out: list[Segment] = []
    ordered = sorted(marks, key=lambda m: m.at)
    for i, mark in enumerate(ordered):
        if mark.kind is Kind.ENDED:
            break
        seg_start = max(mark.at, start)
        seg_end = min(ordered[i + 1].at if i + 1 < len(ordered) else end, end)
        if seg_end > seg_start:
            out.append(Segment(mark.package_version_id, mark.kind, seg_start, seg_end))
    return tuple(out)
