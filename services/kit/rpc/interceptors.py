"""Server interceptors: log every call and map errors to rich statuses.

Servicers raise ``TallyError``s and never touch status codes; this is the one
place that decides how an error looks on the wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext

from services.kit.errors import TallyError
from services.kit.rpc.status import code_for, internal_status, to_status

log = logging.getLogger("tally.rpc")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(
        self, method: str, behavior: Callable[[Any, ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, ServicerContext], Awaitable[Any]]:
        async def wrapped(request: Any, context: ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except Exception as exc:
                await self._abort(method, context, exc, started)
                raise  # unreachable: abort raises
            self._log(method, context, started)
            return response

        return wrapped

    def _wrap_stream(
        self, method: str, behavior: Callable[[Any, ServicerContext], AsyncIterator[Any]]
    ) -> Callable[[Any, ServicerContext], AsyncIterator[Any]]:
        async def wrapped(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                await self._abort(method, context, exc, started)
                raise
            self._log(method, context, started)

        return wrapped

    async def _abort(
        self, method: str, context: ServicerContext, exc: Exception, started: float
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if isinstance(exc, TallyError):
            log.info(
                "rpc %s -> %s %s (%.1f ms)", method, code_for(exc).name, exc.reason, elapsed_ms
            )
            await context.abort_with_status(to_status(exc, self.service))
        if isinstance(exc, grpc.aio.AbortError) or _already_aborted(context):
            raise exc  # the servicer set a status itself (e.g. UNIMPLEMENTED)
        log.exception("rpc %s -> INTERNAL (%.1f ms)", method, elapsed_ms)
        await context.abort_with_status(internal_status())

    @staticmethod
    def _log(method: str, context: ServicerContext, started: float) -> None:
        code = context.code() if hasattr(context, "code") else None
        log.debug(
            "rpc %s -> %s (%.1f ms)",
            method,
            getattr(code, "name", "OK") if code else "OK",
            (time.perf_counter() - started) * 1000,
        )


def _already_aborted(context: ServicerContext) -> bool:
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK
