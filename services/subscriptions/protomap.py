"""Domain values <-> protobuf messages, shared by the gRPC adapter and the events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from google.protobuf.message import Message
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import subscriptions_events_pb2 as events_pb2
from tally.subscriptions.v1 import resources_pb2 as pb

from services.kit.protoconv import to_timestamp
from services.subscriptions import domain as d

STATE_TO_PB = {
    d.State.TRIALING: pb.SUBSCRIPTION_STATE_TRIALING,
    d.State.ACTIVE: pb.SUBSCRIPTION_STATE_ACTIVE,
    d.State.PAST_DUE: pb.SUBSCRIPTION_STATE_PAST_DUE,
    d.State.PAUSED: pb.SUBSCRIPTION_STATE_PAUSED,
    d.State.CANCELED: pb.SUBSCRIPTION_STATE_CANCELED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}

INTERVAL_TO_PB = {
    d.Interval.WEEKLY: catalog_pb2.BILLING_INTERVAL_WEEKLY,
    d.Interval.MONTHLY: catalog_pb2.BILLING_INTERVAL_MONTHLY,
    d.Interval.YEARLY: catalog_pb2.BILLING_INTERVAL_YEARLY,
}
INTERVAL_FROM_PB = {v: k for k, v in INTERVAL_TO_PB.items()}

ANCHOR_TO_PB = {
    d.Anchor.CALENDAR: pb.BILLING_ANCHOR_CALENDAR,
    d.Anchor.ANNIVERSARY: pb.BILLING_ANCHOR_ANNIVERSARY,
}

KIND_TO_PB = {
    d.Kind.TRIAL: pb.SEGMENT_KIND_TRIAL,
    d.Kind.ACTIVE: pb.SEGMENT_KIND_ACTIVE,
    d.Kind.PAUSED: pb.SEGMENT_KIND_PAUSED,
}

DIRECTION_TO_PB = {
    d.Direction.UPGRADE: pb.CHANGE_DIRECTION_UPGRADE,
    d.Direction.DOWNGRADE: pb.CHANGE_DIRECTION_DOWNGRADE,
    d.Direction.LATERAL: pb.CHANGE_DIRECTION_LATERAL,
}

PLAN_TIMING_TO_PB = {
    d.Timing.IMMEDIATE: pb.PLAN_CHANGE_TIMING_IMMEDIATE,
    d.Timing.PERIOD_END: pb.PLAN_CHANGE_TIMING_PERIOD_END,
    d.Timing.AUTOMATIC: pb.PLAN_CHANGE_TIMING_AUTOMATIC,
}
CANCEL_TIMING_TO_PB = {
    d.Timing.IMMEDIATE: pb.CANCEL_TIMING_IMMEDIATE,
    d.Timing.PERIOD_END: pb.CANCEL_TIMING_PERIOD_END,
}

ACTION_TO_PB = {
    d.Action.CHANGE_PLAN: pb.SCHEDULE_ACTION_CHANGE_PLAN,
    d.Action.CANCEL: pb.SCHEDULE_ACTION_CANCEL,
}

SCHEDULE_STATE_TO_PB = {
    d.ScheduleState.PENDING: pb.SCHEDULE_STATE_PENDING,
    d.ScheduleState.APPLIED: pb.SCHEDULE_STATE_APPLIED,
    d.ScheduleState.CANCELED: pb.SCHEDULE_STATE_CANCELED,
}
SCHEDULE_STATE_FROM_PB = {v: k for k, v in SCHEDULE_STATE_TO_PB.items()}


def _set_time(message: Message, name: str, value: datetime | None) -> None:
    ts = to_timestamp(value)
    if ts is not None:
        getattr(message, name).CopyFrom(ts)


def schedule_pb(entry: d.Schedule) -> pb.ScheduleEntry:
    out = pb.ScheduleEntry(
        schedule_id=entry.schedule_id,
        subscription_id=entry.subscription_id,
        org_id=entry.org_id,
        action=ACTION_TO_PB[entry.action],
        target_package_version_id=entry.target_package_version_id,
        direction=DIRECTION_TO_PB[entry.direction] if entry.direction else None,
        state=SCHEDULE_STATE_TO_PB[entry.state],
    )
    _set_time(out, "effective_time", entry.effective_time)
    _set_time(out, "create_time", entry.create_time)
    _set_time(out, "resolve_time", entry.resolve_time)
    return out


def subscription_pb(sub: d.Subscription) -> pb.Subscription:
    out = pb.Subscription(
        subscription_id=sub.subscription_id,
        org_id=sub.org_id,
        state=STATE_TO_PB[sub.state],
        package_id=sub.plan.package_id,
        package_code=sub.plan.package_code,
        package_version_id=sub.plan.package_version_id,
        package_version=sub.plan.version,
        currency_code=sub.plan.currency_code,
        billing_interval=INTERVAL_TO_PB[sub.plan.interval],
        billing_anchor=ANCHOR_TO_PB[sub.anchor],
        cancel_at_period_end=sub.cancel_at_period_end,
        pending_schedules=[schedule_pb(s) for s in sub.schedules],
        external_id=sub.external_id,
    )
    _set_time(out, "start_time", sub.start_time)
    _set_time(out, "trial_end_time", sub.trial_end)
    _set_time(out, "current_period_start_time", sub.period_start)
    _set_time(out, "current_period_end_time", sub.period_end)
    _set_time(out, "cancel_time", sub.cancel_time)
    _set_time(out, "pause_time", sub.pause_time)
    _set_time(out, "create_time", sub.create_time)
    _set_time(out, "update_time", sub.update_time)
    return out


def segment_pb(segment: d.Segment, plans: Mapping[str, d.Plan]) -> pb.PeriodSegment:
    plan = plans.get(segment.package_version_id)
    out = pb.PeriodSegment(
        package_version_id=segment.package_version_id,
        package_code=plan.package_code if plan else "",
        package_version=plan.version if plan else 0,
        kind=KIND_TO_PB[segment.kind],
    )
    _set_time(out, "start_time", segment.start)
    _set_time(out, "end_time", segment.end)
    return out


def period_pb(
    subscription_id: str,
    org_id: str,
    start: datetime,
    end: datetime,
    segments: tuple[d.Segment, ...],
    plans: Mapping[str, d.Plan],
    close_time: datetime | None,
) -> pb.BillingPeriod:
    out = pb.BillingPeriod(
        subscription_id=subscription_id,
        org_id=org_id,
        segments=[segment_pb(s, plans) for s in segments],
        closed=close_time is not None,
    )
    _set_time(out, "period_start_time", start)
    _set_time(out, "period_end_time", end)
    _set_time(out, "close_time", close_time)
    return out


def closed_period_pb(period: d.ClosedPeriod, plans: Mapping[str, d.Plan]) -> pb.BillingPeriod:
    return period_pb(
        period.subscription_id,
        period.org_id,
        period.start,
        period.end,
        period.segments,
        plans,
        period.close_time,
    )


def open_period_pb(sub: d.Subscription, plans: Mapping[str, d.Plan]) -> pb.BillingPeriod:
    return period_pb(
        sub.subscription_id,
        sub.org_id,
        sub.period_start,
        sub.period_end,
        sub.segments(),
        plans,
        None,
    )


def event_pb(event: d.DomainEvent, plans: Mapping[str, d.Plan]) -> Message | None:
    """The integration event for a domain event; None for those not published."""
    sub = event.subscription
    s = subscription_pb(sub)
    sid, org = sub.subscription_id, sub.org_id
    out: Message
    match event:
        case d.Created():
            return events_pb2.SubscriptionCreatedEvent(subscription=s)
        case d.Changed():
            out = events_pb2.SubscriptionChangedEvent(
                subscription_id=sid,
                org_id=org,
                previous_package_version_id=event.previous_package_version_id,
                package_version_id=sub.plan.package_version_id,
                direction=DIRECTION_TO_PB[event.direction],
                timing=PLAN_TIMING_TO_PB[event.timing],
                subscription=s,
            )
            _set_time(out, "effective_time", event.effective_time)
        case d.Canceled():
            out = events_pb2.SubscriptionCanceledEvent(
                subscription_id=sid,
                org_id=org,
                timing=CANCEL_TIMING_TO_PB[event.timing],
                reason=event.reason,
                subscription=s,
            )
            _set_time(out, "effective_time", event.effective_time)
        case d.Paused():
            out = events_pb2.SubscriptionPausedEvent(
                subscription_id=sid, org_id=org, subscription=s
            )
            _set_time(out, "pause_time", event.at)
        case d.Resumed():
            out = events_pb2.SubscriptionResumedEvent(
                subscription_id=sid, org_id=org, subscription=s
            )
            _set_time(out, "resume_time", event.at)
        case d.TrialEnded():
            out = events_pb2.SubscriptionTrialEndedEvent(
                subscription_id=sid, org_id=org, subscription=s
            )
            _set_time(out, "trial_end_time", event.at)
        case d.Renewed():
            out = events_pb2.SubscriptionRenewedEvent(
                subscription_id=sid,
                org_id=org,
                package_version_id=sub.plan.package_version_id,
                subscription=s,
            )
            _set_time(out, "period_start_time", event.start)
            _set_time(out, "period_end_time", event.end)
        case d.PeriodClosed():
            out = events_pb2.SubscriptionPeriodClosedEvent(
                subscription_id=sid,
                org_id=org,
                currency_code=sub.plan.currency_code,
                period=closed_period_pb(event.period, plans),
                package_version_id=event.period.package_version_id,
                subscription_ended=event.ended,
                next_package_version_id="" if event.ended else event.next_package_version_id,
                next_period_kind=KIND_TO_PB.get(event.next_kind) if event.next_kind else None,
            )
            _set_time(out, "next_period_start_time", event.next_start)
            _set_time(out, "next_period_end_time", event.next_end)
        case _:
            # past_due and its recovery have no event in v1: invoicing and
            # usage learn the state from the next event's subscription.
            return None
    return out
