"""The ingestion stage table is created once per connection, when it opens, and
survives a rolled-back batch; a connection opened without the hook still stages;
times staged as integer microseconds are stored exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.kit import migrations
from services.kit.db import Database
from services.usage.domain import Aggregation, ValidEvent
from services.usage.repository.ingest import driver_connection, stage_on_connect, store_events

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
async def migrated(database_url: str) -> AsyncIterator[str]:
    await migrations.upgrade_async("usage", database_url)
    yield database_url


async def _stage_exists(database: Database) -> bool:
    async with database.sessions() as session:
        value = await session.scalar(text("SELECT to_regclass('pg_temp.usage_stage') IS NOT NULL"))
        return bool(value)


async def test_the_stage_table_outlives_a_rolled_back_batch(migrated: str) -> None:
    database = Database(migrated, "usage", pool_size=1)
    stage_on_connect(database.engine)
    try:
        async with database.sessions() as session, session.begin():
            driver = await driver_connection(session)
            await driver.execute("INSERT INTO usage_stage (org_id) VALUES ('o')")
            await session.rollback()

        assert await _stage_exists(database)
    finally:
        await database.dispose()


@pytest.mark.parametrize("hooked", [True, False])
async def test_a_batch_is_staged_with_or_without_the_hook(migrated: str, hooked: bool) -> None:
    database = Database(migrated, "usage", pool_size=1)
    if hooked:
        stage_on_connect(database.engine)
    event = ValidEvent(
        org_id="org-stage",
        idempotency_key=f"k-{hooked}",
        metric_code="calls",
        aggregation=Aggregation.COUNT,
        subscription_id="sub-stage",
        period_start=NOW,
        period_end=NOW + timedelta(days=30),
        event_time=NOW,
        value=None,
        unique_value=None,
        properties={},
    )
    try:
        assert await _stage_exists(database) is hooked
        async with database.sessions() as session, session.begin():
            already = await store_events(session, [event], now=NOW, copy_threshold=1)
        assert already == set()  # inserted now
        async with database.sessions() as session, session.begin():
            again = await store_events(session, [event], now=NOW, copy_threshold=1)
        assert again == {("org-stage", f"k-{hooked}")}  # stored before: a duplicate
    finally:
        await database.dispose()


# Any instant a Timestamp can hold, to the microsecond: staged as integer
# microseconds, stored as timestamptz, read back unchanged (both staging paths).
any_instant = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda at: at.replace(tzinfo=UTC))


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(times=st.lists(st.tuples(any_instant, any_instant), min_size=1, max_size=4))
async def test_staged_times_are_stored_to_the_microsecond(
    migrated: str, times: list[tuple[datetime, datetime]]
) -> None:
    database = Database(migrated, "usage", pool_size=1)
    stage_on_connect(database.engine)
    run = uuid.uuid4().hex[:8]
    events = [
        ValidEvent(
            org_id="org-times",
            idempotency_key=f"{run}-{i}",
            metric_code="calls",
            aggregation=Aggregation.COUNT,
            subscription_id=f"sub-{run}-{i}",
            period_start=period_start,
            period_end=period_start + timedelta(microseconds=1),
            event_time=event_time,
            value=None,
            unique_value=None,
            properties={},
        )
        for i, (period_start, event_time) in enumerate(times)
    ]
    try:
        async with database.sessions() as session, session.begin():
            # Half the runs stage with COPY, half with unnest.
            threshold = 1 if len(times) % 2 else 100
            await store_events(session, events, now=NOW, copy_threshold=threshold)
            driver = await driver_connection(session)
            rows = await driver.fetch(
                "SELECT e.idempotency_key, e.period_start, e.event_time, a.period_end"
                " FROM usage_event e JOIN usage_aggregate a USING (subscription_id, period_start)"
                " WHERE e.idempotency_key LIKE $1 ORDER BY e.idempotency_key",
                f"{run}-%",
            )
        stored = {
            r["idempotency_key"]: (r["period_start"], r["event_time"], r["period_end"])
            for r in rows
        }
        assert stored == {
            e.idempotency_key: (e.period_start, e.event_time, e.period_end) for e in events
        }
    finally:
        await database.dispose()
