"""SQL of the rejection feed: one bulk insert per batch that had rejections,
the feed's pages, and the announcer's unannounced rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.repository.ingest import driver_connection
from services.usage.repository.tables import rejected_event_table


@dataclass(slots=True)
class RejectionRow:
    org_id: str
    idempotency_key: str
    dedupe_key: str
    metric_code: str
    reason: str
    message: str
    payload: str  # JSON text
    event_time: datetime | None


# unnest of column arrays: one round trip whatever the number of rejections.
# DO NOTHING on the dedupe key: a retried rejection (same org, key, reason) is
# kept once, also when it repeats inside one batch.
_INSERT = """
INSERT INTO rejected_event (org_id, idempotency_key, dedupe_key, metric_code, reason, message,
    payload, event_time, rejected_at)
SELECT org_id, idempotency_key, dedupe_key, metric_code, reason, message, payload::jsonb,
    event_time, $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::timestamptz[])
    AS s(org_id, idempotency_key, dedupe_key, metric_code, reason, message, payload, event_time)
ORDER BY org_id, dedupe_key, reason
ON CONFLICT (org_id, dedupe_key, reason) DO NOTHING
"""


async def store_rejections(
    session: AsyncSession, rows: Sequence[RejectionRow], *, now: datetime
) -> None:
    """Keep ``rows`` in the feed, in the batch's transaction (one statement)."""
    if not rows:
        return
    driver = await driver_connection(session)
    await driver.execute(
        _INSERT,
        now,
        [r.org_id for r in rows],
        [r.idempotency_key for r in rows],
        [r.dedupe_key for r in rows],
        [r.metric_code for r in rows],
        [r.reason for r in rows],
        [r.message for r in rows],
        [r.payload for r in rows],
        [r.event_time for r in rows],
    )


@dataclass(frozen=True)
class RejectionFilter:
    org_id: str
    reason: str = ""
    metric_code: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


async def rejections(
    session: AsyncSession, f: RejectionFilter, before_id: int | None, limit: int
) -> Sequence[Row[Any]]:
    """An org's rejections, newest first (by id), from before ``before_id``."""
    r = rejected_event_table
    stmt = select(r).where(r.c.org_id == f.org_id)
    if f.reason:
        stmt = stmt.where(r.c.reason == f.reason)
    if f.metric_code:
        stmt = stmt.where(r.c.metric_code == f.metric_code)
    if f.start_time is not None:
        stmt = stmt.where(r.c.rejected_at >= f.start_time)
    if f.end_time is not None:
        stmt = stmt.where(r.c.rejected_at < f.end_time)
    if before_id is not None:
        stmt = stmt.where(r.c.rejected_event_id < before_id)
    stmt = stmt.order_by(r.c.rejected_event_id.desc()).limit(limit)
    return (await session.execute(stmt)).all()


async def unannounced(session: AsyncSession, limit: int) -> Sequence[Row[Any]]:
    """The oldest rejections not yet announced; ``SKIP LOCKED`` as due_aggregates."""
    r = rejected_event_table
    stmt = (
        select(r)
        .where(r.c.announced.is_(False))
        .order_by(r.c.rejected_event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(stmt)).all()


async def mark_announced(session: AsyncSession, ids: Sequence[int]) -> None:
    if not ids:
        return
    r = rejected_event_table
    await session.execute(
        update(r).where(r.c.rejected_event_id.in_(list(ids))).values(announced=True)
    )
