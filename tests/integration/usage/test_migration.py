"""The usage revision is reversible and creates exactly what the code declares."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from services.kit import migrations
from services.kit.settings import asyncpg_url
from services.usage.repository import metadata

pytestmark = pytest.mark.integration

USAGE_TABLES = {
    "usage_event",
    "usage_aggregate",
    "aggregate_unique_value",
    "metric",
    "subscription",
    "billing_period",
    "feature_threshold",
    "threshold_crossing",
}


async def _tables(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'usage'"
        )
    finally:
        await conn.close()
    return {r["table_name"] for r in rows}


async def test_upgrade_matches_the_declared_tables_and_downgrade_reverses(
    database_url: str,
) -> None:
    await migrations.upgrade_async("usage", database_url)
    assert await _tables(database_url) >= USAGE_TABLES

    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.connect() as conn:

            def diff(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(
                    sync_conn,
                    opts={
                        "include_schemas": True,
                        "include_name": lambda name, kind, _parent: (
                            kind != "schema" or name == "usage"
                        ),
                        "compare_type": True,
                        "version_table_schema": "usage",
                    },
                )
                return list(compare_metadata(context, metadata))

            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    # The kit's own tables are the kit's business; this revision owns the rest.
    ours = [d for d in differences if _table_of(d) in USAGE_TABLES]
    assert ours == []

    await asyncio.to_thread(migrations.downgrade, "usage", database_url, "0a9e1f000001")
    remaining = await _tables(database_url)
    assert not (USAGE_TABLES & remaining)
    assert {"outbox_event", "inbox_message", "idempotent_request"} <= remaining
    await migrations.upgrade_async("usage", database_url)
    assert await _tables(database_url) >= USAGE_TABLES


def _table_of(difference: Any) -> str:
    """The table a compare_metadata entry is about (entries are tuples or lists of them)."""
    if isinstance(difference, list):
        return _table_of(difference[0])
    for item in difference[1:]:
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        if hasattr(item, "name") and hasattr(item, "columns") and hasattr(item, "schema"):
            return str(item.name)
        if isinstance(item, str) and item in USAGE_TABLES:
            return item
    return ""
