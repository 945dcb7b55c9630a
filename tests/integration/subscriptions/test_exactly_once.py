"""period_closed exactly once across replicas, and the unique key as the last
guard: a period already recorded as closed rolls the whole run back instead
of emitting its event twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import insert, select
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api
from tally.subscriptions.v1 import subscriptions_pb2_grpc

from services.kit.protoconv import to_timestamp
from services.subscriptions.repository import closed_period_table, subscription_table
from tests.support.services import service_in_process
from tests.support.subscriptions import Harness, new_id, package_version, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def harness(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_service(database_url, nats_url) as h:
        yield h


async def backdated(h: Harness, version_id: str, package_id: str, start: datetime) -> str:
    reply = await h.stub.CreateSubscription(
        api.CreateSubscriptionRequest(
            org_id=new_id("org"),
            package_id=package_id,
            package_version_id=version_id,
            billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
            start_time=to_timestamp(start),
            allow_multiple=True,
        ),
        timeout=5,
    )
    return reply.subscription.subscription_id


async def test_two_replicas_running_the_clock_close_each_period_once(
    harness: Harness, database_url: str, nats_url: str
) -> None:
    version = package_version("replicas")
    await harness.publish_version(version)
    sids = [
        await backdated(
            harness,
            version.package_version_id,
            version.package_id,
            datetime(2022, 1, day, tzinfo=UTC),
        )
        for day in range(1, 6)
    ]
    async with (
        service_in_process(
            "subscriptions", database_url, nats_url, worker_billing_enabled=False
        ) as replica,
        grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel,
    ):
        other = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)
        request = api.ClosePeriodsRequest(now=to_timestamp(datetime(2022, 4, 10, tzinfo=UTC)))
        replies = await asyncio.gather(
            harness.stub.ClosePeriods(request, timeout=10),
            other.ClosePeriods(request, timeout=10),
            harness.stub.ClosePeriods(request, timeout=10),
            other.ClosePeriods(request, timeout=10),
        )
    closed = [
        (p.subscription_id, p.period_start_time.seconds) for r in replies for p in r.closed_periods
    ]
    assert len(closed) == len(set(closed)) == 5 * 3  # Jan, Feb, Mar of each
    for sid in sids:

        async def published(sid: str = sid) -> bool:
            names = [n for n, _ in await harness.events(sid)]
            return names.count("renewed") == 3

        await harness.wait_for(published)
        names = [n for n, _ in await harness.events(sid)]
        assert names.count("period_closed") == 3


async def test_an_already_closed_period_rolls_the_run_back(harness: Harness) -> None:
    version = package_version("guard")
    await harness.publish_version(version)
    start = datetime(2023, 1, 15, tzinfo=UTC)
    sid = await backdated(harness, version.package_version_id, version.package_id, start)
    # As if another writer had closed this period without moving the
    # subscription on: only the unique key stands between us and a double.
    async with harness.database.session() as session, session.begin():
        await session.execute(
            insert(closed_period_table).values(
                subscription_id=sid,
                period_start=start,
                org_id="o",
                period_end=datetime(2023, 2, 15, tzinfo=UTC),
                package_version_id=version.package_version_id,
                segments=[],
                close_time=start,
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ClosePeriods(
            api.ClosePeriodsRequest(now=to_timestamp(datetime(2023, 2, 20, tzinfo=UTC))),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    async with harness.database.session() as session:
        period_start = await session.scalar(
            select(subscription_table.c.current_period_start).where(
                subscription_table.c.subscription_id == sid
            )
        )
    assert period_start == start  # nothing moved
    await harness.wait_events(sid, ["created"])
    await asyncio.sleep(0.3)  # had anything else been committed, it would show by now
    assert [n for n, _ in await harness.events(sid)] == ["created"]
