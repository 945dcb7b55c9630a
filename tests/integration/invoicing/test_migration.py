"""The invoicing revision is reversible and its tables, columns, indexes and
constraints match what the repository declares (the frozen snapshot must not
drift from the code)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.invoicing.repository import metadata
from services.kit import migrations
from services.kit.db import Database

pytestmark = pytest.mark.integration

OWN = {
    "package_version",
    "subscription",
    "billing_profile",
    "invoice",
    "credit_memo",
    "credit_balance",
    "invoice_counter",
}


async def _query(database_url: str, sql: str) -> set[tuple[str, ...]]:
    db = Database(database_url, "invoicing")
    try:
        async with db.engine.connect() as conn:
            return {tuple(r) for r in await conn.execute(text(sql))}
    finally:
        await db.dispose()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    await migrations.upgrade_async("invoicing", database_url)
    tables = {
        r[0]
        for r in await _query(
            database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'invoicing'"
        )
    }
    assert tables >= OWN
    assert {t.name for t in metadata.tables.values()} <= tables
    columns = await _query(
        database_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'invoicing'",
    )
    declared = {(t.name, c.name) for t in metadata.tables.values() for c in t.columns}
    assert declared <= columns
    indexes = {
        r[0]
        for r in await _query(
            database_url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'invoicing'"
        )
    }
    wanted = {i.name for t in metadata.tables.values() for i in t.indexes if i.name}
    assert wanted <= indexes
    assert "uq_invoice_org_id_sequence_number" in indexes

    await asyncio.to_thread(migrations.downgrade, "invoicing", database_url, "1e0a1f000001")
    left = {
        r[0]
        for r in await _query(
            database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'invoicing'"
        )
    }
    assert not left & OWN
    assert "outbox_event" in left
    await migrations.upgrade_async("invoicing", database_url)
    assert {
        r[0]
        for r in await _query(
            database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'invoicing'"
        )
    } == tables
