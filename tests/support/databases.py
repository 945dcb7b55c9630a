"""Creating and dropping throwaway databases for test isolation."""

from __future__ import annotations

import asyncpg


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def backends_named(conn: asyncpg.Connection, application_name: str) -> list[int]:
    """Pids of this database's sessions that gave ``application_name`` (a listener, say)."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        application_name,
    )
    return [row["pid"] for row in rows]
