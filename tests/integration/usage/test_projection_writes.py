"""The usage projections' writes, each now one statement: a subscription event
with its current period, and a period close with the next period. An older
event never rolls the subscription back, an open period follows its latest end
while a closed one never changes, and a close freezes the period's aggregates,
opens the next period and moves only a subscription still on the closed one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.kit import migrations
from services.kit.db import Database
from services.usage.repository.projections import (
    SubscriptionRow,
    close_period,
    upsert_subscription,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1, T2, T3 = T0 + timedelta(days=30), T0 + timedelta(days=60), T0 + timedelta(days=90)


@pytest.fixture(scope="module")
async def database(database_url: str) -> AsyncIterator[Database]:
    await migrations.upgrade_async("usage", database_url)
    db = Database(database_url, "usage", pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()


def _row(
    sub: str, start: datetime | None, end: datetime | None, at: datetime | None
) -> SubscriptionRow:
    return SubscriptionRow(
        subscription_id=sub,
        org_id="org-p",
        state="active",
        package_version_id="pv",
        current_period_start=start,
        current_period_end=end,
        pause_time=None,
        end_time=None,
        source_update_time=at,
    )


async def _apply(db: Database, row: SubscriptionRow) -> None:
    async with db.sessions() as session, session.begin():
        start, end = row.current_period_start, row.current_period_end
        opened = start is not None and end is not None and end > start
        await upsert_subscription(session, row, with_open_period=opened)


async def _close(
    db: Database, sub: str, start: datetime, end: datetime, nxt: tuple[datetime, datetime] | None
) -> int:
    async with db.sessions() as session, session.begin():
        return await close_period(session, sub, "org-p", start, end, T3, nxt)


async def _query(db: Database, sql: str, sub: str) -> list[tuple[Any, ...]]:
    async with db.sessions() as session:
        return [tuple(r) for r in await session.execute(text(sql), {"sub": sub})]


async def _periods(db: Database, sub: str) -> list[tuple[Any, ...]]:
    return await _query(
        db,
        "SELECT period_start, period_end, closed FROM billing_period"
        " WHERE subscription_id = :sub ORDER BY period_start",
        sub,
    )


async def _current(db: Database, sub: str) -> tuple[Any, ...]:
    (row,) = await _query(
        db,
        "SELECT current_period_start, current_period_end, source_update_time FROM subscription"
        " WHERE subscription_id = :sub",
        sub,
    )
    return row


async def test_subscription_events_keep_the_newest_state_and_the_open_period(
    database: Database,
) -> None:
    sub = f"sub-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 11, 2, tzinfo=UTC)
    await _apply(database, _row(sub, T0, T1, at))
    assert await _periods(database, sub) == [(T0, T1, False)]
    # An older event changes nothing in the subscription; its period still counts.
    await _apply(database, _row(sub, T0, T2, at - timedelta(hours=1)))
    assert await _current(database, sub) == (T0, T1, at)
    assert await _periods(database, sub) == [(T0, T2, False)]  # the open period follows
    # No source time: applied whatever came before.
    await _apply(database, _row(sub, T0, T1, None))
    assert await _current(database, sub) == (T0, T1, None)
    # No period (or an empty one): the subscription only.
    await _apply(database, _row(sub, None, None, at))
    await _apply(database, _row(sub, T1, T1, at))
    assert await _periods(database, sub) == [(T0, T1, False)]


async def test_a_close_freezes_opens_the_next_and_moves_the_subscription(
    database: Database,
) -> None:
    sub = f"sub-{uuid.uuid4().hex[:8]}"
    await _apply(database, _row(sub, T0, T1, T0))
    async with database.sessions() as session, session.begin():
        for metric in ("calls", "bytes"):
            await session.execute(
                text(
                    "INSERT INTO usage_aggregate (subscription_id, metric_code, period_start,"
                    " org_id, aggregation, period_end, value, event_count)"
                    " VALUES (:sub, :metric, :start, 'org-p', 'sum', :end, 1, 1)"
                ),
                {"sub": sub, "metric": metric, "start": T0, "end": T1},
            )
    assert await _close(database, sub, T0, T1, (T1, T2)) == 2
    assert await _periods(database, sub) == [(T0, T1, True), (T1, T2, False)]
    assert (await _current(database, sub))[:2] == (T1, T2)
    frozen = await _query(
        database,
        "SELECT metric_code, frozen, revision FROM usage_aggregate"
        " WHERE subscription_id = :sub ORDER BY metric_code",
        sub,
    )
    assert frozen == [("bytes", True, 2), ("calls", True, 2)]
    # The renewed event afterwards: the closed period keeps its end.
    await _apply(database, _row(sub, T0, T2, T1))
    assert await _periods(database, sub) == [(T0, T1, True), (T1, T2, False)]
    # A repeated close freezes nothing more and leaves the subscription where it is.
    await _apply(database, _row(sub, T1, T2, T2))
    assert await _close(database, sub, T0, T1, (T1, T2)) == 0
    assert (await _current(database, sub))[:2] == (T1, T2)


async def test_a_close_of_an_unknown_period_records_it_and_the_last_close_opens_nothing(
    database: Database,
) -> None:
    sub = f"sub-{uuid.uuid4().hex[:8]}"
    await _apply(database, _row(sub, T2, T3, T0))
    assert await _close(database, sub, T0, T1, None) == 0
    assert await _periods(database, sub) == [(T0, T1, True), (T2, T3, False)]
    assert (await _current(database, sub))[:2] == (T2, T3)  # not on the closed period
    # A next period starting where the closed one starts is the closed one: untouched.
    assert await _close(database, sub, T2, T3, (T2, T3 + timedelta(days=1))) == 0
    assert await _periods(database, sub) == [(T0, T1, True), (T2, T3, True)]
