"""Shared Alembic environment: one service's schema and version table at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
schema: str = config.attributes["schema"]
target_metadata = config.attributes["target_metadata"]


def _run(connection: Connection) -> None:
    # Two replicas migrating at once would race on DDL; serialise them. The
    # lock lives as long as the transaction the whole migration runs in.
    connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"migrate.{schema}"}
    )
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET search_path TO "{schema}", public'))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table="alembic_version",
        version_table_schema=schema,
        include_schemas=False,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
asyncio.run(_main())
