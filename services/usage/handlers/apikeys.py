"""Use cases of ingestion API keys. Handlers never commit (the adapter's unit of work does)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.errors import InvalidArgument, NotFound
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.uow import UnitOfWork
from services.usage.domain import apikeys as domain
from services.usage.domain.apikeys import ApiKey
from services.usage.repository import apikeys as repository


async def create_key(uow: UnitOfWork, org_id: str, name: str, now: datetime) -> tuple[ApiKey, str]:
    """The new key and its secret (which is stored only as a digest)."""
    domain.validate_new_key(org_id, name)
    key = ApiKey(
        key_id=domain.KEY_ID_PREFIX + secrets.token_hex(8),
        org_id=org_id,
        name=name,
        create_time=now,
    )
    secret = domain.secret_for(key.key_id, secrets.token_urlsafe(32))
    await repository.insert_key(uow.session, key, domain.digest(secret))
    return key, secret


async def list_keys(
    session: AsyncSession,
    org_id: str,
    include_revoked: bool,
    requested_page_size: int,
    page_token: str,
) -> tuple[list[ApiKey], str]:
    filters = {"org_id": org_id, "include_revoked": include_revoked}
    size = page_size(requested_page_size)
    token = PageToken.decode(page_token, filters)
    after = None
    if token is not None:
        try:
            after = (datetime.fromisoformat(str(token.after[0])), str(token.after[1]))
        except (ValueError, IndexError):
            raise InvalidArgument.field("page_token", "is not a token this API issued") from None
    keys = await repository.list_keys(session, org_id, include_revoked, size + 1, after)
    next_token = next_page_token(
        keys, size, lambda k: [k.create_time.isoformat(), k.key_id], filters
    )
    return keys[:size], next_token


async def revoke_key(uow: UnitOfWork, org_id: str, key_id: str, now: datetime) -> ApiKey:
    key = await repository.revoke_key(uow.session, org_id, key_id, now)
    if key is None:
        raise NotFound(f"org {org_id} has no API key {key_id}", reason="API_KEY_NOT_FOUND")
    return key


async def verify_key(session: AsyncSession, secret: str) -> ApiKey:
    """The valid key of ``secret``; NOT_FOUND alike for unknown and revoked keys."""
    unknown = NotFound("unknown or revoked API key", reason="API_KEY_NOT_FOUND")
    if not domain.plausible_secret(secret):
        raise unknown
    key = await repository.find_by_digest(session, domain.digest(secret))
    if key is None or key.revoked:
        raise unknown
    return key
