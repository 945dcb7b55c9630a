"""The HTTP gateway: generic HTTP -> gRPC transcoding with auth, limits and audit.

Every ``/portal``, ``/super-admin`` and ``/internal`` route comes from the
protos' ``google.api.http`` bindings (see ``transcoding.py``); this module only
applies the policy around a call: flag, authentication, permission, tenant,
rate limit, audit, request id, errors as problem documents.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote

import grpc
import httpx
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tally.usage.v1 import usage_pb2

from gateway import cloudevents, health, overview, problems, transcoding, usagecodec
from gateway.apikeys import ApiKeyVerifier, KeyPrincipal
from gateway.audit import AuditReader
from gateway.auth import Authorizer, Principal
from gateway.descriptors import http_bindings
from gateway.dialects import lago, openmeter, stripe_meter
from gateway.dialects.routes import DialectRoutes, verify_with
from gateway.docs import (
    AUDIT_PATH,
    CONTEXT_PATH,
    DOCS_PAGE,
    FEATURES_PATH,
    GATEWAY_ROUTES,
    OVERVIEW_PATH,
    WEBHOOK_PATH,
)
from gateway.flags import Flags, request_orgs
from gateway.openapi import openapi_document
from gateway.problems import Problem
from gateway.ratelimit import RateLimits
from gateway.transcoding import Router
from services.kit.http import metrics_endpoint
from services.kit.settings import GatewaySettings
from services.kit.telemetry import request_id_var

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

# What a browser front end may send (the internal X-Api-Key is not for browsers)
# and read beyond the safelisted response headers.
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Request-Id",
    "traceparent",
    "tracestate",
)
CORS_EXPOSED_HEADERS = ("X-Request-Id", "Retry-After", "WWW-Authenticate")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Headers Stripe's signature check needs, forwarded untouched with the raw body.
_WEBHOOK_HEADERS = ("content-type", "stripe-signature", "user-agent")
_RECORD_BATCH = "/tally.usage.v1.UsageService/RecordUsageBatch"
_VERIFY_API_KEY = "/tally.usage.v1.UsageService/VerifyApiKey"
_REVOKE_API_KEY = "/tally.usage.v1.UsageService/RevokeApiKey"


class RequestIdMiddleware:
    """Accept a sane ``X-Request-Id`` or make one; return it; log one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                given = value.decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)  # every log line of this request names it
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                extra={
                    "http_method": scope["method"],
                    "http_path": scope["path"],
                    "http_status": status,
                    "request_id": request_id,
                },
            )
            request_id_var.reset(token)


def _portal_bindings_have_org() -> None:
    # Tenant isolation relies on every portal request carrying org_id; a new
    # portal RPC without one must fail the start, not leak.
    for binding in http_bindings():
        portal = binding.path.startswith(transcoding.PORTAL_PREFIX)
        if portal and "org_id" not in binding.method.input_type.fields_by_name:
            raise RuntimeError(f"portal route {binding.path} has no org_id field")


def create_app(settings: GatewaySettings) -> Starlette:
    _portal_bindings_have_org()
    router = Router(http_bindings())
    authorizer = Authorizer(settings)
    limits = RateLimits(settings)
    flags = Flags.from_settings(settings)
    log.info("route groups: %s", flags.describe())
    channels: dict[str, grpc.aio.Channel] = {}
    audit = AuditReader(channels, settings.grpc_deadline_seconds, AUDIT_PATH)
    calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
    openapi: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        retryable = transcoding.idempotent_methods(router.routes)
        # One channel per service for the life of the process: channels are
        # expensive to build and multiplex every call. Reads retry on
        # UNAVAILABLE through the service config; mutations never retry here.
        for name, address in settings.service_addresses().items():
            service_name = f"tally.{name}.v1.{name.capitalize()}Service"
            config = transcoding.service_config(service_name, retryable.get(service_name, ()))
            channels[name] = grpc.aio.insecure_channel(
                address,
                options=[("grpc.service_config", config), ("grpc.enable_retries", 1)],
                # Trace context continues into the services' spans.
                interceptors=aio_client_interceptors(),  # type: ignore[no-untyped-call]
            )
        for route in router.routes:
            calls[route.rpc_path] = transcoding.multicallable(
                channels[route.binding.service], route
            )
        openapi.update(openapi_document(GATEWAY_ROUTES))
        try:
            yield
        finally:
            calls.clear()
            for channel in channels.values():
                await channel.close()

    async def admit(group: str, headers: Headers) -> Principal | None:
        """404 unless the group is on for this caller, as if the route did not exist.

        Off: before any credentials are read. On for a cohort: the caller's org
        decides, so the token is read first (and returned, not read twice);
        internal calls are decided by the orgs in the request, in ``_call``.
        """
        if flags.off(group):
            raise problems.not_found()
        if not flags.per_org(group) or group == "internal":
            return None
        principal = await authorizer.authenticate(group, headers)
        if not flags.admits(group, principal.org_id, principal.org_tags):
            raise problems.not_found()
        return principal

    def request_id(request: Request) -> str:
        value: str = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        return value

    # Ingestion API keys (usage service) and the other systems' usage dialects.
    api_keys = ApiKeyVerifier(
        lambda secret: verify_with(calls[_VERIFY_API_KEY], secret, settings.grpc_deadline_seconds),
        settings.api_key_cache_seconds,
    )

    async def admit_key(principal: KeyPrincipal | None) -> None:
        # Dialects are ingestion, so the internal group's flag (not per org here).
        if principal is None:
            if flags.off("internal"):
                raise problems.not_found()
            return
        await limits.hit(principal.subject, principal.org_id)

    async def record_batch(events: list[Any], principal: KeyPrincipal, rid: str) -> Any:
        try:
            return await calls[_RECORD_BATCH](
                usage_pb2.RecordUsageBatchRequest(events=events),
                timeout=settings.grpc_deadline_seconds,
                metadata=(
                    ("x-request-id", rid),
                    ("x-tally-actor", principal.subject),
                    ("x-tally-actor-role", "api_key"),
                ),
            )
        except grpc.aio.AioRpcError as error:
            raise problems.from_rpc_error(error) from None

    dialects = DialectRoutes(
        api_keys,
        record_batch,
        admit_key,
        request_id,
        stripe_meter.Sessions(settings.meter_session_key),
    )

    async def healthz(request: Request) -> JSONResponse:
        statuses = await health.check_all(channels, settings.health_deadline_seconds)
        ok = all(status == health.SERVING for status in statuses.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "services": statuses},
            status_code=200 if ok else 503,
        )

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(openapi)

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    async def audit_read(request: Request) -> Response:
        rid = request_id(request)
        try:
            principal = await admit("admin", request.headers)
            principal = principal or await authorizer.authenticate("admin", request.headers)
            authorizer.permit("admin", "GET", principal)
            await limits.hit(principal.subject)
            # Every service's trail, merged (gateway/audit.py); the gateway keeps none.
            page = await audit.page(
                request.query_params.multi_items(),
                (("x-request-id", rid), ("x-tally-actor", principal.subject)),
            )
        except Problem as problem:
            return problem.response(rid)
        return JSONResponse(page)

    async def stripe_webhook(request: Request) -> Response:
        rid = request_id(request)
        if not settings.payments_webhook_url:
            return Problem(
                503, "the payments webhook endpoint is not configured", "PAYMENTS_UNAVAILABLE"
            ).response(rid)
        body = await request.body()
        headers = {h: request.headers[h] for h in _WEBHOOK_HEADERS if h in request.headers}
        headers["x-request-id"] = rid
        try:
            async with httpx.AsyncClient(timeout=settings.grpc_deadline_seconds) as client:
                answer = await client.post(
                    settings.payments_webhook_url, content=body, headers=headers
                )
        except httpx.HTTPError as exc:
            log.warning("stripe webhook not forwarded: %s", exc)
            return Problem(
                503, "the payments service is not reachable", "PAYMENTS_UNAVAILABLE"
            ).response(rid)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def transcode(request: Request) -> Response:
        rid = request_id(request)
        path: str = request.scope["path"]
        method = request.method
        group = transcoding.group_of(path)
        try:
            if group is None:
                raise problems.not_found(f"no route for {method} {path}")
            # A disabled group is indistinguishable from an absent one; checked
            # before matching, so a 405 tells an outsider nothing either.
            admitted = await admit(group, request.headers)
            matched = router.match(method, path)
            if matched is None:
                raise problems.not_found(f"no route for {method} {path}")
            route, path_values = matched
            principal = admitted or await authorizer.authenticate(group, request.headers)
            authorizer.permit(group, method, principal)
            return await _call(request, route, path_values, principal, group, rid)
        except Problem as problem:
            return problem.response(rid)

    async def _call(
        request: Request,
        route: transcoding.Route,
        path_values: dict[str, str],
        principal: Principal,
        group: str,
        rid: str,
    ) -> Response:
        await limits.hit(principal.subject, principal.org_id if group == "portal" else "")
        if route.streaming:
            raise Problem(
                501,
                f"{route.action} streams; use gRPC or the batch endpoint",
                "STREAMING_NOT_SUPPORTED",
            )
        body: Any = None
        kind = cloudevents.media_type(request.headers.get("content-type"))
        if route.binding.body and kind in cloudevents.MEDIA_TYPES:
            # CloudEvents-style usage JSON, mapped to the request's UsageEvent(s).
            descriptor = route.request_class.DESCRIPTOR
            raw = transcoding.parse_body(await request.body())
            body = cloudevents.request_body(descriptor, kind, raw)  # type: ignore[arg-type]
        elif route.binding.body:
            raw_body = await request.body()
            body = transcoding.parse_body(raw_body)
            # Plain usage ingestion skips json_format; anything else the codec
            # declines goes the generic way below, errors included.
            codec = usagecodec.CODECS.get(route.rpc_path) if group == "internal" else None
            if codec is not None and not path_values and not request.scope["query_string"]:
                fast = codec.decode(body, raw_body)
                if fast is not None:
                    _admit_request(fast, principal)
                    reply = await _invoke(route, fast, principal, rid)
                    return JSONResponse(codec.encode(reply))
        try:
            message = transcoding.build_request(
                route, path_values, request.query_params.multi_items(), body
            )
        except (
            TypeError,
            ValueError,
            AttributeError,
            KeyError,
            RecursionError,
            SystemError,
        ) as exc:
            # Client input json_format rejects outside ParseError: still the
            # client's mistake, so a 400, never a 500. (upb's field lookup
            # raises SystemError for a JSON key holding a lone surrogate.)
            raise problems.invalid(
                "body", f"cannot be read as {route.action} input: {exc}"
            ) from None
        if group == "portal":
            # The org is always the token's: another org named anywhere is "not found",
            # never "forbidden", so ids of other tenants cannot be probed.
            for _, org_id in transcoding.org_ids_in(message):
                if org_id != principal.org_id:
                    raise problems.not_found()
            message.org_id = principal.org_id  # type: ignore[attr-defined]
        elif group == "internal":
            _admit_request(message, principal)
        # A document's headers (its file name) come as response metadata.
        headers: dict[str, str] | None = {} if transcoding.answers_document(route) else None
        reply = await _invoke(route, message, principal, rid, headers)
        if route.rpc_path == _REVOKE_API_KEY:
            api_keys.forget(reply.api_key.key_id)  # no TTL's grace through this gateway
        payload = transcoding.response_payload(route, reply)
        if isinstance(payload, tuple):
            data, content_type = payload
            return Response(data, media_type=content_type, headers=headers)
        return JSONResponse(payload)

    def _admit_request(message: Any, principal: Principal) -> None:
        # An internal call for an org outside the cohort: no such route for it.
        if flags.per_org("internal") and not flags.admits_request(
            request_orgs(message), principal.org_id
        ):
            raise problems.not_found()

    async def _invoke(
        route: transcoding.Route,
        message: Any,
        principal: Principal,
        rid: str,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The reply; ``headers``, when given, gets the HTTP headers the service sent."""
        # Who asks and as what, for the services' audit trail (services/kit/audit.py).
        role = authorizer.permit(route.group or "", route.http_method, principal)
        try:
            call = calls[route.rpc_path](
                message,
                timeout=settings.grpc_deadline_seconds,
                metadata=(
                    ("x-request-id", rid),
                    ("x-tally-actor", principal.subject),
                    ("x-tally-actor-role", role),
                ),
            )
            reply = await call
            if headers is not None:
                headers.update(transcoding.forwarded_headers(await call.initial_metadata()))
            return reply
        except grpc.aio.AioRpcError as error:
            raise problems.from_rpc_error(error) from None

    def route_caller(principal: Principal, rid: str, portal: bool) -> overview.RouteCall:
        """Calls one of our own transcoded GET routes for a composed answer."""

        async def call(method: str, target: str) -> dict[str, Any]:
            path, _, query = target.partition("?")
            matched = router.match(method, path)
            if matched is None:  # an id that breaks the path: nothing of it exists
                raise problems.not_found()
            route, quoted = matched
            # Composers quote ids into the path; the request carries them as given.
            values = {name: unquote(value) for name, value in quoted.items()}
            message = transcoding.build_request(route, values, parse_qsl(query), None)
            if portal:
                message.org_id = principal.org_id  # type: ignore[attr-defined]
            reply = await _invoke(route, message, principal, rid)
            payload = transcoding.response_payload(route, reply)
            assert isinstance(payload, dict)  # composed routes answer JSON messages
            return payload

        return call

    async def portal_overview(request: Request) -> Response:
        rid = request_id(request)
        try:
            principal = await admit("portal", request.headers)
            principal = principal or await authorizer.authenticate("portal", request.headers)
            authorizer.permit("portal", "GET", principal)
            await limits.hit(principal.subject, principal.org_id)
            call = route_caller(principal, rid, portal=True)
            composed = await overview.compose(principal.org_id, call)
        except Problem as problem:
            return problem.response(rid)
        return JSONResponse(composed)

    async def portal_features(request: Request) -> Response:
        # Answered whatever the portal flag says: it is how a front end learns
        # to hide what is off for its org.
        rid = request_id(request)
        try:
            principal = await authorizer.authenticate("portal", request.headers)
            authorizer.permit("portal", "GET", principal)
            await limits.hit(principal.subject, principal.org_id)
        except Problem as problem:
            return problem.response(rid)
        features = flags.features(principal.org_id, principal.org_tags)
        return JSONResponse({"orgId": principal.org_id, "features": features})

    async def support_context(request: Request) -> Response:
        rid = request_id(request)
        try:
            principal = await admit("admin", request.headers)
            principal = principal or await authorizer.authenticate("admin", request.headers)
            # GET: billing_admin and billing_support both read it.
            authorizer.permit("admin", "GET", principal)
            await limits.hit(principal.subject)
            org_id: str = request.path_params["org_id"]
            call = route_caller(principal, rid, portal=False)
            composed = await overview.compose_support_context(org_id, call)
        except Problem as problem:
            return problem.response(rid)
        return JSONResponse(composed)

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
            Route(AUDIT_PATH, audit_read, methods=["GET"]),
            Route(WEBHOOK_PATH, stripe_webhook, methods=["POST"]),
            Route(OVERVIEW_PATH, portal_overview, methods=["GET"]),
            Route(FEATURES_PATH, portal_features, methods=["GET"]),
            Route(CONTEXT_PATH, support_context, methods=["GET"]),
            Route(openmeter.PATH, dialects.events, methods=["POST"]),
            Route(lago.BATCH_PATH, dialects.lago_batch, methods=["POST"]),
            Route(stripe_meter.V1_PATH, dialects.stripe_v1, methods=["POST"]),
            Route(stripe_meter.SESSION_PATH, dialects.stripe_session, methods=["POST"]),
            Route(stripe_meter.STREAM_PATH, dialects.stripe_stream, methods=["POST"]),
            Route("/{rest:path}", transcode, methods=methods),
        ],
        lifespan=lifespan,
    )
    if settings.cors_origins():
        # Inside RequestIdMiddleware: preflight answers carry an id and are logged too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins()),
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=methods,
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=settings.cors_max_age_seconds,
        )
    app.add_middleware(RequestIdMiddleware)
    # Outermost: a server span per request (W3C traceparent honoured), which
    # the gRPC client interceptors continue into the services.
    app.add_middleware(
        OpenTelemetryMiddleware,
        exclude_spans=["receive", "send"],
        server_request_hook=_mark_gateway_span,
    )
    return app


def _mark_gateway_span(span: Span, scope: Scope) -> None:
    # The same attribute the services' spans carry, so traces group by hop
    # even when several processes share one service.name (tests, one-box runs).
    if span.is_recording():
        span.set_attribute("tally.service", "gateway")
