"""Composition root of the subscriptions service: the one place that wires it."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field

from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Subscription
from services.kit.db import Database
from services.kit.pglisten import PgListener
from services.kit.runtime import Job, ServiceContext, ServiceSpec
from services.kit.settings import CommonSettings, load_settings
from services.kit.tasks import raise_if_cancelling
from services.kit.uow import UnitOfWork
from services.subscriptions import consumers, grpc_api, handlers, repository
from services.subscriptions.repository import SubscriptionsUnitOfWork
from services.subscriptions.repository import entitlement_notices as notices
from services.subscriptions.repository.entitlement_cache import EntitlementCache

log = logging.getLogger(__name__)

# Periods closed per transaction, so one run never holds thousands of locks.
CLOCK_BATCH = 500
# pg_stat_activity's name for the connection that hears entitlement changes.
LISTENER_NAME = "tally-subscriptions-entitlements"


class SubscriptionsSettings(CommonSettings):
    """Knobs of the subscriptions service only (``SUBSCRIPTIONS_*``)."""

    env_prefix_name: ClassVar[str] = "SUBSCRIPTIONS"

    # How often the in-process billing clock runs; ops may also drive it with
    # `tally billing close-periods --now`. 0 turns the loop off.
    clock_interval_seconds: float = Field(default=60.0, ge=0)
    # How long another replica's commits may take to reach this one's
    # CheckEntitlement answers while their notifications are not heard (this
    # replica's own commits apply at once); 0 reads the database on every call.
    entitlement_cache_seconds: float = Field(default=1.0, ge=0)
    # While they are heard, how long an answer no notification forgot is kept
    # anyway: a bound should a change ever reach the rows without one.
    entitlement_cache_max_seconds: float = Field(default=300.0, gt=0)
    # Off behind a proxy that pools connections per transaction (PgBouncer's
    # transaction mode), where LISTEN hears nothing: answers then keep to the TTL.
    entitlement_listen: bool = True


def clock_interval() -> float:
    return load_settings(SubscriptionsSettings).clock_interval_seconds


# One cache per running service (tests run several in one process).
_entitlement_caches: weakref.WeakKeyDictionary[Database, EntitlementCache] = (
    weakref.WeakKeyDictionary()
)


def entitlement_cache_for(ctx: ServiceContext) -> EntitlementCache:
    cache = _entitlement_caches.get(ctx.database)
    if cache is None:
        settings = load_settings(SubscriptionsSettings)
        cache = _entitlement_caches[ctx.database] = EntitlementCache(
            settings.entitlement_cache_seconds,
            max_seconds=settings.entitlement_cache_max_seconds,
        )
    return cache


def serving_tasks(ctx: ServiceContext) -> Sequence[Job]:
    """On every replica: hear the other replicas' commits that change entitlements."""
    cache = entitlement_cache_for(ctx)
    if cache.ttl <= 0 or not load_settings(SubscriptionsSettings).entitlement_listen:
        return ()  # no cache, or answers kept to the TTL

    def forget(payload: str) -> None:
        origin, changes = notices.changes_from(payload)
        if origin != cache.origin:  # its own commits forgot theirs already
            cache.forget(changes)

    listener = PgListener(
        ctx.settings.database_url,
        notices.channel_for(ctx.database.schema),
        on_notify=forget,
        on_listening=cache.set_listening,
        application_name=LISTENER_NAME,
    )
    return (listener.run,)


def uow_factory(ctx: ServiceContext) -> Callable[[], SubscriptionsUnitOfWork]:
    cache = entitlement_cache_for(ctx)

    def make() -> SubscriptionsUnitOfWork:
        return SubscriptionsUnitOfWork(
            ctx.database,
            ctx.outbox,
            on_events_committed=ctx.relay.wake,
            on_committed=cache.forget,
            origin=cache.origin,
        )

    return make


def _uow_factory(ctx: ServiceContext) -> Callable[[], UnitOfWork]:
    return uow_factory(ctx)


async def run_clock_once(make_uow: Callable[[], SubscriptionsUnitOfWork], clock: Clock) -> int:
    """Close everything due now, one bounded transaction at a time."""
    total = 0
    while True:
        async with make_uow() as uow:
            out = await handlers.close_periods(
                uow, handlers.ClosePeriods(max_periods=CLOCK_BATCH), clock
            )
            await uow.commit()
        total += len(out.closed)
        if not out.more_due:
            return total


def jobs(ctx: ServiceContext, clock: Clock | None = None) -> Sequence[Job]:
    interval = clock_interval()
    if interval == 0:
        return ()
    the_clock: Clock = clock or SystemClock()
    make_uow = uow_factory(ctx)

    async def billing_clock() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                closed = await run_clock_once(make_uow, the_clock)
            except Exception:
                raise_if_cancelling()
                # One failed run (a deadlock, a restart of PostgreSQL) must not
                # stop the clock: the next tick closes what this one missed.
                log.exception("subscriptions: billing clock run failed")
                continue
            if closed:
                log.info("subscriptions: billing clock closed %d periods", closed)

    return (billing_clock,)


def _subscriptions(ctx: ServiceContext) -> Sequence[Subscription[Any]]:
    return consumers.subscriptions(
        messages_per_transaction=ctx.settings.consumer_messages_per_transaction
    )


SPEC = ServiceSpec(
    name="subscriptions",
    metadata=repository.metadata,
    register=grpc_api.register,
    subscriptions=_subscriptions,
    jobs=jobs,
    serving_tasks=serving_tasks,
    uow_factory=_uow_factory,
)
