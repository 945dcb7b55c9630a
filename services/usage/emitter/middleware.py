"""Metering a product's API calls without touching its handlers.

Both forms record one event per handled request for a configured metric,
after the request completed, through an emitter (so the request never waits
on the usage service). The org comes from a function of the request; a
request without an org is not metered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc

from services.usage.emitter.client import UsageEmitter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def org_from_header(name: str = "x-org-id") -> Callable[[Scope], str | None]:
    raw = name.lower().encode()

    def find(scope: Scope) -> str | None:
        for key, value in scope.get("headers", []):
            if key == raw:
                return bytes(value).decode() or None
        return None

    return find


class UsageMeteringMiddleware:
    """ASGI middleware: one ``metric_code`` event per HTTP request of an org."""

    def __init__(
        self,
        app: ASGIApp,
        emitter: UsageEmitter,
        metric_code: str,
        org_id: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.emitter = emitter
        self.metric_code = metric_code
        self.org_id = org_id or org_from_header()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            org = self.org_id(scope)
            if org:
                self.emitter.emit(
                    org,
                    self.metric_code,
                    properties={
                        "method": str(scope.get("method", "")),
                        "path": str(scope.get("path", "")),
                        "status": str(status["code"]),
                    },
                )


def org_from_metadata(key: str = "x-org-id") -> Callable[[grpc.HandlerCallDetails], str | None]:
    def find(details: grpc.HandlerCallDetails) -> str | None:
        for item in details.invocation_metadata or ():
            if item.key == key:
                return str(item.value) or None
        return None

    return find


class UsageMeteringInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """gRPC server interceptor: one ``metric_code`` event per unary call of an org.

    Streaming calls pass through unmetered (one event per stream would say
    little about usage; meter those in the handler if they are billable).
    """

    def __init__(
        self,
        emitter: UsageEmitter,
        metric_code: str,
        org_id: Callable[[grpc.HandlerCallDetails], str | None] | None = None,
    ) -> None:
        self.emitter = emitter
        self.metric_code = metric_code
        self.org_id = org_id or org_from_metadata()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        org = self.org_id(details)
        if handler is None or not org or not handler.unary_unary:
            return handler
        behavior = handler.unary_unary
        method: str = details.method

        async def metered(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            finally:
                self.emitter.emit(org, self.metric_code, properties={"method": method})

        return grpc.unary_unary_rpc_method_handler(
            metered,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
