"""Each service migrates its own schema, with its own version table, reversibly."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.kit import migrations
from services.kit.settings import SERVICE_NAMES

pytestmark = pytest.mark.integration


async def _tables(database_url: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[])",
            list(SERVICE_NAMES),
        )
    finally:
        await conn.close()
    return {(r["table_schema"], r["table_name"]) for r in rows}


async def test_every_service_gets_its_own_schema_and_version_table(database_url: str) -> None:
    for service in SERVICE_NAMES:
        await migrations.upgrade_async(service, database_url)
    tables = await _tables(database_url)
    for service in SERVICE_NAMES:
        assert {
            (service, "alembic_version"),
            (service, "outbox_event"),
            (service, "inbox_message"),
        } <= tables
    # Nothing lands in public: services never share a table.
    conn = await asyncpg.connect(database_url)
    try:
        public = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert public == []


async def test_migrating_again_is_a_no_op_and_downgrade_reverses(database_url: str) -> None:
    await migrations.upgrade_async("usage", database_url)  # already at head
    before = await _tables(database_url)
    await asyncio.to_thread(migrations.downgrade, "catalog", database_url, "base")
    after = await _tables(database_url)
    # Every catalog table goes (the version table stays, empty), the kit's included.
    assert before - after == {t for t in before if t[0] == "catalog" and t[1] != "alembic_version"}
    assert {
        ("catalog", "outbox_event"),
        ("catalog", "inbox_message"),
        ("catalog", "idempotent_request"),
    } <= before - after
    assert ("usage", "outbox_event") in after  # other services untouched
    await migrations.upgrade_async("catalog", database_url)
    assert await _tables(database_url) == before
