"""The ingestion stage table is created once per connection, when it opens, and
survives a rolled-back batch; a connection opened without the hook still stages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
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
            stored = await store_events(session, [event], now=NOW, copy_threshold=1)
        assert stored == {("org-stage", f"k-{hooked}")}
    finally:
        await database.dispose()
