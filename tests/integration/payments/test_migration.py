"""The payments revision is reversible and matches what the repository declares
(the frozen snapshot must not drift from the code)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.kit import migrations
from services.kit.db import Database
from services.payments.repository import metadata

pytestmark = pytest.mark.integration

OWN = {
    "customer",
    "payment_method",
    "invoice",
    "payment",
    "payment_attempt",
    "refund",
    "provider_event",
    "sync_state",
    "webhook_endpoint",
    "webhook_delivery",
}


async def _query(database_url: str, sql: str) -> set[tuple[str, ...]]:
    db = Database(database_url, "payments")
    try:
        async with db.engine.connect() as conn:
            return {tuple(r) for r in await conn.execute(text(sql))}
    finally:
        await db.dispose()


async def _tables(database_url: str) -> set[str]:
    rows = await _query(
        database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'payments'"
    )
    return {r[0] for r in rows}


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    await migrations.upgrade_async("payments", database_url)
    tables = await _tables(database_url)
    assert tables >= OWN
    assert {t.name for t in metadata.tables.values()} <= tables
    columns = await _query(
        database_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'payments'",
    )
    assert {(t.name, c.name) for t in metadata.tables.values() for c in t.columns} <= columns
    indexes = {
        r[0]
        for r in await _query(
            database_url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'payments'"
        )
    }
    declared = {i.name for t in metadata.tables.values() for i in t.indexes if i.name}
    declared |= {
        c.name
        for t in metadata.tables.values()
        if t.name in OWN
        for c in t.constraints
        if c.name and c.__class__.__name__ in ("UniqueConstraint", "PrimaryKeyConstraint")
    }
    assert declared <= indexes

    await asyncio.to_thread(migrations.downgrade, "payments", database_url, "9a7e1f000001")
    left = await _tables(database_url)
    assert not left & OWN
    assert "outbox_event" in left
    await migrations.upgrade_async("payments", database_url)
    assert await _tables(database_url) == tables
