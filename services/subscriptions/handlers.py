"""Use cases of the subscriptions service.

Each takes a ``SubscriptionsUnitOfWork`` (already entered) and a command and
never commits: ``run_mutation`` or the event consumer commits the change, its
outbox events and the request-id or inbox row together.

Time: every use case acts at ``max(clock, billing clock)``. The billing
clock is the latest instant ClosePeriods ran at, so once ops or tests move
time forward (``tally billing close-periods --now``), lifecycle changes never
land before periods already closed (Kill Bill's model).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.kit.clock import Clock
from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from services.subscriptions import domain as d
from services.subscriptions.commands import (
    ArchivePackage,
    CancelSchedule,
    CancelSubscription,
    ChangeOutcome,
    ChangePlan,
    CheckEntitlement,
    CloseOutcome,
    ClosePeriods,
    CreateSubscription,
    EntitlementOutcome,
    PauseOrResume,
    PaymentOutcome,
    PeriodsPage,
    RecordPackageVersion,
    RecordUsage,
)
from services.subscriptions.protomap import event_pb
from services.subscriptions.repository import EntitlementRow, SubscriptionsUnitOfWork

# ---------------------------------------------------------------- helpers


def new_id() -> str:
    return str(uuid.uuid4())


async def effective_now(uow: SubscriptionsUnitOfWork, clock: Clock) -> datetime:
    wall = clock.now()
    billing = await uow.repo.clock_now()
    return max(wall, billing) if billing else wall


def _not_found(subscription_id: str) -> NotFound:
    return NotFound(
        message=f"subscription {subscription_id} not found",
        reason="SUBSCRIPTION_NOT_FOUND",
        metadata={"subscription_id": subscription_id},
    )


async def _subscription(
    uow: SubscriptionsUnitOfWork, subscription_id: str, org_id: str, *, lock: bool
) -> d.Subscription:
    sub = await uow.repo.get(subscription_id, for_update=lock)
    # Another org's subscription answers NOT_FOUND so ids do not leak.
    if sub is None or (org_id and sub.org_id != org_id):
        raise _not_found(subscription_id)
    return sub


def _plan_ids(subs: list[d.Subscription]) -> set[str]:
    """Every version advancing these subscriptions may consult."""
    ids: set[str] = set()
    for sub in subs:
        ids.add(sub.plan.package_version_id)
        ids |= {e.target_package_version_id for e in sub.schedules if e.target_package_version_id}
        ids |= {m.package_version_id for m in sub.marks}
    return ids


async def _plans_for(uow: SubscriptionsUnitOfWork, sub: d.Subscription) -> dict[str, d.Plan]:
    return await uow.repo.plans(_plan_ids([sub]))


async def _persist(
    uow: SubscriptionsUnitOfWork, sub: d.Subscription, *, new: bool = False
) -> dict[str, d.Plan]:
    """Save the aggregate, guard each period close, and emit its events."""
    if new:
        await uow.repo.add(sub)
    else:
        await uow.repo.save(sub)
    return await _record_events(uow, [sub])


async def _persist_many(
    uow: SubscriptionsUnitOfWork, subs: list[d.Subscription]
) -> dict[str, d.Plan]:
    """``_persist`` for many existing subscriptions, with a fixed number of
    statements however many there are (the billing clock's chunks)."""
    await uow.repo.save_many(subs)
    return await _record_events(uow, subs)


async def _record_events(
    uow: SubscriptionsUnitOfWork, subs: list[d.Subscription]
) -> dict[str, d.Plan]:
    wanted: set[str] = set()
    closed: list[d.ClosedPeriod] = []
    for sub in subs:
        wanted.add(sub.plan.package_version_id)
        for event in sub.events:
            if isinstance(event, d.PeriodClosed):
                wanted |= {s.package_version_id for s in event.period.segments}
                closed.append(event.period)
    plans = await uow.repo.plans(wanted)
    if closed:
        already = await uow.repo.record_closed(closed)
        if already:
            # The unique key says someone else closed it: undo everything
            # rather than emit period_closed twice.
            period = already[0]
            raise Aborted(
                message=(
                    f"period {period.start.isoformat()} of {period.subscription_id}"
                    " was closed concurrently; retry"
                ),
                reason="PERIOD_ALREADY_CLOSED",
                metadata={"subscription_id": period.subscription_id},
            )
    for sub in subs:
        for event in sub.events:
            message = event_pb(event, plans)
            if message is not None:
                # Ordered per org: invoicing locks an org's invoice counter and
                # credit balance, shared by all the org's subscriptions.
                uow.emit(message, aggregate_id=sub.subscription_id, ordering_key=sub.org_id)
        sub.events.clear()
    return plans


async def _catch_up(uow: SubscriptionsUnitOfWork, sub: d.Subscription, now: datetime) -> None:
    """Close what is overdue before acting, so a command never lands in a
    period the clock has not closed yet."""
    if sub.state is d.State.CANCELED:
        return
    sub.advance(now, await _plans_for(uow, sub))


async def _target_version(
    uow: SubscriptionsUnitOfWork, package_id: str, package_version_id: str
) -> d.Plan:
    """A published, non-archived version; the package's latest when no version is given."""
    if package_version_id:
        record = await uow.repo.version(package_version_id)
        if record is None or (package_id and record.plan.package_id != package_id):
            raise NotFound(
                message=f"published package version {package_version_id} not found",
                reason="PACKAGE_VERSION_NOT_FOUND",
                metadata={"package_version_id": package_version_id},
            )
    else:
        package = await uow.repo.package(package_id)
        if package is None or package.latest_version_id is None:
            raise NotFound(
                message=f"package {package_id} not found (or never published)",
                reason="PACKAGE_NOT_FOUND",
                metadata={"package_id": package_id},
            )
        record = await uow.repo.version(package.latest_version_id)
        if record is None:
            raise NotFound(
                message=f"package {package_id} not found",
                reason="PACKAGE_NOT_FOUND",
                metadata={"package_id": package_id},
            )
    if record.archived:
        raise FailedPrecondition(
            message=f"package {record.plan.package_code} is archived: no new subscriptions",
            reason="PACKAGE_ARCHIVED",
            metadata={"package_id": record.plan.package_id},
        )
    return record.plan


# ---------------------------------------------------------------- commands


async def create_subscription(
    uow: SubscriptionsUnitOfWork, cmd: CreateSubscription, clock: Clock
) -> d.Subscription:
    now = await effective_now(uow, clock)
    plan = await _target_version(uow, cmd.package_id, cmd.package_version_id)
    if not cmd.allow_multiple and await uow.repo.live_exists(cmd.org_id, plan.package_id):
        raise AlreadyExists(
            message=f"org {cmd.org_id} already has a live subscription to {plan.package_code}",
            reason="SUBSCRIPTION_ALREADY_EXISTS",
            metadata={"org_id": cmd.org_id, "package_id": plan.package_id},
        )
    sub = d.Subscription.create(
        subscription_id=new_id(),
        org_id=cmd.org_id,
        plan=plan,
        anchor=cmd.anchor,
        start=cmd.start_time or now,
        now=now,
        trial_days=cmd.trial_days,
        allow_multiple=cmd.allow_multiple,
        external_id=cmd.external_id,
    )
    await _persist(uow, sub, new=True)
    return sub


async def get_subscription(
    uow: SubscriptionsUnitOfWork, subscription_id: str, org_id: str
) -> d.Subscription:
    return await _subscription(uow, subscription_id, org_id, lock=False)


async def list_subscriptions(
    uow: SubscriptionsUnitOfWork,
    *,
    org_id: str,
    state: d.State | None,
    package_id: str,
    after: list[Any] | None,
    limit: int,
) -> list[d.Subscription]:
    return await uow.repo.list_subscriptions(
        org_id=org_id, state=state, package_id=package_id, after=after, limit=limit
    )


async def change_plan(
    uow: SubscriptionsUnitOfWork, cmd: ChangePlan, clock: Clock, *, validate_only: bool = False
) -> ChangeOutcome:
    """``validate_only`` (AIP-163): the same checks and outcome, on an aggregate
    that is never saved, so no event leaves (invoicing prices the answer)."""
    now = await effective_now(uow, clock)
    sub = await _subscription(uow, cmd.subscription_id, cmd.org_id, lock=not validate_only)
    target = await _target_version(uow, cmd.package_id, cmd.package_version_id)
    await _catch_up(uow, sub, now)
    previous = sub.plan.package_version_id
    direction, _, effective, entry = sub.change_plan(target, cmd.timing, now, new_id())
    if not validate_only:
        await _persist(uow, sub)
    return ChangeOutcome(sub, direction, effective, entry, previous)


async def cancel_subscription(
    uow: SubscriptionsUnitOfWork, cmd: CancelSubscription, clock: Clock
) -> tuple[d.Subscription, datetime]:
    now = await effective_now(uow, clock)
    sub = await _subscription(uow, cmd.subscription_id, cmd.org_id, lock=True)
    await _catch_up(uow, sub, now)
    effective = sub.cancel(cmd.timing, now, cmd.reason, new_id())
    await _persist(uow, sub)
    return sub, effective


async def pause_subscription(
    uow: SubscriptionsUnitOfWork, cmd: PauseOrResume, clock: Clock
) -> d.Subscription:
    now = await effective_now(uow, clock)
    sub = await _subscription(uow, cmd.subscription_id, cmd.org_id, lock=True)
    await _catch_up(uow, sub, now)
    sub.pause(now)
    await _persist(uow, sub)
    return sub


async def resume_subscription(
    uow: SubscriptionsUnitOfWork, cmd: PauseOrResume, clock: Clock
) -> d.Subscription:
    now = await effective_now(uow, clock)
    sub = await _subscription(uow, cmd.subscription_id, cmd.org_id, lock=True)
    await _catch_up(uow, sub, now)
    sub.resume(now)
    await _persist(uow, sub)
    return sub


async def list_schedules(
    uow: SubscriptionsUnitOfWork,
    *,
    subscription_id: str,
    org_id: str,
    state: d.ScheduleState | None,
    after: list[Any] | None,
    limit: int,
) -> list[d.Schedule]:
    await _subscription(uow, subscription_id, org_id, lock=False)
    return await uow.repo.schedules(subscription_id, state, after, limit)


async def cancel_schedule(
    uow: SubscriptionsUnitOfWork, cmd: CancelSchedule, clock: Clock
) -> tuple[d.Schedule, d.Subscription]:
    now = await effective_now(uow, clock)
    entry = await uow.repo.schedule(cmd.schedule_id)
    if entry is None or (cmd.org_id and entry.org_id != cmd.org_id):
        raise NotFound(
            message=f"schedule {cmd.schedule_id} not found",
            reason="SCHEDULE_NOT_FOUND",
            metadata={"schedule_id": cmd.schedule_id},
        )
    sub = await _subscription(uow, entry.subscription_id, cmd.org_id, lock=True)
    await _catch_up(uow, sub, now)
    withdrawn = sub.withdraw_schedule(cmd.schedule_id, now)
    await _persist(uow, sub)
    return withdrawn, sub


async def list_billing_periods(
    uow: SubscriptionsUnitOfWork,
    *,
    subscription_id: str,
    org_id: str,
    before: datetime | None,
    limit: int,
) -> PeriodsPage:
    """Newest first: the open period (first page only), then closed ones."""
    sub = await _subscription(uow, subscription_id, org_id, lock=False)
    open_period = sub if before is None and sub.state is not d.State.CANCELED else None
    room = limit - (1 if open_period else 0)
    closed = await uow.repo.closed_periods(subscription_id, before, room + 1)
    next_after: list[Any] | None = None
    if len(closed) > room:
        closed = closed[:room]
        last = closed[-1].start if closed else sub.period_start
        next_after = [last.isoformat()]
    ids: set[str] = {sub.plan.package_version_id}
    ids |= {m.package_version_id for m in sub.marks}
    for period in closed:
        ids |= {s.package_version_id for s in period.segments}
    return PeriodsPage(open_period, closed, await uow.repo.plans(ids), next_after)


async def close_periods(
    uow: SubscriptionsUnitOfWork, cmd: ClosePeriods, clock: Clock
) -> CloseOutcome:
    """The billing clock: every due trial end, period close, schedule entry and
    period-end cancellation at or before ``now``, each exactly once."""
    last = await uow.repo.lock_clock()
    wall = clock.now()
    if cmd.now is not None:
        if last is not None and cmd.now < last:
            raise FailedPrecondition(
                message=(
                    f"now {cmd.now.isoformat()} is before {last.isoformat()},"
                    " where the billing clock already ran"
                ),
                reason="CLOCK_WENT_BACKWARDS",
                metadata={"clock_time": last.isoformat()},
            )
        now = cmd.now
    else:
        now = max(wall, last) if last else wall
    await uow.repo.set_clock(now)
    budget = cmd.max_periods
    outcome = CloseOutcome()
    subs = await uow.repo.due(now, None if budget is None else budget + 1)
    # One read of every version the chunk may need, one write per table for it.
    known = await uow.repo.plans(_plan_ids(subs))
    advanced: list[d.Subscription] = []
    for index, sub in enumerate(subs):
        left = None if budget is None else budget - len(outcome.closed)
        if left is not None and left <= 0:
            outcome.more_due = outcome.more_due or index < len(subs)
            break
        result = sub.advance(now, known, left)
        outcome.closed.extend(result.closed)
        outcome.trials_ended += result.trials_ended
        outcome.schedules_applied += result.schedules_applied
        outcome.more_due = outcome.more_due or result.more_due
        advanced.append(sub)
    outcome.plans.update(await _persist_many(uow, advanced))
    return outcome


async def check_entitlement(
    read: Callable[[str, str], Awaitable[EntitlementRow | None]], cmd: CheckEntitlement
) -> EntitlementOutcome:
    """Read-only, and the hottest call of the suite: it takes a row reader
    (the per-process cache in production) rather than a unit of work."""
    row = await read(cmd.org_id, cmd.feature_key)
    decision = d.decide(
        row.limit if row else None,
        subscribed=row is not None,
        metered_usage=row.used if row else Decimal(0),
        quantity=cmd.quantity,
    )
    return EntitlementOutcome(decision, row.subscription_id if row else "")


# ---------------------------------------------------------------- events consumed


async def record_package_version(uow: SubscriptionsUnitOfWork, cmd: RecordPackageVersion) -> None:
    await uow.repo.upsert_version(
        cmd.plan,
        name=cmd.name,
        base_fee_timing=cmd.base_fee_timing,
        metric_codes=cmd.metric_codes,
        publish_time=cmd.publish_time,
        limits=cmd.limits,
    )


async def archive_package(uow: SubscriptionsUnitOfWork, cmd: ArchivePackage) -> None:
    await uow.repo.archive_package(cmd.package_id, cmd.package_code)


async def record_usage(uow: SubscriptionsUnitOfWork, cmd: RecordUsage) -> None:
    await uow.repo.apply_usage(
        subscription_id=cmd.subscription_id,
        org_id=cmd.org_id,
        metric_code=cmd.metric_code,
        period_start=cmd.period_start,
        period_end=cmd.period_end,
        value=cmd.value,
        revision=cmd.revision,
    )


async def apply_payment(uow: SubscriptionsUnitOfWork, cmd: PaymentOutcome, clock: Clock) -> bool:
    """past_due after the final failed attempt, back to active on success.

    Events for unknown subscriptions or other states change nothing: payments
    for a canceled subscription still arrive and must not park the consumer.
    """
    sub = await uow.repo.get(cmd.subscription_id, for_update=True)
    if sub is None:
        return False
    now = await effective_now(uow, clock)
    if cmd.succeeded:
        changed = sub.payment_succeeded(now)
    else:
        changed = cmd.final_attempt and sub.payment_failed_finally(now)
    if changed:
        await _persist(uow, sub)
    return changed


__all__ = [
    "ArchivePackage",
    "CancelSchedule",
    "CancelSubscription",
    "ChangeOutcome",
    "ChangePlan",
    "CheckEntitlement",
    "CloseOutcome",
    "ClosePeriods",
    "CreateSubscription",
    "EntitlementOutcome",
    "PauseOrResume",
    "PaymentOutcome",
    "PeriodsPage",
    "RecordPackageVersion",
    "RecordUsage",
    "apply_payment",
    "archive_package",
    "cancel_schedule",
    "cancel_subscription",
    "change_plan",
    "check_entitlement",
    "close_periods",
    "create_subscription",
    "effective_now",
    "get_subscription",
    "list_billing_periods",
    "list_schedules",
    "list_subscriptions",
    "new_id",
    "pause_subscription",
    "record_package_version",
    "record_usage",
    "resume_subscription",
]
