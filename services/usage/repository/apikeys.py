"""SQL of the ``api_key`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.usage.domain.apikeys import ApiKey
from services.usage.repository.tables import api_key_table as t

_COLUMNS = (t.c.key_id, t.c.org_id, t.c.name, t.c.create_time, t.c.revoke_time)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        org_id=row.org_id,
        name=row.name,
        create_time=row.create_time,
        revoke_time=row.revoke_time,
    )


async def insert_key(session: AsyncSession, key: ApiKey, secret_sha256: bytes) -> None:
    await session.execute(
        insert(t).values(
            key_id=key.key_id,
            org_id=key.org_id,
            name=key.name,
            secret_sha256=secret_sha256,
            create_time=key.create_time,
        )
    )


async def list_keys(
    session: AsyncSession,
    org_id: str,
    include_revoked: bool,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[ApiKey]:
    """Newest first; keyset pages on ``(create_time, key_id)``, both descending."""
    query = select(*_COLUMNS).where(t.c.org_id == org_id)
    if not include_revoked:
        query = query.where(t.c.revoke_time.is_(None))
    if after is not None:
        query = query.where(tuple_(t.c.create_time, t.c.key_id) < tuple_(*after))
    query = query.order_by(t.c.create_time.desc(), t.c.key_id.desc()).limit(limit)
    return [_key(r) for r in await session.execute(query)]


async def revoke_key(
    session: AsyncSession, org_id: str, key_id: str, now: datetime
) -> ApiKey | None:
    """The key, revoked (at its first revocation's time); None if the org has no such key."""
    rows = await session.execute(
        update(t)
        .where(t.c.org_id == org_id, t.c.key_id == key_id)
        .values(revoke_time=func.coalesce(t.c.revoke_time, now))
        .returning(*_COLUMNS)
    )
    row = rows.first()
    return _key(row) if row is not None else None


async def find_by_digest(session: AsyncSession, secret_sha256: bytes) -> ApiKey | None:
    rows = await session.execute(select(*_COLUMNS).where(t.c.secret_sha256 == secret_sha256))
    row = rows.first()
    return _key(row) if row is not None else None
