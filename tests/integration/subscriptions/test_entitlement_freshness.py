"""CheckEntitlement answers from a per-process cache, yet every answer after
a commit of this replica reflects it. The cache's TTL is an hour here, so
only the commit forgetting the answers it changed can make a test pass."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC

import pytest
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.events.v1 import catalog_events_pb2
from tally.subscriptions.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import subscriptions_pb2 as api

from devtools.bench import latency
from services.subscriptions.repository import SubscriptionsRepository
from tests.integration.subscriptions.conftest import LIMITS
from tests.support.subscriptions import (
    Harness,
    T,
    cancel,
    change,
    create,
    new_id,
    package_version,
    pause,
    resume,
    running_service,
    usage_event,
)

pytestmark = pytest.mark.integration

TTL_ENV = "SUBSCRIPTIONS_ENTITLEMENT_CACHE_SECONDS"


@pytest.fixture(scope="module")
async def harness(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    previous = os.environ.get(TTL_ENV)
    os.environ[TTL_ENV] = "3600"
    try:
        async with running_service(database_url, nats_url) as h:
            yield h
    finally:
        if previous is None:
            os.environ.pop(TTL_ENV, None)
        else:
            os.environ[TTL_ENV] = previous


def limits(api_calls: str) -> list[catalog_pb2.FeatureLimit]:
    out = [catalog_pb2.FeatureLimit() for _ in LIMITS]
    for mine, theirs in zip(out, LIMITS, strict=True):
        mine.CopyFrom(theirs)
    out[0].limit = api_calls
    return out


async def check(h: Harness, org: str, feature: str = "api_calls") -> api.CheckEntitlementResponse:
    reply: api.CheckEntitlementResponse = await h.stub.CheckEntitlement(
        api.CheckEntitlementRequest(org_id=org, feature_key=feature), timeout=T
    )
    return reply


async def published(h: Harness, code: str, api_calls: str) -> catalog_pb2.PackageVersion:
    version = package_version(code, limits=limits(api_calls))
    await h.publish_version(version)
    return version


async def test_a_usage_total_reaches_its_org_and_leaves_others_alone(harness: Harness) -> None:
    plan = await published(harness, "usage", "100")
    sub, other = await create(harness, plan), await create(harness, plan)
    assert (await check(harness, sub.org_id)).used == "0"
    assert (await check(harness, other.org_id)).used == "0"
    start = sub.current_period_start_time.ToDatetime(tzinfo=UTC)
    end = sub.current_period_end_time.ToDatetime(tzinfo=UTC)
    await harness.publish(
        usage_event(sub.subscription_id, sub.org_id, "api_calls", "40", start, end, 1),
        sub.subscription_id,
    )

    async def used_40() -> bool:
        return (await check(harness, sub.org_id)).used == "40"

    await harness.wait_for(used_40)
    assert (await check(harness, other.org_id)).used == "0"


async def test_state_changes_answer_at_once(harness: Harness) -> None:
    plan = await published(harness, "states", "100")
    org = new_id("org")
    nobody = await check(harness, org)
    assert nobody.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION
    sub = await create(harness, plan, org_id=org)
    assert (await check(harness, org)).allowed
    await pause(harness, sub.subscription_id)
    paused = await check(harness, org)
    assert paused.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION
    await resume(harness, sub.subscription_id)
    assert (await check(harness, org)).allowed
    await cancel(harness, sub.subscription_id)
    canceled = await check(harness, org)
    assert canceled.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION


async def test_a_plan_change_answers_with_the_new_version_at_once(harness: Harness) -> None:
    small = await published(harness, "small", "100")
    large = await published(harness, "large", "1000")
    sub = await create(harness, small)
    assert (await check(harness, sub.org_id)).limit == "100"
    await change(harness, sub.subscription_id, large, pb.PLAN_CHANGE_TIMING_IMMEDIATE)
    assert (await check(harness, sub.org_id)).limit == "1000"


async def test_new_limits_on_a_version_reach_every_org_on_it(harness: Harness) -> None:
    plan = await published(harness, "limits", "100")
    subs = [await create(harness, plan), await create(harness, plan)]
    for sub in subs:
        assert (await check(harness, sub.org_id)).limit == "100"
    # The projection replaces a version's limits when its event arrives again.
    plan.feature_limits[0].limit = "250"
    await harness.publish(
        catalog_events_pb2.PackagePublishedEvent(package_version=plan), plan.package_id
    )

    async def raised() -> bool:
        return all([(await check(harness, s.org_id)).limit == "250" for s in subs])

    await harness.wait_for(raised)


async def test_the_bulk_read_answers_what_one_read_per_pair_does(harness: Harness) -> None:
    small = await published(harness, "bulk-small", "100")
    large = await published(harness, "bulk-large", "1000")
    used = await create(harness, small)
    start = used.current_period_start_time.ToDatetime(tzinfo=UTC)
    end = used.current_period_end_time.ToDatetime(tzinfo=UTC)
    await harness.publish(
        usage_event(used.subscription_id, used.org_id, "api_calls", "12.5", start, end, 1),
        used.subscription_id,
    )
    two = await create(harness, small)
    await create(harness, large, org_id=two.org_id, allow_multiple=True)
    paused = await create(harness, large)
    await pause(harness, paused.subscription_id)

    async def usage_applied() -> bool:
        return (await check(harness, used.org_id)).used == "12.5"

    await harness.wait_for(usage_applied)
    orgs = [used.org_id, two.org_id, paused.org_id, new_id("org")]
    keys = [(org, f) for org in orgs for f in ("api_calls", "seats", "sso", "warp_drive")]
    async with harness.database.session() as session:
        repo = SubscriptionsRepository(session)
        bulk = await repo.entitlements(keys)
        one_by_one = {key: await repo.entitlement(*key) for key in keys}
    assert bulk == one_by_one
    assert bulk[(used.org_id, "api_calls")] is not None
    assert bulk[(paused.org_id, "seats")] is None


async def test_concurrent_misses_each_get_the_databases_answer(harness: Harness) -> None:
    small = await published(harness, "gathered-small", "100")
    large = await published(harness, "gathered-large", "1000")
    orgs = [(await create(harness, plan)).org_id for plan in (small, large, small, large)]
    orgs.append(new_id("org"))  # never subscribed
    asks = [(org, f) for org in orgs for f in ("api_calls", "seats", "warp_drive")]
    # Not asked before and the TTL is an hour: every one of them is a miss.
    replies = await asyncio.gather(*(check(harness, org, f) for org, f in asks))
    async with harness.database.session() as session:
        repo = SubscriptionsRepository(session)
        rows = [await repo.entitlement(org, f) for org, f in asks]
    for (org, feature), reply, row in zip(asks, replies, rows, strict=True):
        assert reply.subscription_id == (row.subscription_id if row else ""), (org, feature)
        limit = row.limit if row else None
        expected = "" if limit is None or limit.limit is None else str(limit.limit)
        assert reply.limit == expected, (org, feature)
    assert {r.limit for r in replies} >= {"100", "1000"}


async def test_the_bench_open_loop_sends_every_call_once(harness: Harness) -> None:
    plan = await published(harness, "bench", "100")
    orgs = [(await create(harness, plan)).org_id for _ in range(3)]
    latencies, errors, _rate = await latency.check_entitlement_at_rate(
        harness.channel, orgs, rate=100, seconds=0.3, warm_seconds=0.1
    )
    assert (len(latencies), errors) == (30, 0)
