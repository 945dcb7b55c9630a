"""AIP-155 request ids: a retried mutation answers what the first attempt did.

The response of a mutating RPC is stored with its ``request_id`` in the same
transaction as the change, so "applied but the answer was lost" and "never
applied" are the only two outcomes a client can observe; a retry of the former
replays the stored answer instead of applying the change twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.errors import InvalidArgument
from services.kit.uow import UnitOfWork

R = TypeVar("R", bound=Message)
U = TypeVar("U", bound=UnitOfWork)


def fingerprint(request: Message) -> str:
    """What the request asked for, request id aside."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class RequestLog:
    def __init__(self, table: Table) -> None:
        self.table = table

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
) -> R:
    """Run ``work`` in one transaction and commit; replay when ``request_id`` repeats.

    ``work`` must not commit: the change, its outbox events and the stored
    response commit together here.
    """
    request_id: str = getattr(request, "request_id", "")
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
        await uow.commit()
        return response
