"""Server interceptors: trace, log and measure every call, map errors to rich statuses.

Servicers raise ``TallyError``s and never touch status codes; this is the one
place that decides how an error looks on the wire. It also measures each
call's latency and names the request it serves for the logs.

Everything here runs on every call of the hottest reads (CheckEntitlement
answers from memory), so per-call work is kept to what changes per call:
wrapped handlers and metric attributes are built once per method.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServicerContext
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator

from services.kit.audit import Call, current_call
from services.kit.errors import TallyError
from services.kit.rpc.status import code_for, internal_status, to_status
from services.kit.rpc.translate import translate
from services.kit.telemetry import request_id_var

log = logging.getLogger("tally.rpc")
_duration = metrics.get_meter("tally.kit.rpc").create_histogram(
    "rpc.server.duration",
    unit="ms",
    description="gRPC server call latency, by service, method and status code",
)
_REQUEST_ID_HEADER = "x-request-id"
_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def server_interceptors(service: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of every service's gRPC server, outermost first."""
    return [ServerTracingInterceptor(), ErrorMappingInterceptor(service)]


class ServerTracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """OpenTelemetry's server interceptor, skipped on calls where it can do nothing.

    Without an SDK tracer provider its spans are no-ops, and what it still
    does (continue a caller's trace context, so a call passes the trace on to
    its own calls and events) needs a propagation header. A call with neither
    skips it: about half of the interceptors' CPU per call. Checked per call,
    because tests install a provider after servers start.
    """

    def __init__(self) -> None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        self._traced: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if isinstance(trace.get_tracer_provider(), _NO_TRACING) and not _carries_context(
            details.invocation_metadata
        ):
            return await continuation(details)
        return await self._traced.intercept_service(continuation, details)


def _carries_context(metadata: Any) -> bool:
    fields = _fields(propagate.get_global_textmap())
    return any(key in fields for key, _ in metadata or ())


@functools.lru_cache(maxsize=4)
def _fields(propagator: TextMapPropagator) -> frozenset[str]:
    # The composite propagator builds a new set each time it is asked.
    return frozenset(propagator.fields)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str) -> None:
        self.service = service
        # method -> (the handler it wrapped, the wrapper): the handler a
        # method resolves to is the same object on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
            self._begin(method, request, context)
            try:
                response = await behavior(request, context)
            except Exception as raised:
                exc = translate(raised)
                self._measure(method, _code_of(exc, context), started)
                await self._abort(method, context, exc, started)
                raise  # unreachable: abort raises
            self._measure(method, _code_of(None, context), started)
            self._log(method, context, started)
            return response

        return wrapped

    def _wrap_stream(
        self, method: str, behavior: Callable[[Any, ServicerContext], AsyncIterator[Any]]
    ) -> Callable[[Any, ServicerContext], AsyncIterator[Any]]:
        async def wrapped(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            self._begin(method, request, context)
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as raised:
                exc = translate(raised)
                self._measure(method, _code_of(exc, context), started)
                await self._abort(method, context, exc, started)
                raise
            self._measure(method, _code_of(None, context), started)
            self._log(method, context, started)

        return wrapped

    def _begin(self, method: str, request: Any, context: ServicerContext) -> None:
        # Each call runs in its own task, so the context variables are the call's.
        request_id_var.set(_request_id(request, context))
        current_call.set(Call(method, context))  # who asks, read only if audited
        trace.get_current_span().set_attribute("tally.service", self.service)

    def _measure(self, method: str, code: str, started: float) -> None:
        attributes = self._attributes.get((method, code))
        if attributes is None:
            service, _, name = method.lstrip("/").partition("/")
            attributes = self._attributes[(method, code)] = {
                "service": self.service,
                "rpc.service": service,
                "rpc.method": name,
                "rpc.grpc.status_code": code,
            }
        _duration.record((time.perf_counter() - started) * 1000, attributes)

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
        if not log.isEnabledFor(logging.DEBUG):
            return
        code = context.code() if hasattr(context, "code") else None
        log.debug(
            "rpc %s -> %s (%.1f ms)",
            method,
            getattr(code, "name", "OK") if code else "OK",
            (time.perf_counter() - started) * 1000,
        )


def _request_id(request: Any, context: ServicerContext) -> str:
    """The gateway's X-Request-Id, else the AIP-155 ``request_id`` of a mutation."""
    for key, value in context.invocation_metadata() or ():
        if key == _REQUEST_ID_HEADER and isinstance(value, str):
            return value
    value = getattr(request, "request_id", "")
    return value if isinstance(value, str) else ""


def _code_of(exc: Exception | None, context: ServicerContext) -> str:
    if isinstance(exc, TallyError):
        return str(code_for(exc).name)
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return str(getattr(code, "name", code))
    return "OK" if exc is None else "INTERNAL"


def _already_aborted(context: ServicerContext) -> bool:
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK
