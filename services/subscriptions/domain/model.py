"""The Subscription aggregate: state machine, plan changes, schedules and periods.

Pure: no I/O, no clock. Every method takes the instant it acts at, appends
domain events to ``events`` (each carrying a snapshot of the subscription as
it is right after the event) and leaves persistence to the handlers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.subscriptions.domain.events import (
    Canceled,
    Changed,
    Created,
    DomainEvent,
    PastDue,
    Paused,
    PeriodClosed,
    Recovered,
    Renewed,
    Resumed,
    TrialEnded,
)
from services.subscriptions.domain.periods import Anchor, next_boundary, origin_for
from services.subscriptions.domain.values import (
    ENTITLED_STATES,
    TRANSITIONS,
    Action,
    ClosedPeriod,
    Direction,
    Kind,
    Mark,
    Plan,
    Schedule,
    ScheduleState,
    Segment,
    State,
    Timing,
    direction_of,
    resolve_timing,
    segments_of,
)


def illegal(current: State, target: State | None, action: str) -> FailedPrecondition:
    wanted = f" to {target.value}" if target else ""
    return FailedPrecondition(
        message=f"cannot {action} a subscription that is {current.value}"
        f" (no transition from {current.value}{wanted})",
        reason="ILLEGAL_STATE_TRANSITION",
        metadata={
            "current_state": current.value,
            "target_state": target.value if target else "",
            "action": action,
        },
    )


@dataclass
class AdvanceResult:
    closed: list[ClosedPeriod] = field(default_factory=list)
    trials_ended: int = 0
    schedules_applied: int = 0
    more_due: bool = False


@dataclass
class Subscription:
    subscription_id: str
    org_id: str
    plan: Plan
    state: State
    anchor: Anchor
    origin: datetime  # every period boundary is origin + k intervals
    start_time: datetime
    trial_end: datetime | None
    period_start: datetime
    period_end: datetime
    create_time: datetime
    update_time: datetime
    allow_multiple: bool = False
    # The org's own id for it (another billing system's); "" when none.
    external_id: str = ""
    cancel_time: datetime | None = None
    cancel_reason: str = ""
    pause_time: datetime | None = None
    marks: list[Mark] = field(default_factory=list)  # of the current period
    schedules: list[Schedule] = field(default_factory=list)  # pending ones
    events: list[DomainEvent] = field(default_factory=list, repr=False)
    # Schedule entries applied or withdrawn by this unit of work, to be saved.
    resolved: list[Schedule] = field(default_factory=list, repr=False)

    # ------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        *,
        subscription_id: str,
        org_id: str,
        plan: Plan,
        anchor: Anchor,
        start: datetime,
        now: datetime,
        trial_days: int | None = None,
        allow_multiple: bool = False,
        external_id: str = "",
    ) -> Subscription:
        if start > now:
            raise InvalidArgument.field("start_time", "must not be in the future")
        days = plan.trial_days if trial_days is None else trial_days
        trial_end = start + timedelta(days=days) if days > 0 else None
        origin = origin_for(anchor, plan.interval, start)
        state = State.TRIALING if trial_end else State.ACTIVE
        sub = cls(
            subscription_id=subscription_id,
            org_id=org_id,
            plan=plan,
            state=state,
            anchor=anchor,
            origin=origin,
            start_time=start,
            trial_end=trial_end,
            period_start=start,
            period_end=next_boundary(origin, plan.interval, start),
            create_time=now,
            update_time=now,
            allow_multiple=allow_multiple,
            external_id=external_id,
        )
        sub.marks = [Mark(start, plan.package_version_id, sub._kind())]
        sub._record(lambda s: Created(s))
        return sub

    # ------------------------------------------------------------ queries

    @property
    def cancel_at_period_end(self) -> bool:
        return any(s.action is Action.CANCEL for s in self.schedules)

    def segments(self) -> tuple[Segment, ...]:
        return segments_of(self.marks, self.period_start, self.period_end)

    def snapshot(self) -> Subscription:
        clone = copy.copy(self)
        clone.marks = list(self.marks)
        clone.schedules = [copy.copy(s) for s in self.schedules]
        clone.events = []
        clone.resolved = []
        return clone

    def _kind(self) -> Kind:
        return {
            State.TRIALING: Kind.TRIAL,
            State.PAUSED: Kind.PAUSED,
            State.CANCELED: Kind.ENDED,
        }.get(self.state, Kind.ACTIVE)

    def _record(self, make: Callable[[Subscription], DomainEvent]) -> None:
        self.events.append(make(self.snapshot()))

    def _mark(self, at: datetime) -> None:
        # A second change at the same instant replaces the first: a zero
        # length segment means nothing to invoicing.
        self.marks = [m for m in self.marks if m.at != at]
        self.marks.append(Mark(at, self.plan.package_version_id, self._kind()))

    def _move(self, target: State, action: str, at: datetime) -> None:
        if target not in TRANSITIONS[self.state]:
            raise illegal(self.state, target, action)
        self.state = target
        self.update_time = at

    def _withdraw(self, at: datetime, action: Action | None = None) -> None:
        keep: list[Schedule] = []
        for entry in self.schedules:
            if action is None or entry.action is action:
                entry.state, entry.resolve_time = ScheduleState.CANCELED, at
                self.resolved.append(entry)
            else:
                keep.append(entry)
        self.schedules = keep
        if not self.cancel_at_period_end and self.state is not State.CANCELED:
            self.cancel_time = None

    # ------------------------------------------------------------ commands

    def change_plan(
        self, target: Plan, requested: Timing, now: datetime, schedule_id: str
    ) -> tuple[Direction, Timing, datetime, Schedule | None]:
        if self.state not in ENTITLED_STATES:
            raise FailedPrecondition(
                message=f"cannot change the plan of a subscription that is {self.state.value}",
                reason="SUBSCRIPTION_NOT_CHANGEABLE",
                metadata={"current_state": self.state.value},
            )
        if target.package_version_id == self.plan.package_version_id:
            raise FailedPrecondition(
                message="the subscription is already on this package version",
                reason="PLAN_UNCHANGED",
                metadata={"package_version_id": target.package_version_id},
            )
        if (target.currency_code, target.interval) != (self.plan.currency_code, self.plan.interval):
            raise FailedPrecondition(
                message=(
                    f"target version bills {target.currency_code}/{target.interval.value},"
                    f" the subscription {self.plan.currency_code}/{self.plan.interval.value}"
                ),
                reason="PLAN_INCOMPATIBLE",
                metadata={"currency_code": target.currency_code, "interval": target.interval},
            )
        direction = direction_of(self.plan, target)
        timing = resolve_timing(requested, direction)
        # A newer change replaces any plan change still waiting.
        self._withdraw(now, Action.CHANGE_PLAN)
        if timing is Timing.IMMEDIATE:
            self._switch(target, direction, timing, now)
            return direction, timing, now, None
        entry = Schedule(
            schedule_id=schedule_id,
            subscription_id=self.subscription_id,
            org_id=self.org_id,
            action=Action.CHANGE_PLAN,
            target_package_version_id=target.package_version_id,
            direction=direction,
            effective_time=self.period_end,
            state=ScheduleState.PENDING,
            create_time=now,
        )
        self.schedules.append(entry)
        self.update_time = now
        return direction, timing, self.period_end, entry

    def _switch(self, target: Plan, direction: Direction, timing: Timing, at: datetime) -> None:
        previous = self.plan.package_version_id
        self.plan = target
        self.update_time = at
        self._mark(at)
        self._record(lambda s: Changed(s, previous, direction, timing, at))

    def cancel(self, timing: Timing, now: datetime, reason: str, schedule_id: str) -> datetime:
        if State.CANCELED not in TRANSITIONS[self.state]:
            raise illegal(self.state, State.CANCELED, "cancel")
        if timing is Timing.PERIOD_END:
            if not self.cancel_at_period_end:
                self.schedules.append(
                    Schedule(
                        schedule_id=schedule_id,
                        subscription_id=self.subscription_id,
                        org_id=self.org_id,
                        action=Action.CANCEL,
                        target_package_version_id="",
                        direction=None,
                        effective_time=self.period_end,
                        state=ScheduleState.PENDING,
                        create_time=now,
                    )
                )
                self.cancel_time, self.cancel_reason = self.period_end, reason
                self.update_time = now
            return self.period_end
        self._end(Timing.IMMEDIATE, now, reason, close_at=now)
        return now

    def _end(self, timing: Timing, at: datetime, reason: str, close_at: datetime) -> ClosedPeriod:
        """Cancel at ``at`` and close the final period (its segments stop at ``at``)."""
        if timing is Timing.IMMEDIATE:
            self._move(State.CANCELED, "cancel", at)
        else:
            # A cancellation scheduled while cancelable still applies if the
            # subscription was paused since: the customer asked to leave.
            self.state, self.update_time = State.CANCELED, max(self.update_time, at)
            self.pause_time = None
        self.cancel_time, self.cancel_reason = at, reason or self.cancel_reason
        self._withdraw(at)
        self._mark(at)
        closed = self._closed_period(close_at)
        self._record(
            lambda s: PeriodClosed(s, closed, True, None, None, s.plan.package_version_id, None)
        )
        self._record(lambda s: Canceled(s, timing, at, self.cancel_reason))
        return closed

    def pause(self, now: datetime) -> None:
        self._move(State.PAUSED, "pause", now)
        self.pause_time = now
        self._mark(now)
        self._record(lambda s: Paused(s, now))

    def resume(self, now: datetime) -> None:
        if self.state is not State.PAUSED:
            raise illegal(self.state, State.ACTIVE, "resume")
        self._move(State.ACTIVE, "resume", now)
        self.pause_time = None
        self._mark(now)
        self._record(lambda s: Resumed(s, now))

    def payment_failed_finally(self, now: datetime) -> bool:
        """ACTIVE -> PAST_DUE; False (nothing to do) from any other state."""
        if self.state is not State.ACTIVE:
            return False
        self._move(State.PAST_DUE, "mark past due", now)
        self._record(lambda s: PastDue(s, now))
        return True

    def payment_succeeded(self, now: datetime) -> bool:
        """PAST_DUE -> ACTIVE; False (nothing to do) from any other state."""
        if self.state is not State.PAST_DUE:
            return False
        self._move(State.ACTIVE, "reactivate", now)
        self._record(lambda s: Recovered(s, now))
        return True

    def withdraw_schedule(self, schedule_id: str, now: datetime) -> Schedule:
        for entry in self.schedules:
            if entry.schedule_id == schedule_id:
                self.schedules.remove(entry)
                entry.state, entry.resolve_time = ScheduleState.CANCELED, now
                self.resolved.append(entry)
                if entry.action is Action.CANCEL:
                    self.cancel_time, self.cancel_reason = None, ""
                self.update_time = now
                return entry
        raise FailedPrecondition(
            message=f"schedule {schedule_id} is not pending",
            reason="SCHEDULE_NOT_PENDING",
            metadata={"schedule_id": schedule_id},
        )

    # ------------------------------------------------------------ the clock

    def advance(
        self, now: datetime, plans: Mapping[str, Plan], max_periods: int | None = None
    ) -> AdvanceResult:
        """Everything due at or before ``now``, in time order: trial ends, period
        closes, due schedule entries, period-end cancellations."""
        result = AdvanceResult()
        while self.state is not State.CANCELED:
            if (
                self.state is State.TRIALING
                and self.trial_end is not None
                and self.trial_end <= now
                and self.trial_end <= self.period_end
            ):
                self._end_trial(self.trial_end)
                result.trials_ended += 1
                continue
            if self.period_end > now:
                break
            if max_periods is not None and len(result.closed) >= max_periods:
                result.more_due = True
                break
            result.schedules_applied += self._roll_over(now, plans, result)
        return result

    def _end_trial(self, at: datetime) -> None:
        self._move(State.ACTIVE, "end the trial of", at)
        self._mark(at)
        self._record(lambda s: TrialEnded(s, at))

    def _closed_period(self, close_time: datetime) -> ClosedPeriod:
        return ClosedPeriod(
            subscription_id=self.subscription_id,
            org_id=self.org_id,
            start=self.period_start,
            end=self.period_end,
            segments=self.segments(),
            close_time=close_time,
            package_version_id=self.plan.package_version_id,
        )

    def _roll_over(self, now: datetime, plans: Mapping[str, Plan], result: AdvanceResult) -> int:
        end = self.period_end
        due = sorted(
            (e for e in self.schedules if e.effective_time <= end),
            key=lambda e: (e.effective_time, e.action is Action.CANCEL),
        )
        if any(e.action is Action.CANCEL for e in due):
            cancel = next(e for e in due if e.action is Action.CANCEL)
            self.schedules.remove(cancel)
            cancel.state, cancel.resolve_time = ScheduleState.APPLIED, end
            self.resolved.append(cancel)
            result.closed.append(self._end(Timing.PERIOD_END, end, "", close_at=now))
            return 1
        closed = self._closed_period(now)
        result.closed.append(closed)
        changes: list[tuple[Plan, Direction]] = []
        for entry in due:
            self.schedules.remove(entry)
            entry.state, entry.resolve_time = ScheduleState.APPLIED, end
            self.resolved.append(entry)
            target = plans[entry.target_package_version_id]
            changes.append((target, entry.direction or direction_of(self.plan, target)))
        previous = self.plan
        if changes:
            self.plan = changes[-1][0]
        self.period_start = end
        self.period_end = next_boundary(self.origin, self.plan.interval, end)
        self.marks = [Mark(end, self.plan.package_version_id, self._kind())]
        self.update_time = max(self.update_time, end)
        next_start, next_end, kind = self.period_start, self.period_end, self._kind()
        self.events.append(
            PeriodClosed(
                self.snapshot(),
                closed,
                False,
                next_start,
                next_end,
                self.plan.package_version_id,
                kind,
            )
        )
        if changes:
            direction = changes[-1][1]
            self._record(
                lambda s: Changed(s, previous.package_version_id, direction, Timing.PERIOD_END, end)
            )
        self._record(lambda s: Renewed(s, next_start, next_end))
        return len(changes)
