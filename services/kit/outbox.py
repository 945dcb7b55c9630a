"""Transactional outbox: write events with the change, publish them after.

A crash between commit and publish loses nothing (the rows wait for the next
relay); a crash between publish and marking sends an event again with the same
``Nats-Msg-Id``, which JetStream drops inside its duplicate window and the
consumers' inbox drops after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.bus import EventBus
from services.kit.db import Database
from services.kit.events import EventEnvelope
from services.kit.tasks import raise_if_cancelling

log = logging.getLogger(__name__)


class Outbox:
    """Writes envelopes into a service's ``outbox_event`` table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    async def write(self, session: AsyncSession, envelopes: list[EventEnvelope]) -> None:
        if not envelopes:
            return
        await session.execute(
            insert(self.table),
            [
                {
                    "event_id": e.event_id,
                    "subject": e.subject,
                    "event_type": e.event_type,
                    "aggregate_id": e.aggregate_id,
                    "payload": e.payload,
                    "context": e.context,
                    "occurred_at": e.occurred_at,
                }
                for e in envelopes
            ],
        )

    async def pending_count(self, session: AsyncSession) -> int:
        count = await session.scalar(
            select(func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
        )
        return int(count or 0)


class OutboxRelay:
    """Publishes a service's unsent events in commit order.

    Only one relay per service publishes at a time (a transaction-scoped
    advisory lock): two replicas interleaving batches could reorder the events
    of one aggregate. The others wait and take over if the holder dies.
    """

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        outbox: Outbox,
        *,
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.database = database
        self.bus = bus
        self.table = outbox.table
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = retention
        self._wake = asyncio.Event()
        self._lock_key = f"tally.outbox.{database.schema}"

    def wake(self) -> None:
        """Called after a commit that wrote events, so they leave without waiting a poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many events were sent and marked."""
        t = self.table
        async with self.database.sessions() as session, session.begin():
            locked = await session.scalar(
                select(func.pg_try_advisory_xact_lock(func.hashtext(self._lock_key)))
            )
            if not locked:
                return 0
            rows = (
                await session.execute(
                    select(t)
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.seq)
                    .limit(self.batch_size)
                )
            ).all()
            if not rows:
                return 0
            envelopes = [
                EventEnvelope(
                    event_id=r.event_id,
                    subject=r.subject,
                    event_type=r.event_type,
                    aggregate_id=r.aggregate_id,
                    occurred_at=r.occurred_at,
                    payload=r.payload,
                    context=dict(r.context or {}),
                )
                for r in rows
            ]
            acked = await self.bus.publish_many(envelopes)
            if acked:
                await self._mark_published(session, [r.seq for r in rows[:acked]])
            return acked

    async def _mark_published(self, session: AsyncSession, seqs: list[int]) -> None:
        await session.execute(
            update(self.table).where(self.table.c.seq.in_(seqs)).values(published_at=func.now())
        )

    async def purge_published(self) -> int:
        """Forget sent events past the retention; the stream keeps its own copy."""
        cutoff = datetime.now(UTC) - self.retention
        async with self.database.sessions() as session, session.begin():
            result = await session.execute(
                delete(self.table).where(
                    self.table.c.published_at.is_not(None), self.table.c.published_at < cutoff
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def run(self) -> None:
        """Relay until cancelled, backing off while NATS or PostgreSQL is away."""
        failures = 0
        rounds = 0
        while True:
            try:
                sent = await self.publish_pending()
                failures = 0
                rounds += 1
                if rounds % 10_000 == 1:
                    await self.purge_published()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                failures += 1
                log.warning("outbox relay failed (%s); retrying", exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if sent >= self.batch_size:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
