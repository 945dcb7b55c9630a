"""The billing clock: ClosePeriods closes each due period exactly once, run
twice, run concurrently, or bounded by max_periods; rollovers apply due
schedule entries and period-end cancellations; trials end; and the CLI
drives it. Instants only move forward in this module (the clock refuses to
go back), so the tests run in file order."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime

import grpc
import pytest
from tally.events.v1 import subscriptions_events_pb2 as ev
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from services.kit.protoconv import to_timestamp
from tests.integration.subscriptions.conftest import Catalog
from tests.support.subscriptions import Harness, T, cancel, change, create, details

pytestmark = pytest.mark.integration


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def close(h: Harness, now: datetime | None, max_periods: int = 0) -> api.ClosePeriodsResponse:
    return await h.stub.ClosePeriods(
        api.ClosePeriodsRequest(now=to_timestamp(now), max_periods=max_periods), timeout=T
    )


def closed_for(reply: api.ClosePeriodsResponse, sid: str) -> list[datetime]:
    return [
        p.period_start_time.ToDatetime(tzinfo=UTC)
        for p in reply.closed_periods
        if p.subscription_id == sid
    ]


async def test_max_periods_bounds_a_run(harness: Harness, catalog: Catalog) -> None:
    sub = await create(
        harness,
        catalog.basic,
        billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
        start_time=to_timestamp(at(2020, 1, 5)),
    )
    first = await close(harness, at(2020, 4, 5), max_periods=1)
    assert closed_for(first, sub.subscription_id) == [at(2020, 1, 5)]
    assert first.more_due
    rest = await close(harness, at(2020, 4, 5))
    assert closed_for(rest, sub.subscription_id) == [at(2020, 2, 5), at(2020, 3, 5)]
    assert not rest.more_due
    got = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=sub.subscription_id), timeout=T
    )
    assert got.subscription.current_period_start_time.ToDatetime(tzinfo=UTC) == at(2020, 4, 5)

    # Periods page newest first: the open one, then the closed ones.
    starts: list[tuple[datetime, bool]] = []
    token = ""
    while True:
        page = await harness.stub.ListBillingPeriods(
            api.ListBillingPeriodsRequest(
                subscription_id=sub.subscription_id, page_size=3, page_token=token
            ),
            timeout=T,
        )
        starts += [(p.period_start_time.ToDatetime(tzinfo=UTC), p.closed) for p in page.periods]
        token = page.next_page_token
        if not token:
            break
    assert starts == [
        (at(2020, 4, 5), False),
        (at(2020, 3, 5), True),
        (at(2020, 2, 5), True),
        (at(2020, 1, 5), True),
    ]


async def test_a_period_closes_once_when_run_twice_or_concurrently(
    harness: Harness, catalog: Catalog
) -> None:
    one = await create(
        harness,
        catalog.basic,
        billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
        start_time=to_timestamp(at(2021, 1, 10)),
    )
    first = await close(harness, at(2021, 2, 10))
    assert closed_for(first, one.subscription_id) == [at(2021, 1, 10)]
    again = await close(harness, at(2021, 2, 10))
    assert closed_for(again, one.subscription_id) == []

    two = await create(
        harness,
        catalog.basic,
        billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
        start_time=to_timestamp(at(2021, 1, 20)),
    )
    replies = await asyncio.gather(*(close(harness, at(2021, 2, 20)) for _ in range(3)))
    assert sorted(len(closed_for(r, two.subscription_id)) for r in replies) == [0, 0, 1]

    events = await harness.wait_events(two.subscription_id, ["created", "period_closed", "renewed"])
    closed = events[1][1]
    assert isinstance(closed, ev.SubscriptionPeriodClosedEvent)
    assert closed.currency_code == "USD"
    assert closed.period.period_start_time.ToDatetime(tzinfo=UTC) == at(2021, 1, 20)
    assert closed.period.period_end_time.ToDatetime(tzinfo=UTC) == at(2021, 2, 20)
    assert not closed.subscription_ended
    assert closed.next_period_start_time.ToDatetime(tzinfo=UTC) == at(2021, 2, 20)
    assert closed.next_period_end_time.ToDatetime(tzinfo=UTC) == at(2021, 3, 20)
    assert closed.next_package_version_id == catalog.basic.package_version_id
    assert [s.kind for s in closed.period.segments] == [pb.SEGMENT_KIND_ACTIVE]
    renewed = events[2][1]
    assert isinstance(renewed, ev.SubscriptionRenewedEvent)
    assert renewed.period_start_time == closed.next_period_start_time
    await harness.wait_events(one.subscription_id, ["created", "period_closed", "renewed"])

    periods = await harness.stub.ListBillingPeriods(
        api.ListBillingPeriodsRequest(subscription_id=one.subscription_id), timeout=T
    )
    assert [(p.period_start_time.ToDatetime(tzinfo=UTC), p.closed) for p in periods.periods] == [
        (at(2021, 2, 10), False),
        (at(2021, 1, 10), True),
    ]


async def test_the_clock_does_not_go_back(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await close(harness, at(2021, 1, 1))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, meta, _ = details(caught.value)
    assert reason == "CLOCK_WENT_BACKWARDS"
    assert meta["clock_time"].startswith("2021-02-20")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await close(harness, at(2021, 3, 1), max_periods=-1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(details(caught.value)[2]) == {"max_periods"}


async def test_rollover_applies_schedules_cancellations_and_ends_trials(
    harness: Harness, catalog: Catalog
) -> None:
    # Current subscriptions: their first period ends at the next 1st.
    downgrading = await create(harness, catalog.basic)
    leaving = await create(harness, catalog.basic)
    trialing = await create(harness, catalog.trial)
    down = await change(harness, downgrading.subscription_id, catalog.starter)
    assert down.HasField("schedule")
    await cancel(harness, leaving.subscription_id, pb.CANCEL_TIMING_PERIOD_END, "budget")
    boundary = downgrading.current_period_end_time.ToDatetime(tzinfo=UTC)

    reply = await close(harness, boundary)
    assert reply.schedules_applied >= 2
    got = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=downgrading.subscription_id), timeout=T
    )
    assert got.subscription.package_version_id == catalog.starter.package_version_id
    assert got.subscription.current_period_start_time.ToDatetime(tzinfo=UTC) == boundary
    events = await harness.wait_events(
        downgrading.subscription_id, ["created", "period_closed", "changed", "renewed"]
    )
    closed, changed = events[1][1], events[2][1]
    assert isinstance(closed, ev.SubscriptionPeriodClosedEvent)
    assert closed.package_version_id == catalog.basic.package_version_id
    assert closed.next_package_version_id == catalog.starter.package_version_id
    assert isinstance(changed, ev.SubscriptionChangedEvent)
    assert changed.timing == pb.PLAN_CHANGE_TIMING_PERIOD_END
    assert changed.effective_time.ToDatetime(tzinfo=UTC) == boundary
    assert changed.direction == pb.CHANGE_DIRECTION_DOWNGRADE
    applied = await harness.stub.ListSchedules(
        api.ListSchedulesRequest(
            subscription_id=downgrading.subscription_id, state=pb.SCHEDULE_STATE_APPLIED
        ),
        timeout=T,
    )
    assert [s.schedule_id for s in applied.schedules] == [down.schedule.schedule_id]

    gone = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=leaving.subscription_id), timeout=T
    )
    assert gone.subscription.state == pb.SUBSCRIPTION_STATE_CANCELED
    events = await harness.wait_events(
        leaving.subscription_id, ["created", "period_closed", "canceled"]
    )
    final = events[1][1]
    assert isinstance(final, ev.SubscriptionPeriodClosedEvent)
    assert final.subscription_ended
    assert not final.HasField("next_period_start_time")
    canceled = events[2][1]
    assert isinstance(canceled, ev.SubscriptionCanceledEvent)
    assert canceled.timing == pb.CANCEL_TIMING_PERIOD_END
    assert canceled.effective_time.ToDatetime(tzinfo=UTC) == boundary
    assert canceled.reason == "budget"

    # The trial ends at its exact instant, whichever side of the boundary.
    trial_end = trialing.trial_end_time.ToDatetime(tzinfo=UTC)
    await close(harness, max(boundary, trial_end))
    after = await harness.stub.GetSubscription(
        api.GetSubscriptionRequest(subscription_id=trialing.subscription_id), timeout=T
    )
    assert after.subscription.state == pb.SUBSCRIPTION_STATE_ACTIVE
    names: list[str] = []

    async def trial_end_published() -> bool:
        nonlocal names
        names = [n for n, _ in await harness.events(trialing.subscription_id)]
        return "trial_ended" in names

    await harness.wait_for(trial_end_published)  # the relay publishes after commit
    assert names.count("trial_ended") == 1
    ended = (await harness.events(trialing.subscription_id, "trial_ended"))[0][1]
    assert isinstance(ended, ev.SubscriptionTrialEndedEvent)
    assert ended.trial_end_time == trialing.trial_end_time
    periods = await harness.stub.ListBillingPeriods(
        api.ListBillingPeriodsRequest(subscription_id=trialing.subscription_id), timeout=T
    )
    kinds = [s.kind for p in reversed(periods.periods) for s in p.segments]
    assert kinds[0] == pb.SEGMENT_KIND_TRIAL
    assert kinds[-1] == pb.SEGMENT_KIND_ACTIVE


async def test_cli_close_periods_calls_the_service(harness: Harness, catalog: Catalog) -> None:
    sub = await create(harness, catalog.basic)
    boundary = sub.current_period_end_time.ToDatetime(tzinfo=UTC)
    # A later boundary than any previous test used: the next 1st after it.
    now = boundary.replace(month=boundary.month % 12 + 1, year=boundary.year + boundary.month // 12)
    env = {**os.environ, "SUBSCRIPTIONS_ADDR": harness.address}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "billing",
        "close-periods",
        "--now",
        now.isoformat().replace("+00:00", "Z"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("closed ")
    count = int(out.decode().split()[1])
    assert count >= 2  # this subscription's two periods, and the earlier tests' ones
    periods = await harness.stub.ListBillingPeriods(
        api.ListBillingPeriodsRequest(subscription_id=sub.subscription_id), timeout=T
    )
    assert [p.closed for p in periods.periods] == [False, True, True]

    # Run again at the same instant: nothing more to close.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "billing",
        "close-periods",
        "--now",
        now.isoformat(),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    assert out.decode().startswith("closed 0 periods")
