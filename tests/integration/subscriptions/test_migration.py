"""The subscriptions revision is reversible and its tables match what the
repository declares (a frozen snapshot must not drift from the code)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.kit import migrations
from services.kit.db import Database
from services.subscriptions.repository import metadata

pytestmark = pytest.mark.integration

OWN = {
    "package",
    "package_version",
    "feature_limit",
    "subscription",
    "schedule_entry",
    "closed_period",
    "usage_aggregate",
    "billing_clock",
}


async def _tables(database_url: str) -> set[str]:
    db = Database(database_url, "subscriptions")
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'subscriptions'")
            )
            return {r[0] for r in rows}
    finally:
        await db.dispose()


async def _indexes(database_url: str) -> set[str]:
    db = Database(database_url, "subscriptions")
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = 'subscriptions'")
            )
            return {r[0] for r in rows}
    finally:
        await db.dispose()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    await migrations.upgrade_async("subscriptions", database_url)
    tables = await _tables(database_url)
    assert tables >= OWN
    declared = {t.name for t in metadata.tables.values()}
    assert declared <= tables
    # Every index the code declares exists under the same name.
    wanted = {i.name for t in metadata.tables.values() for i in t.indexes if i.name}
    assert wanted <= await _indexes(database_url)

    await asyncio.to_thread(migrations.downgrade, "subscriptions", database_url, "5b0a1f000001")
    assert not (await _tables(database_url)) & OWN
    await migrations.upgrade_async("subscriptions", database_url)
    assert await _tables(database_url) == tables
