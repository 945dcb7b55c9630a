"""The audit trail: every mutating RPC, recorded once, in the service's own schema.

``run_mutation`` writes one ``audit_entry`` row in the transaction of the
change it commits, so a rolled-back change leaves no row and a committed one
exactly one; a replayed ``request_id`` answers from the request log and writes
nothing. A mutation the use case refused (a ``TallyError``: its transaction
rolled back) is recorded by a small transaction of its own, with the error's
reason as the outcome. Who asked comes from the call: the interceptor keeps
the call in ``current_call`` and the actor is read from its metadata only
when a row is written, so reads pay one context variable per call.

Every service serves ``tally.audit.v1.AuditService`` over its own table
(registered by the kit runtime); the gateway merges the five. Entry ids are
UUIDs, so (create_time, entry_id) orders every service's entries alike and a
page token is one position that means the same to all of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from sqlalchemy import Row, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from tally.audit.v1 import audit_pb2, audit_pb2_grpc

from services.kit.db import Database
from services.kit.errors import TallyError
from services.kit.keyset import newest_first, where_equal
from services.kit.pagination import PageToken, next_page_token, page_size
from services.kit.protoconv import from_timestamp, to_timestamp
from services.kit.rpc.registry import add_servicer
from services.kit.telemetry import request_id_var
from services.kit.uow import UnitOfWork

ACTOR_HEADER = "x-tally-actor"
ROLE_HEADER = "x-tally-actor-role"
UNKNOWN_ACTOR = "unknown"
OK = "OK"


@dataclass(frozen=True)
class Call:
    """The gRPC call being served: its method path and its context."""

    method: str  # "/tally.catalog.v1.CatalogService/CreateMetric"
    context: grpc.aio.ServicerContext | None


# Set by the kit's server interceptor for each call (each runs in its own task).
current_call: ContextVar[Call | None] = ContextVar("tally_current_call", default=None)


def action_of(grpc_method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service.Method``, the gateway's action name."""
    return grpc_method.lstrip("/").replace("/", ".")


def actor_of(context: grpc.aio.ServicerContext | None) -> tuple[str, str]:
    """(actor, role): the caller's ``x-tally-actor``, else ``grpc:<peer>``, else unknown."""
    if context is None:
        return UNKNOWN_ACTOR, ""
    actor = role = ""
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_HEADER and isinstance(value, str):
            actor = value
        elif key == ROLE_HEADER and isinstance(value, str):
            role = value
    if actor:
        return actor, role
    peer = context.peer()
    return (f"grpc:{peer}" if peer else UNKNOWN_ACTOR), role


def _string_ids(message: Message) -> list[tuple[str, str]]:
    """(field, value) of the message's set ``*_id`` strings, in declaration order."""
    found = []
    for field in message.DESCRIPTOR.fields:
        if (
            field.name.endswith("_id")
            and field.name != "request_id"
            and field.type == FieldDescriptor.TYPE_STRING
            and not field.is_repeated
        ):
            value = getattr(message, field.name)
            if value:
                found.append((field.name, value))
    return found


def _resource(message: Message) -> tuple[str, str]:
    """(org_id, id) of the first singular message field that is a resource."""
    for field in message.DESCRIPTOR.fields:
        if field.message_type is None or field.is_repeated or not message.HasField(field.name):
            continue
        ids = dict(_string_ids(getattr(message, field.name)))
        own = ids.get(f"{field.name}_id") or next((v for k, v in ids.items() if k != "org_id"), "")
        if own:
            return ids.get("org_id", ""), own
    return "", ""


def describe(request: Message, response: Message | None) -> tuple[str, str]:
    """(org_id, target) of a mutation.

    The target is the resource the answer is about (the one created or
    changed); without an answer (refused), the request's first ``*_id``.
    The org is the request's ``org_id``, else the answered resource's.
    """
    request_ids = _string_ids(request)
    org = dict(request_ids).get("org_id", "")
    resource_org, target = _resource(response) if response is not None else ("", "")
    if not target:
        target = next((v for k, v in request_ids if k != "org_id"), "")
        if not target:
            target = _resource(request)[1]
    return org or resource_org, target


class AuditLog:
    """Writes and reads one service's ``audit_entry`` table."""

    def __init__(self, table: Table, service: str) -> None:
        self.table = table
        self.service = service

    def entry(
        self,
        method: str,
        request: Message,
        response: Message | None,
        *,
        outcome: str = OK,
        status_code: str = "OK",
    ) -> dict[str, Any]:
        call = current_call.get()
        actor, role = actor_of(call.context if call else None)
        org_id, target = describe(request, response)
        request_id = request_id_var.get() or getattr(request, "request_id", "")
        return {
            "entry_id": str(uuid.uuid4()),
            "create_time": datetime.now(UTC),
            "actor": actor,
            "actor_role": role,
            "org_id": org_id,
            # The interceptor's full name; a caller outside gRPC (a test, a
            # job) is named by what it passed.
            "action": action_of(call.method) if call else method,
            "target": target,
            "request_id": request_id if isinstance(request_id, str) else "",
            "outcome": outcome,
            "status_code": status_code,
        }

    async def write(self, session: AsyncSession, values: Mapping[str, Any]) -> None:
        await session.execute(insert(self.table).values(**values))

    async def record_apart(
        self,
        uow_factory: Callable[[], UnitOfWork],
        method: str,
        request: Message,
        response: Message | None = None,
        error: TallyError | None = None,
    ) -> None:
        """One entry in a transaction of its own (a refusal, or work that spans many)."""
        from services.kit.rpc.status import code_for

        values = self.entry(
            method,
            request,
            response,
            outcome=error.reason if error else OK,
            status_code=code_for(error).name if error else "OK",
        )
        async with uow_factory() as uow:
            await self.write(uow.session, values)
            await uow.commit()

    async def list(
        self, session: AsyncSession, request: audit_pb2.ListAuditEntriesRequest
    ) -> audit_pb2.ListAuditEntriesResponse:
        size = page_size(request.page_size)
        filters = list_filters(request)
        token = PageToken.decode(request.page_token, filters)
        t = self.table
        stmt = where_equal(select(t), t, {k: filters[k] for k in ("org_id", "actor", "target")})
        action: str = filters["action"]
        if action:
            # A short name (CreateMetric) matches that method of any service.
            stmt = stmt.where(
                t.c.action == action
                if "." in action
                else t.c.action.endswith(f".{action}", autoescape=True)
            )
        start = from_timestamp(
            request.start_time, present=request.HasField("start_time"), field="start_time"
        )
        end = from_timestamp(
            request.end_time, present=request.HasField("end_time"), field="end_time"
        )
        if start is not None:
            stmt = stmt.where(t.c.create_time >= start)
        if end is not None:
            stmt = stmt.where(t.c.create_time < end)
        stmt = newest_first(
            stmt, t.c.create_time, t.c.entry_id, token.after if token else None, size + 1
        )
        rows = list((await session.execute(stmt)).all())
        return audit_pb2.ListAuditEntriesResponse(
            entries=[self._message(r) for r in rows[:size]],
            next_page_token=next_page_token(
                rows, size, lambda r: [r.create_time.isoformat(), r.entry_id], filters
            ),
        )

    def _message(self, row: Row[Any]) -> audit_pb2.AuditEntry:
        return audit_pb2.AuditEntry(
            entry_id=row.entry_id,
            service=self.service,
            create_time=to_timestamp(row.create_time),
            actor=row.actor,
            actor_role=row.actor_role,
            org_id=row.org_id,
            action=row.action,
            target=row.target,
            request_id=row.request_id,
            outcome=row.outcome,
            status_code=row.status_code,
        )


def list_filters(request: audit_pb2.ListAuditEntriesRequest) -> dict[str, Any]:
    """What a page token is bound to: the same in every service and the gateway."""
    return {
        "org_id": request.org_id,
        "actor": request.actor,
        "action": request.action,
        "target": request.target,
        "start": request.start_time.ToJsonString() if request.HasField("start_time") else "",
        "end": request.end_time.ToJsonString() if request.HasField("end_time") else "",
    }


def page_token_after(
    entry: audit_pb2.AuditEntry, request: audit_pb2.ListAuditEntriesRequest
) -> str:
    """The token of the position just after ``entry``, valid in every service."""
    at = entry.create_time.ToDatetime(tzinfo=UTC).isoformat()
    return PageToken(after=[at, entry.entry_id]).encode(list_filters(request))


def newest_first_key(entry: audit_pb2.AuditEntry) -> tuple[int, int, str]:
    """Sort key of the order every service lists in (use with ``reverse=True``)."""
    return entry.create_time.seconds, entry.create_time.nanos, entry.entry_id


class AuditApi(audit_pb2_grpc.AuditServiceServicer):  # type: ignore[misc]
    def __init__(self, database: Database, log: AuditLog) -> None:
        self.database = database
        self.log = log

    async def ListAuditEntries(
        self, request: audit_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditEntriesResponse:
        async with self.database.sessions() as session:
            return await self.log.list(session, request)


def register(server: grpc.aio.Server, database: Database, log: AuditLog) -> str:
    return add_servicer(server, AuditApi(database, log), audit_pb2, audit_pb2_grpc, "AuditService")
