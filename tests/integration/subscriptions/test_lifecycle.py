"""Every legal and illegal transition over gRPC, plan changes (immediate with
the instant invoicing prorates around, and at period end through a schedule),
cancellation, pause/resume and schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from tally.events.v1 import subscriptions_events_pb2 as ev
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from tests.integration.subscriptions.conftest import Catalog
from tests.support.subscriptions import (
    Harness,
    T,
    cancel,
    change,
    create,
    details,
    expect_illegal,
    pause,
    resume,
)

pytestmark = pytest.mark.integration


async def test_pause_resume_and_cancel_with_their_events(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    sid = sub.subscription_id
    paused = await pause(harness, sid)
    assert paused.state == pb.SUBSCRIPTION_STATE_PAUSED
    assert paused.HasField("pause_time")
    # paused -> paused, paused -> canceled and plan changes are illegal.
    await expect_illegal(pause(harness, sid), "paused")
    await expect_illegal(cancel(harness, sid), "paused")
    await expect_illegal(change(harness, sid, catalog.pro), "paused")
    resumed = await resume(harness, sid)
    assert resumed.state == pb.SUBSCRIPTION_STATE_ACTIVE
    assert not resumed.HasField("pause_time")
    await expect_illegal(resume(harness, sid), "active")  # active -> resume

    done = await cancel(harness, sid, reason="moving on")
    assert done.subscription.state == pb.SUBSCRIPTION_STATE_CANCELED
    assert done.effective_time == done.subscription.cancel_time
    # canceled is final
    await expect_illegal(pause(harness, sid), "canceled")
    await expect_illegal(resume(harness, sid), "canceled")
    await expect_illegal(cancel(harness, sid), "canceled")
    await expect_illegal(change(harness, sid, catalog.pro), "canceled")

    events = await harness.wait_events(
        sid, ["created", "paused", "resumed", "period_closed", "canceled"]
    )
    # Consumers apply one org's events in order, one transaction at a time.
    assert await harness.ordering_keys(sid) == {done.subscription.org_id}
    closed = events[3][1]
    assert isinstance(closed, ev.SubscriptionPeriodClosedEvent)
    assert closed.subscription_ended
    # The final period keeps its bounds; its segments stop at the cancellation.
    kinds = [s.kind for s in closed.period.segments]
    assert kinds == [pb.SEGMENT_KIND_ACTIVE, pb.SEGMENT_KIND_PAUSED, pb.SEGMENT_KIND_ACTIVE]
    assert closed.period.segments[-1].end_time == done.effective_time
    canceled = events[4][1]
    assert isinstance(canceled, ev.SubscriptionCanceledEvent)
    assert (canceled.timing, canceled.reason) == (pb.CANCEL_TIMING_IMMEDIATE, "moving on")

    # The org may subscribe again once the old one is canceled.
    again = await create(harness, catalog.basic, org_id=sub.org_id)
    assert again.state == pb.SUBSCRIPTION_STATE_ACTIVE


async def test_trialing_may_cancel_but_not_pause(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.trial)
    await expect_illegal(pause(harness, sub.subscription_id), "trialing")
    await expect_illegal(resume(harness, sub.subscription_id), "trialing")
    done = await cancel(harness, sub.subscription_id)
    assert done.subscription.state == pb.SUBSCRIPTION_STATE_CANCELED


async def test_immediate_upgrade_carries_what_invoicing_prorates_with(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    before = datetime.now(UTC)
    reply = await change(harness, sub.subscription_id, catalog.pro)  # AUTOMATIC
    assert reply.direction == pb.CHANGE_DIRECTION_UPGRADE
    assert not reply.HasField("schedule")
    assert reply.subscription.package_version_id == catalog.pro.package_version_id
    effective = reply.effective_time.ToDatetime(tzinfo=UTC)
    assert effective >= before.replace(microsecond=0)

    events = await harness.wait_events(sub.subscription_id, ["created", "changed"])
    changed = events[1][1]
    assert isinstance(changed, ev.SubscriptionChangedEvent)
    assert changed.previous_package_version_id == catalog.basic.package_version_id
    assert changed.package_version_id == catalog.pro.package_version_id
    assert changed.timing == pb.PLAN_CHANGE_TIMING_IMMEDIATE
    assert changed.direction == pb.CHANGE_DIRECTION_UPGRADE
    assert changed.effective_time == reply.effective_time  # to the microsecond
    assert changed.subscription.current_period_end_time == sub.current_period_end_time

    # The open period now has two segments split at the exact instant.
    periods = await harness.stub.ListBillingPeriods(
        api.ListBillingPeriodsRequest(subscription_id=sub.subscription_id), timeout=T
    )
    current = periods.periods[0]
    assert not current.closed
    assert [s.package_version_id for s in current.segments] == [
        catalog.basic.package_version_id,
        catalog.pro.package_version_id,
    ]
    assert current.segments[0].end_time == reply.effective_time
    assert current.segments[1].start_time == reply.effective_time
    assert current.segments[1].package_code == "pro"


async def test_downgrade_waits_for_period_end_and_can_be_withdrawn(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    sid = sub.subscription_id
    reply = await change(harness, sid, catalog.starter)  # AUTOMATIC downgrade
    assert reply.direction == pb.CHANGE_DIRECTION_DOWNGRADE
    assert reply.subscription.package_version_id == catalog.basic.package_version_id
    assert reply.effective_time == sub.current_period_end_time
    entry = reply.schedule
    assert entry.state == pb.SCHEDULE_STATE_PENDING
    assert entry.action == pb.SCHEDULE_ACTION_CHANGE_PLAN
    assert entry.target_package_version_id == catalog.starter.package_version_id
    assert [s.schedule_id for s in reply.subscription.pending_schedules] == [entry.schedule_id]

    # A newer change replaces the pending one.
    newer = await change(harness, sid, catalog.pro, pb.PLAN_CHANGE_TIMING_PERIOD_END)
    listed = await harness.stub.ListSchedules(
        api.ListSchedulesRequest(subscription_id=sid), timeout=T
    )
    states = {s.schedule_id: s.state for s in listed.schedules}
    assert states == {
        entry.schedule_id: pb.SCHEDULE_STATE_CANCELED,
        newer.schedule.schedule_id: pb.SCHEDULE_STATE_PENDING,
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CancelSchedule(
            api.CancelScheduleRequest(schedule_id=newer.schedule.schedule_id, org_id="other"),
            timeout=T,
        )
    assert details(caught.value)[0] == "SCHEDULE_NOT_FOUND"
    withdrawn = await harness.stub.CancelSchedule(
        api.CancelScheduleRequest(schedule_id=newer.schedule.schedule_id), timeout=T
    )
    assert withdrawn.schedule.state == pb.SCHEDULE_STATE_CANCELED
    assert list(withdrawn.subscription.pending_schedules) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CancelSchedule(
            api.CancelScheduleRequest(schedule_id=newer.schedule.schedule_id), timeout=T
        )
    assert details(caught.value)[0] == "SCHEDULE_NOT_PENDING"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.CancelSchedule(
            api.CancelScheduleRequest(schedule_id="no-such-schedule"), timeout=T
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    pending = await harness.stub.ListSchedules(
        api.ListSchedulesRequest(subscription_id=sid, state=pb.SCHEDULE_STATE_PENDING), timeout=T
    )
    assert list(pending.schedules) == []
    # Nothing changed yet: only "created" was emitted.
    await harness.wait_events(sid, ["created"])


async def test_immediate_downgrade_when_asked(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.basic)
    reply = await change(
        harness, sub.subscription_id, catalog.starter, pb.PLAN_CHANGE_TIMING_IMMEDIATE
    )
    assert reply.direction == pb.CHANGE_DIRECTION_DOWNGRADE
    assert reply.subscription.package_version_id == catalog.starter.package_version_id


async def test_plan_change_errors(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.basic)
    sid = sub.subscription_id
    for target, code, reason in [
        (catalog.basic, grpc.StatusCode.FAILED_PRECONDITION, "PLAN_UNCHANGED"),
        (catalog.euro, grpc.StatusCode.FAILED_PRECONDITION, "PLAN_INCOMPATIBLE"),
        (catalog.archived, grpc.StatusCode.FAILED_PRECONDITION, "PACKAGE_ARCHIVED"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await change(harness, sid, target)
        assert (caught.value.code(), details(caught.value)[0]) == (code, reason)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ChangePlan(
            api.ChangePlanRequest(subscription_id="", timing=42),  # type: ignore[arg-type]
            timeout=T,
        )
    assert set(details(caught.value)[2]) == {"subscription_id", "package_id", "timing"}
    # Nothing of the failed attempts stayed behind.
    got = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=sid), timeout=T
    )
    assert got.subscription == sub
    await harness.wait_events(sid, ["created"])


async def test_cancel_at_period_end_is_a_schedule_that_can_be_withdrawn(
    harness: Harness, catalog: Catalog
) -> None:
    sub = await create(harness, catalog.basic)
    sid = sub.subscription_id
    reply = await cancel(harness, sid, pb.CANCEL_TIMING_UNSPECIFIED)  # period end by default
    assert reply.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE
    assert reply.subscription.cancel_at_period_end
    assert reply.effective_time == sub.current_period_end_time
    assert reply.subscription.cancel_time == sub.current_period_end_time
    (entry,) = reply.subscription.pending_schedules
    assert entry.action == pb.SCHEDULE_ACTION_CANCEL
    withdrawn = await harness.stub.CancelSchedule(
        api.CancelScheduleRequest(schedule_id=entry.schedule_id), timeout=T
    )
    assert not withdrawn.subscription.cancel_at_period_end
    assert not withdrawn.subscription.HasField("cancel_time")


async def test_mutation_replay_by_request_id(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.basic)
    request = api.PauseSubscriptionRequest(subscription_id=sub.subscription_id, request_id="p-1")
    first = await harness.stub.PauseSubscription(request, timeout=T)
    again = await harness.stub.PauseSubscription(request, timeout=T)  # not ILLEGAL: a replay
    assert again == first
    await harness.wait_events(sub.subscription_id, ["created", "paused"])
