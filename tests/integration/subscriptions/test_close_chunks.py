"""ClosePeriods saves a whole chunk of subscriptions at once: each period closes
once with its events, a chunk stops at max_periods, and a period someone else
already recorded undoes the whole chunk. Instants only move forward in this
module (the clock refuses to go back), so the tests run in file order."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import delete
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from services.kit.protoconv import to_timestamp
from services.subscriptions.repository.tables import closed_period_table
from tests.integration.subscriptions.conftest import Catalog
from tests.support.subscriptions import Harness, T, create, details

pytestmark = pytest.mark.integration


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def close(h: Harness, now: datetime, max_periods: int = 0) -> api.ClosePeriodsResponse:
    return await h.stub.ClosePeriods(
        api.ClosePeriodsRequest(now=to_timestamp(now), max_periods=max_periods), timeout=T
    )


async def period_start(h: Harness, sid: str) -> datetime:
    got = await h.stub.GetSubscription(api.GetSubscriptionRequest(subscription_id=sid), timeout=T)
    return got.subscription.current_period_start_time.ToDatetime(tzinfo=UTC)


async def anniversary(h: Harness, catalog: Catalog, start: datetime) -> str:
    sub = await create(
        h,
        catalog.basic,
        billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
        start_time=to_timestamp(start),
    )
    return sub.subscription_id


async def test_a_chunk_closes_each_period_once_up_to_max_periods(
    harness: Harness, catalog: Catalog
) -> None:
    subs = [await anniversary(harness, catalog, at(2022, 1, day)) for day in range(1, 7)]
    first = await close(harness, at(2022, 2, 27), max_periods=4)
    assert len(first.closed_periods) == 4 and first.more_due
    rest = await close(harness, at(2022, 2, 27))
    assert len(rest.closed_periods) == 2 and not rest.more_due
    closed = sorted(p.subscription_id for p in [*first.closed_periods, *rest.closed_periods])
    assert closed == sorted(subs)
    for day, sid in enumerate(subs, start=1):
        assert await period_start(harness, sid) == at(2022, 2, day)
        await harness.wait_events(sid, ["created", "period_closed", "renewed"])


async def test_a_period_already_recorded_undoes_the_whole_chunk(
    harness: Harness, catalog: Catalog
) -> None:
    first = await anniversary(harness, catalog, at(2022, 3, 1))
    second = await anniversary(harness, catalog, at(2022, 3, 2))
    ctx = harness.runtime.context
    assert ctx is not None
    # Another replica recorded the second one's close, as far as the unique key knows.
    row = {
        "subscription_id": second,
        "period_start": at(2022, 3, 2),
        "org_id": "org-elsewhere",
        "period_end": at(2022, 4, 2),
        "package_version_id": catalog.basic.package_version_id,
        "segments": [],
        "close_time": at(2022, 4, 2),
    }
    async with ctx.database.session() as session, session.begin():
        await session.execute(closed_period_table.insert().values(**row))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await close(harness, at(2022, 4, 3))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert details(caught.value)[0] == "PERIOD_ALREADY_CLOSED"
    assert await period_start(harness, first) == at(2022, 3, 1)  # nothing of the chunk stayed
    assert [n for n, _ in await harness.events(first)] == ["created"]

    async with ctx.database.session() as session, session.begin():
        await session.execute(
            delete(closed_period_table).where(closed_period_table.c.subscription_id == second)
        )
    retried = await close(harness, at(2022, 4, 3))
    assert {first, second} <= {p.subscription_id for p in retried.closed_periods}
    for sid in (first, second):
        await harness.wait_events(sid, ["created", "period_closed", "renewed"])
