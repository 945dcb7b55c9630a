"""Composition root of the usage service: the one place that wires it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

import grpc
from pydantic import Field

from services.kit.clock import Clock, SystemClock
from services.kit.runtime import Job, ServiceContext, ServiceSpec
from services.kit.settings import CommonSettings, load_settings
from services.kit.tasks import raise_if_cancelling
from services.usage import consumers, grpc_api, repository
from services.usage.handlers.emitter import emit_aggregated
from services.usage.handlers.ingest import DEFAULT_COPY_THRESHOLD
from services.usage.handlers.rejections import (
    ANNOUNCE_BATCH,
    ANNOUNCE_ROUNDS,
    announce_rejections,
)
from services.usage.repository.ingest import stage_on_connect

log = logging.getLogger(__name__)


class UsageSettings(CommonSettings):
    """Knobs of the usage service only (``USAGE_*``, as every service setting)."""

    env_prefix_name: ClassVar[str] = "USAGE"

    # usage.aggregated: at most one event per aggregate per this many seconds.
    aggregated_interval_seconds: float = Field(default=5.0, gt=0)
    # Batches at least this large are staged with COPY, smaller ones with unnest.
    copy_threshold: int = Field(default=DEFAULT_COPY_THRESHOLD, ge=1)


# Tests and ops tools replace the clock here before the service starts.
clock: Clock = SystemClock()


def usage_settings() -> UsageSettings:
    """The ``USAGE_*`` knobs; a bad value is one start-up error line naming it."""
    return load_settings(UsageSettings)


def _register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    stage_on_connect(ctx.database.engine)
    return grpc_api.register(
        server, ctx, clock=clock, copy_threshold=usage_settings().copy_threshold
    )


def emitter_job(ctx: ServiceContext, interval: timedelta) -> Job:
    async def run() -> None:
        # Poll at a fraction of the interval so an aggregate is emitted soon
        # after it becomes due; the per-row emitted_at does the throttling.
        tick = min(1.0, interval.total_seconds() / 2)
        while True:
            try:
                async with ctx.unit_of_work() as uow:
                    emitted = await emit_aggregated(uow, now=clock.now(), min_interval=interval)
                    await uow.commit()
                if emitted:
                    log.debug("usage.aggregated: %d events", emitted)
                # Own transactions: a failure here never holds back the aggregates.
                # Full rounds go again (bounded), so a sustained flood is announced
                # at up to ANNOUNCE_ROUNDS x ANNOUNCE_BATCH rows a tick, never more
                # than ANNOUNCE_ROUNDS messages per org.
                for _ in range(ANNOUNCE_ROUNDS):
                    async with ctx.unit_of_work() as uow:
                        announced = await announce_rejections(uow, limit=ANNOUNCE_BATCH)
                        await uow.commit()
                    if announced:
                        log.debug("usage.event_rejected: %d rejections announced", announced)
                    if announced < ANNOUNCE_BATCH:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.exception("usage.aggregated emitter failed; retrying")
            await asyncio.sleep(tick)

    return run


def _jobs(ctx: ServiceContext) -> Sequence[Job]:
    settings = usage_settings()
    return [emitter_job(ctx, timedelta(seconds=settings.aggregated_interval_seconds))]


SPEC = ServiceSpec(
    name="usage",
    metadata=repository.metadata,
    register=_register,
    subscriptions=consumers.subscriptions,
    jobs=_jobs,
)
