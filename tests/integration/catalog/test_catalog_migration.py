"""The catalog's frozen migration matches the tables the code declares, and reverses."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.catalog.repository import metadata
from services.kit import migrations
from services.kit.settings import asyncpg_url

pytestmark = pytest.mark.integration

CATALOG_TABLES = {"metric", "package", "package_version", "charge"}


def _ours(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    # The kit's own tables belong to the kit's migration, not to this one.
    table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in CATALOG_TABLES


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_schemas": True,
            "include_object": _ours,
        },
    )
    return list(compare_metadata(context, metadata))


async def _tables(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'catalog'"
        )
    finally:
        await conn.close()
    return {r["table_name"] for r in rows}


async def test_migration_matches_the_declared_tables_and_reverses(database_url: str) -> None:
    await migrations.upgrade_async("catalog", database_url)
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
    assert await _tables(database_url) >= CATALOG_TABLES

    await asyncio.to_thread(migrations.downgrade, "catalog", database_url, "c0a1f0000001")
    assert not CATALOG_TABLES & await _tables(database_url)
    assert "outbox_event" in await _tables(database_url)
    await migrations.upgrade_async("catalog", database_url)
    assert await _tables(database_url) >= CATALOG_TABLES
