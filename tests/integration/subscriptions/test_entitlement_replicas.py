"""Two replicas on one database: what one commits reaches the other's cached
CheckEntitlement answers through PostgreSQL notifications. The TTL is an
hour, so only a notification can make these tests pass; replica A is
API-only (no consumers, no jobs) and still hears them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from tally.subscriptions.v1 import subscriptions_pb2 as api
from tally.subscriptions.v1 import subscriptions_pb2_grpc

from services.subscriptions.bootstrap import LISTENER_NAME, entitlement_cache_for, serving_tasks
from services.subscriptions.repository import entitlement_notices as notices
from services.subscriptions.repository.entitlement_cache import EntitlementCache
from services.subscriptions.repository.projections import EntitlementChanges
from tests.integration.subscriptions.test_entitlement_freshness import TTL_ENV, published
from tests.support.databases import backends_named
from tests.support.services import service_in_process
from tests.support.subscriptions import (
    Harness,
    T,
    cancel,
    create,
    new_id,
    pause,
    running_service,
)

pytestmark = pytest.mark.integration

FEATURE = "api_calls"


@dataclass
class Replicas:
    b: Harness  # a worker: commits here
    a: subscriptions_pb2_grpc.SubscriptionsServiceStub  # API-only: asked here
    cache: EntitlementCache  # replica A's
    b_cache: EntitlementCache
    channel: str
    conn: asyncpg.Connection

    async def check(self, org: str, on_b: bool = False) -> api.CheckEntitlementResponse:
        stub = self.b.stub if on_b else self.a
        reply: api.CheckEntitlementResponse = await stub.CheckEntitlement(
            api.CheckEntitlementRequest(org_id=org, feature_key=FEATURE), timeout=T
        )
        return reply

    async def settled(self, on_b: bool = False) -> None:
        """Every notification sent so far has reached replica A (or B).

        They arrive in commit order, so once a marker sent now has forgotten
        its org, the ones before it have been applied too.
        """
        cache = self.b_cache if on_b else self.cache
        marker = new_id("marker")
        await self.check(marker, on_b)
        assert (marker, FEATURE) in cache
        payload = notices.payload_for(EntitlementChanges(orgs={marker}), origin="test")
        await self.conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)

        async def applied() -> bool:
            return (marker, FEATURE) not in cache

        await self.b.wait_for(applied, timeout=5)

    async def cached(self, *orgs: str) -> None:
        """Ask A for ``orgs`` once nothing in flight can forget them."""
        await self.settled()
        for org in orgs:
            await self.check(org)
            assert (org, FEATURE) in self.cache

    async def listening(self) -> bool:
        return self.cache.listening


@pytest.fixture(scope="module")
async def replicas(database_url: str, nats_url: str) -> AsyncIterator[Replicas]:
    previous = os.environ.get(TTL_ENV)
    os.environ[TTL_ENV] = "3600"
    try:
        async with (
            running_service(database_url, nats_url) as b,
            service_in_process(
                "subscriptions", database_url, nats_url, worker_billing_enabled=False
            ) as a,
            grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as channel,
        ):
            assert a.context is not None and b.runtime.context is not None
            conn = await asyncpg.connect(database_url)
            try:
                yield Replicas(
                    b,
                    subscriptions_pb2_grpc.SubscriptionsServiceStub(channel),
                    entitlement_cache_for(a.context),
                    entitlement_cache_for(b.runtime.context),
                    notices.channel_for(a.context.database.schema),
                    conn,
                )
            finally:
                await conn.close()
    finally:
        if previous is None:
            os.environ.pop(TTL_ENV, None)
        else:
            os.environ[TTL_ENV] = previous


async def test_a_commit_on_one_replica_reaches_the_others_answers(replicas: Replicas) -> None:
    r = replicas
    plan = await published(r.b, "replicas", "100")
    sub, other = await create(r.b, plan), await create(r.b, plan)
    await r.b.wait_for(r.listening)
    await r.cached(sub.org_id, other.org_id)
    assert (await r.check(sub.org_id)).allowed
    await cancel(r.b, sub.subscription_id)

    async def canceled() -> bool:
        reply = await r.check(sub.org_id)
        return reply.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION

    await r.b.wait_for(canceled, timeout=5)
    await r.settled()
    assert (other.org_id, FEATURE) in r.cache  # its answer was not forgotten
    assert (await r.check(other.org_id)).allowed


async def test_a_replica_skips_the_notifications_of_its_own_commits(replicas: Replicas) -> None:
    r = replicas
    assert r.b.runtime.context is not None
    # What B's running listener does with each notification.
    (run,) = serving_tasks(r.b.runtime.context)
    heard = run.__self__.on_notify  # type: ignore[attr-defined]
    plan = await published(r.b, "own", "100")
    sub = await create(r.b, plan)
    await r.check(sub.org_id, on_b=True)
    assert (sub.org_id, FEATURE) in r.b_cache
    changes = EntitlementChanges(orgs={sub.org_id})
    heard(notices.payload_for(changes, origin=r.b_cache.origin))
    assert (sub.org_id, FEATURE) in r.b_cache  # its commit forgot it already
    heard(notices.payload_for(changes, origin=r.cache.origin))
    assert (sub.org_id, FEATURE) not in r.b_cache


async def test_after_losing_its_listener_a_replica_starts_over_and_hears_again(
    replicas: Replicas,
) -> None:
    r = replicas
    plan = await published(r.b, "reconnect", "100")
    sub = await create(r.b, plan)
    await r.b.wait_for(r.listening)
    await r.cached(sub.org_id)
    old = await listeners(r.conn)
    assert len(old) == 2  # one per replica
    await r.conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1::int[])", old
    )

    async def back() -> bool:
        now = await listeners(r.conn)
        return len(now) == 2 and not set(now) & set(old) and r.cache.listening

    await r.b.wait_for(back, timeout=10)
    # Whatever was committed while nobody listened is unknown: nothing kept.
    assert (sub.org_id, FEATURE) not in r.cache
    await r.cached(sub.org_id)
    await pause(r.b, sub.subscription_id)

    async def paused() -> bool:
        reply = await r.check(sub.org_id)
        return reply.reason == api.ENTITLEMENT_REASON_NO_ACTIVE_SUBSCRIPTION

    await r.b.wait_for(paused, timeout=5)


async def listeners(conn: asyncpg.Connection) -> list[int]:
    return await backends_named(conn, LISTENER_NAME)


async def test_listening_can_be_switched_off_for_a_transaction_pooler(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = replicas.b.runtime.context
    assert context is not None
    assert len(serving_tasks(context)) == 1
    monkeypatch.setenv("SUBSCRIPTIONS_ENTITLEMENT_LISTEN", "false")
    assert serving_tasks(context) == ()
