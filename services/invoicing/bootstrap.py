"""Composition root of the invoicing service: the one place that wires it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from services.invoicing import consumers, grpc_api, handlers, repository
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.settings import invoicing_settings, policy
from services.invoicing.usage_client import shared_reader
from services.kit.clock import Clock, SystemClock
from services.kit.consumer import Subscription
from services.kit.runtime import Job, ServiceContext, ServiceSpec
from services.kit.tasks import raise_if_cancelling
from services.kit.uow import UnitOfWork

log = logging.getLogger(__name__)


def uow_factory(ctx: ServiceContext) -> Callable[[], InvoicingUnitOfWork]:
    def make() -> InvoicingUnitOfWork:
        return InvoicingUnitOfWork(ctx.database, ctx.outbox, on_events_committed=ctx.relay.wake)

    return make


def _uow_factory(ctx: ServiceContext) -> Callable[[], UnitOfWork]:
    return uow_factory(ctx)


def _subscriptions(ctx: ServiceContext) -> Sequence[Subscription[Any]]:
    s = invoicing_settings()
    return consumers.subscriptions(
        shared_reader(s.usage_addr, s.usage_deadline_seconds),
        policy(s),
        concurrency=ctx.settings.consumer_concurrency,
        messages_per_transaction=ctx.settings.consumer_messages_per_transaction,
    )


def jobs(ctx: ServiceContext, clock: Clock | None = None) -> Sequence[Job]:
    settings = invoicing_settings()
    if settings.finalize_interval_seconds == 0:
        return ()
    the_clock: Clock = clock or SystemClock()
    make_uow = uow_factory(ctx)
    the_policy = policy(settings)

    async def finalize_drafts() -> None:
        """Finalizes drafts whose grace period ended (replicas share via SKIP LOCKED)."""
        while True:
            await asyncio.sleep(settings.finalize_interval_seconds)
            try:
                async with make_uow() as uow:
                    done = await handlers.finalize_due(uow, the_clock.now(), the_policy)
                    await uow.commit()
            except Exception:
                raise_if_cancelling()
                log.exception("invoicing: draft finalization failed")
                continue
            if done:
                log.info("invoicing: finalized %d drafts", done)

    return (finalize_drafts,)


SPEC = ServiceSpec(
    name="invoicing",
    metadata=repository.metadata,
    register=grpc_api.register,
    subscriptions=_subscriptions,
    jobs=jobs,
    uow_factory=_uow_factory,
)
