"""The billing clock also runs as a loop inside the service: an overdue
period closes without anyone calling ClosePeriods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from services.kit.protoconv import to_timestamp
from tests.support.subscriptions import Harness, new_id, package_version, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def looping(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with running_service(database_url, nats_url, clock_interval=0.2) as h:
        yield h


async def test_the_loop_closes_overdue_periods(looping: Harness) -> None:
    version = package_version("loop")
    await looping.publish_version(version)
    reply = await looping.stub.CreateSubscription(
        api.CreateSubscriptionRequest(
            org_id=new_id("org"),
            package_id=version.package_id,
            billing_anchor=pb.BILLING_ANCHOR_ANNIVERSARY,
            start_time=to_timestamp(datetime(2020, 1, 1, tzinfo=UTC)),
        ),
        timeout=5,
    )
    sid = reply.subscription.subscription_id

    async def caught_up() -> bool:
        got = await looping.stub.GetSubscription(
            api.GetSubscriptionRequest(subscription_id=sid), timeout=5
        )
        end = got.subscription.current_period_end_time.ToDatetime(tzinfo=UTC)
        return end > datetime.now(UTC)

    await looping.wait_for(caught_up, timeout=15)
    closed_months = (datetime.now(UTC).year - 2020) * 12 + datetime.now(UTC).month - 1
    names: list[str] = []

    async def all_published() -> bool:
        nonlocal names
        names = [n for n, _ in await looping.events(sid)]
        return names.count("renewed") >= closed_months

    await looping.wait_for(all_published)
    # Every month since January 2020, each exactly once.
    assert names.count("period_closed") == names.count("renewed") == closed_months
