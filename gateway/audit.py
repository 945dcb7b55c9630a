"""``GET /super-admin/billing/v1/audit``: the services' audit trails, merged.

The gateway keeps no audit data of its own. Each service records its
mutations in its own ``audit_entry`` table (services/kit/audit.py) and serves
``tally.audit.v1.AuditService``; this asks every service (or those named by
``service=``) for one page with the same filters, merges the answers newest
first and keeps ``page_size``. The next page token is the position after the
last entry kept: the services' own token format, which means the same in each
of them because entry ids are UUIDs ordered alike everywhere, so every entry
comes exactly once across pages whatever the replicas or services.

A service that cannot answer fails the whole page (503 ``AUDIT_UNAVAILABLE``
naming it): a page without it would move the position past its entries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from tally.audit.v1 import audit_pb2

from gateway import problems, transcoding
from gateway.descriptors import HttpBinding
from gateway.problems import Problem
from services.kit.audit import newest_first_key, page_token_after
from services.kit.errors import InvalidArgument
from services.kit.pagination import page_size

SERVICE_PARAMETER = "service"
# What a service that cannot answer looks like; anything else is the caller's
# problem (a bad page token) and answered as the service said it.
_AWAY = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
)

_LIST = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].methods_by_name["ListAuditEntries"]


def split_services(
    query: Iterable[tuple[str, str]], known: Sequence[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The services asked for (all when none is named) and the other parameters."""
    named: list[str] = []
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key != SERVICE_PARAMETER:
            rest.append((key, value))
        elif value not in known:
            raise problems.invalid(SERVICE_PARAMETER, f"is one of {', '.join(known)}")
        elif value not in named:
            named.append(value)
    return named or list(known), rest


def merge(
    replies: Sequence[audit_pb2.ListAuditEntriesResponse],
    request: audit_pb2.ListAuditEntriesRequest,
    size: int,
) -> audit_pb2.ListAuditEntriesResponse:
    """One newest-first page of ``size`` from every service's page of ``size``."""
    entries = sorted(
        (e for reply in replies for e in reply.entries), key=newest_first_key, reverse=True
    )
    # A service with more than it sent sent ``size``, so the merge has at least that.
    more = len(entries) > size or any(reply.next_page_token for reply in replies)
    kept = entries[:size]
    return audit_pb2.ListAuditEntriesResponse(
        entries=kept,
        next_page_token=page_token_after(kept[-1], request) if more and kept else "",
    )


class AuditReader:
    def __init__(
        self, channels: Mapping[str, grpc.aio.Channel], deadline_seconds: float, path: str
    ) -> None:
        self.channels = channels  # filled by the app's lifespan
        self.deadline = deadline_seconds
        # The route the gateway serves it on: query parameters are read as the
        # transcoder reads any GET's, into the request message.
        self.route = transcoding.compile_route(HttpBinding("audit", _LIST, "get", path, ""))

    async def page(
        self, query: Iterable[tuple[str, str]], metadata: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        services, rest = split_services(query, sorted(self.channels))
        request = transcoding.build_request(self.route, {}, rest, None)
        assert isinstance(request, audit_pb2.ListAuditEntriesRequest)
        try:
            size = page_size(request.page_size)
        except InvalidArgument as exc:
            raise problems.invalid("page_size", exc.violations[0].description) from None
        request.page_size = size
        answers = await asyncio.gather(
            *(self._ask(name, request, metadata) for name in services), return_exceptions=True
        )
        away: list[str] = []
        replies: list[audit_pb2.ListAuditEntriesResponse] = []
        for name, answer in zip(services, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError):
                if answer.code() not in _AWAY:
                    raise problems.from_rpc_error(answer)
                away.append(name)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                replies.append(answer)
        if away:
            raise Problem(
                503,
                f"the audit trail of {', '.join(away)} cannot be read now; try again, or"
                f" leave it out with {SERVICE_PARAMETER}=<service> for the others",
                "AUDIT_UNAVAILABLE",
            )
        page = merge(replies, request, size)
        payload: dict[str, Any] = json_format.MessageToDict(page)
        payload.setdefault("entries", [])
        return payload

    async def _ask(
        self,
        service: str,
        request: audit_pb2.ListAuditEntriesRequest,
        metadata: Sequence[tuple[str, str]],
    ) -> audit_pb2.ListAuditEntriesResponse:
        call = transcoding.multicallable(self.channels[service], self.route)
        reply = await call(request, timeout=self.deadline, metadata=tuple(metadata))
        assert isinstance(reply, audit_pb2.ListAuditEntriesResponse)
        return reply
