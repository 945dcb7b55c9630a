"""AIP-155 request ids: a retried mutation answers what the first attempt did.

The response of a mutating RPC is stored with its ``request_id`` in the same
transaction as the change, so "applied but the answer was lost" and "never
applied" are the only two outcomes a client can observe; a retry of the former
replays the stored answer instead of applying the change twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.audit import AuditLog
from services.kit.errors import InvalidArgument, TallyError
from services.kit.uow import UnitOfWork

R = TypeVar("R", bound=Message)
U = TypeVar("U", bound=UnitOfWork)
log = logging.getLogger(__name__)


def fingerprint(request: Message) -> str:
    """What the request asked for, request id aside."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class RequestLog:
    """The mutating requests a service served: answers to replay, and their audit trail."""

    def __init__(self, table: Table, audit: AuditLog | None = None) -> None:
        self.table = table
        self.audit = audit

    async def lookup(
        self, session: AsyncSession, method: str, request_id: str, request_hash: str
    ) -> bytes | None:
        # Serialise concurrent retries of one request id: the second waits for
        # the first to commit, then finds its answer.
        await session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(f"{method}:{request_id}")))
        )
        row = (
            await session.execute(
                select(self.table.c.request_hash, self.table.c.response).where(
                    self.table.c.method == method, self.table.c.request_id == request_id
                )
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise InvalidArgument.field(
                "request_id",
                "was already used for a different request; use a new request_id",
                reason="REQUEST_ID_REUSED",
            )
        response: bytes = row.response
        return response

    async def remember(
        self,
        session: AsyncSession,
        method: str,
        request_id: str,
        request_hash: str,
        response: bytes,
    ) -> None:
        await session.execute(
            pg_insert(self.table).values(
                method=method, request_id=request_id, request_hash=request_hash, response=response
            )
        )


async def run_mutation(
    uow_factory: Callable[[], U],
    requests: RequestLog,
    method: str,
    request: Message,
    response_type: type[R],
    work: Callable[[U], Awaitable[R]],
    *,
    audited: bool = True,
) -> R:
    """Run ``work`` in one transaction and commit; replay when ``request_id`` repeats.

    ``work`` must not commit: the change, its outbox events, the stored
    response and its audit entry commit together here. A replay writes no
    entry; a refusal (``work`` raised a ``TallyError``) is recorded apart,
    since its own transaction rolls back. ``audited=False`` is for data on
    the hot path (usage events), not for mutations of state.
    """
    request_id: str = getattr(request, "request_id", "")
    audit = requests.audit if audited else None
    try:
        async with uow_factory() as uow:
            request_hash = fingerprint(request)
            if request_id:
                stored = await requests.lookup(uow.session, method, request_id, request_hash)
                if stored is not None:
                    return response_type.FromString(stored)
            response = await work(uow)
            if request_id:
                await requests.remember(
                    uow.session, method, request_id, request_hash, response.SerializeToString()
                )
            if audit is not None:
                await audit.write(uow.session, audit.entry(method, request, response))
            await uow.commit()
            return response
    except TallyError as refused:
        if audit is not None:
            await _record_refusal(audit, uow_factory, method, request, refused)
        raise


async def _record_refusal(
    audit: AuditLog,
    uow_factory: Callable[[], UnitOfWork],
    method: str,
    request: Message,
    refused: TallyError,
) -> None:
    try:
        await audit.record_apart(uow_factory, method, request, error=refused)
    except Exception:
        # The caller must still get the refusal itself, not this failure.
        log.exception("audit entry of a refused %s not written", method)
