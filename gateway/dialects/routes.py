"""The dialect routes: API key -> org, body -> ``RecordUsageBatch`` -> the dialect's answer.

``POST /api/v1/events`` is both Lago's and OpenMeter's path; the request
decides which: a CloudEvents media type, or a JSON array or an object with
``specversion``, is OpenMeter's; an object with ``event`` is Lago's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tally.usage.v1 import resources_pb2, usage_pb2

from gateway import cloudevents, problems
from gateway.apikeys import ApiKeyVerifier, KeyPrincipal, bearer_secret, unauthorized
from gateway.dialects import DialectError, lago, openmeter, outcome_of, stripe_meter
from gateway.docs import document_route
from gateway.openapi import schema_ref
from gateway.problems import Problem

log = logging.getLogger(__name__)

# The events and the key's principal in, the service's answer out (gRPC errors
# already turned into Problems).
Record = Callable[
    [list[resources_pb2.UsageEvent], KeyPrincipal, str],
    Awaitable[usage_pb2.RecordUsageBatchResponse],
]
# Before anything is read: the route group's flag and the caller's rate limit.
Admit = Callable[[KeyPrincipal | None], Awaitable[None]]


_LAGO_EVENT = "gateway.LagoEvent"
_CLOUD_EVENT = "gateway.CloudEvent"
_STRIPE_EVENT = "gateway.StripeMeterEvent"
_OBJECT = {"type": "object"}
_COMPONENTS: dict[str, dict[str, Any]] = {
    _LAGO_EVENT: {
        "type": "object",
        "required": ["transaction_id", "code"],
        "properties": {
            "transaction_id": {"type": "string"},
            "external_subscription_id": {"type": "string"},
            "external_customer_id": {"type": "string", "description": "the API key's org id"},
            "code": {"type": "string", "description": "a metric code"},
            "timestamp": {"type": ["number", "string"], "description": "Unix seconds"},
            "properties": _OBJECT,
        },
    },
    _CLOUD_EVENT: cloudevents.schema(single=True)
    | {
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string", "description": "a metric code"},
            "subject": {
                "type": "string",
                "description": "the API key's org id, or the external id of one of its"
                " subscriptions",
            },
            "time": {"type": "string", "format": "date-time"},
            "data": _OBJECT,
        }
    },
    _STRIPE_EVENT: {
        "type": "object",
        "required": ["event_name", "payload"],
        "properties": {
            "event_name": {"type": "string", "description": "a metric code"},
            "identifier": {"type": "string"},
            "timestamp": {"type": "integer", "description": "Unix seconds"},
            "payload": {
                "type": "object",
                "properties": {
                    "stripe_customer_id": {
                        "type": "string",
                        "description": "the API key's org id, or the external id of one of"
                        " its subscriptions",
                    },
                    "value": {"type": "string"},
                },
            },
        },
    },
}
_AUTH = {"Authorization": {"type": "string", "description": "Bearer <ingestion API key>"}}
_SEE = " See docs/integrations.md for the mapping onto Tally's usage events."


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": schema_ref(name)}


document_route(
    "post",
    openmeter.PATH,
    operation_id="publicGatewayIngestEvents",
    summary="Lago's or OpenMeter's event ingestion (one path, told apart by the body)",
    description=(
        "`Authorization: Bearer <API key>` (created at"
        " `/super-admin/billing/v1/orgs/{org_id}/apiKeys`); the org is the key's."
        " A CloudEvents media type, or a JSON array or object with `specversion`, is"
        " OpenMeter's: 204 when every event counted, RFC 7807 problems otherwise. An"
        " object with `event` is Lago's: `{\"event\": {...}}` answered with Lago's"
        " event, 422 `validation_errors` in Lago's error shape." + _SEE
    ),
    response={"type": "object", "properties": {"event": _OBJECT}},
    headers=_AUTH,
    request_body={
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"event": schema_ref(_LAGO_EVENT)}}
            },
            cloudevents.SINGLE: {"schema": schema_ref(_CLOUD_EVENT)},
            cloudevents.BATCH: {"schema": _list_of(_CLOUD_EVENT)},
        },
    },
    errors=(400, 401, 404, 422, 429, 503),
    components=_COMPONENTS,
)
document_route(
    "post",
    lago.BATCH_PATH,
    operation_id="publicGatewayLagoEventsBatch",
    summary="Lago's batch event ingestion (at most 1,000 events)",
    description=(
        '`Authorization: Bearer <API key>`; `{"events": [...]}` answered with'
        " `{\"events\": [...]}` as Lago's; 422 in Lago's error shape names each"
        " rejected event by its index (the others are stored)." + _SEE
    ),
    response={"type": "object", "properties": {"events": {"type": "array", "items": _OBJECT}}},
    headers=_AUTH,
    request_body={
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"events": _list_of(_LAGO_EVENT)}}
            }
        },
    },
    errors=(400, 401, 404, 422, 429, 503),
    components=_COMPONENTS,
)
document_route(
    "post",
    stripe_meter.V1_PATH,
    operation_id="publicGatewayStripeMeterEvent",
    summary="Stripe's billing meter event (form-encoded), answered as a billing.meter_event",
    description="`Authorization: Bearer <API key>`; Stripe's error shape." + _SEE,
    response={"type": "object", "properties": {"object": {"const": "billing.meter_event"}}},
    headers=_AUTH,
    request_body={
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": schema_ref(_STRIPE_EVENT)}},
    },
    errors=(400, 401, 404, 429, 503),
    components=_COMPONENTS,
)
document_route(
    "post",
    stripe_meter.SESSION_PATH,
    operation_id="publicGatewayStripeMeterEventSession",
    summary="Stripe's v2 meter event session: a 15-minute token for the stream",
    description="`Authorization: Bearer <API key>`." + _SEE,
    response={
        "type": "object",
        "properties": {
            "authentication_token": {"type": "string"},
            "expires_at": {"type": "string"},
        },
    },
    headers=_AUTH,
    errors=(401, 404, 429),
)
document_route(
    "post",
    stripe_meter.STREAM_PATH,
    operation_id="publicGatewayStripeMeterEventStream",
    summary="Stripe's v2 meter event stream: up to 100 events per call",
    description="`Authorization: Bearer <session authentication_token>`." + _SEE,
    response=_OBJECT,
    headers={"Authorization": {"type": "string", "description": "Bearer <session token>"}},
    request_body={
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"events": _list_of(_STRIPE_EVENT)}}
            }
        },
    },
    errors=(400, 401, 404, 429, 503),
    components=_COMPONENTS,
)


class DialectRoutes:
    def __init__(
        self,
        verifier: ApiKeyVerifier,
        record: Record,
        admit: Admit,
        request_id: Callable[[Request], str],
        sessions: stripe_meter.Sessions,
    ) -> None:
        self.sessions = sessions
        self.verifier = verifier
        self.record = record
        self.admit = admit
        self.request_id = request_id

    async def _principal(self, request: Request) -> KeyPrincipal:
        await self.admit(None)
        principal = await self.verifier.principal(request.headers)
        await self.admit(principal)
        return principal

    async def events(self, request: Request) -> Response:
        """``POST /api/v1/events``: OpenMeter's or Lago's, by the request's shape."""
        kind = cloudevents.media_type(request.headers.get("content-type"))
        raw = await request.body()
        body = _json(raw)
        if kind in cloudevents.MEDIA_TYPES or isinstance(body, list) or _has(body, "specversion"):
            return await self._openmeter(request, body)
        return await self._lago(request, body, batch=False)

    async def lago_batch(self, request: Request) -> Response:
        return await self._lago(request, _json(await request.body()), batch=True)

    async def _lago(self, request: Request, body: Any, batch: bool) -> Response:
        try:
            principal = await self._principal(request)
            if body is _MALFORMED:
                return _lago_error(400, "bad_request", {"body": ["invalid_json"]})
            try:
                events = lago.decode(body, principal.org_id, batch)
            except DialectError as bad:
                return _lago_error(422, "validation_errors", bad.details)
            reply = await self.record(events, principal, self.request_id(request))
        except Problem as problem:
            code = (problem.reason or "error").lower()
            return _lago_error(problem.status, code, None, problem.headers)
        outcomes = [outcome_of(r) for r in reply.results]
        rejected = {
            str(i): lago.rejection_details(o)
            for i, o in enumerate(outcomes)
            if o.status == "rejected"
        }
        if rejected:
            return _lago_error(422, "validation_errors", rejected if batch else rejected["0"])
        answers = [lago.event_answer(e, o) for e, o in zip(events, outcomes, strict=True)]
        return JSONResponse({"events": answers} if batch else {"event": answers[0]})

    async def _openmeter(self, request: Request, body: Any) -> Response:
        rid = self.request_id(request)
        try:
            principal = await self._principal(request)
            if body is _MALFORMED:
                raise problems.invalid("body", "not valid JSON", "MALFORMED_JSON")
            events = openmeter.decode(body, principal.org_id)
            reply = await self.record(events, principal, rid)
            outcomes = [outcome_of(r) for r in reply.results]
            rejected = openmeter.rejected_problem(events, outcomes)
            if rejected is not None:
                raise rejected
        except Problem as problem:
            return problem.response(rid)
        return Response(status_code=204)

    async def stripe_v1(self, request: Request) -> Response:
        """``POST /v1/billing/meter_events``: one form-encoded meter event."""
        try:
            principal = await self._principal(request)
            try:
                pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
            except UnicodeDecodeError:
                return _stripe_error(400, stripe_meter.error_body("the body is not UTF-8"))
            event = stripe_meter.decode_form(pairs, principal.org_id)
            reply = await self.record([event], principal, self.request_id(request))
        except DialectError as bad:
            return _stripe_invalid(bad)
        except Problem as problem:
            return _stripe_problem(problem)
        [outcome] = [outcome_of(r) for r in reply.results]
        if outcome.status == "rejected":
            return _stripe_error(
                400,
                stripe_meter.error_body(
                    f"{outcome.reason}: {outcome.message}",
                    param=stripe_meter.rejected_param(outcome.reason),
                    code=outcome.reason,
                ),
            )
        return JSONResponse(stripe_meter.meter_event(event, outcome))

    async def stripe_session(self, request: Request) -> Response:
        """``POST /v2/billing/meter_event_session``: a 15-minute token for the stream."""
        try:
            await self._principal(request)
        except Problem as problem:
            return _stripe_problem(problem)
        secret = bearer_secret(request.headers)
        return JSONResponse(self.sessions.open(secret, time.time()))

    async def stripe_stream(self, request: Request) -> Response:
        """``POST /v2/billing/meter_event_stream``: up to 100 events, session token auth."""
        try:
            await self.admit(None)
            secret = self.sessions.secret(bearer_secret(request.headers), time.time())
            if secret is None:
                raise unauthorized("unknown or expired meter event session")
            principal = await self.verifier.principal_of(secret)
            await self.admit(principal)
            body = _json(await request.body())
            if body is _MALFORMED:
                return _stripe_error(400, stripe_meter.error_body("the body is not JSON"))
            events = stripe_meter.decode_stream(body, principal.org_id)
            reply = await self.record(events, principal, self.request_id(request))
        except DialectError as bad:
            return _stripe_invalid(bad)
        except Problem as problem:
            return _stripe_problem(problem)
        outcomes = [outcome_of(r) for r in reply.results]
        rejected = [
            f"events[{i}]: {o.reason}: {o.message}"
            for i, o in enumerate(outcomes)
            if o.status == "rejected"
        ]
        if rejected:
            message = (
                f"{len(rejected)} of {len(events)} events were not counted (the others were"
                " stored): " + "; ".join(rejected)
            )
            return _stripe_error(400, stripe_meter.error_body(message, code="events_rejected"))
        return JSONResponse({})


_MALFORMED = object()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _MALFORMED


def _has(body: Any, key: str) -> bool:
    return isinstance(body, dict) and key in body


def _stripe_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=_headers(status, headers))


def _stripe_invalid(bad: DialectError) -> JSONResponse:
    param = bad.details.get("param", [None])[0]
    code = bad.details.get("code", ["parameter_invalid"])[0]
    return _stripe_error(400, stripe_meter.error_body(bad.message, param=param, code=code))


def _stripe_problem(problem: Problem) -> JSONResponse:
    body = stripe_meter.error_body(problem.detail, code=(problem.reason or "error").lower())
    if problem.status == 401:
        body["error"]["type"] = "invalid_request_error"
    elif problem.status >= 500:
        body["error"]["type"] = "api_error"
    return _stripe_error(problem.status, body, problem.headers)


def _lago_error(
    status: int,
    code: str,
    details: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = lago.error_body(status, code, details)
    return JSONResponse(body, status_code=status, headers=_headers(status, headers))


def _headers(status: int, given: dict[str, str] | None) -> dict[str, str]:
    # A 429's Retry-After comes along from the Problem; a 401 says which scheme.
    return {**(given or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}


async def verify_with(
    call: Callable[..., Any], secret: str, deadline: float
) -> KeyPrincipal | None:
    """The usage service's VerifyApiKey: None for an unknown or revoked key."""
    try:
        reply = await call(usage_pb2.VerifyApiKeyRequest(secret=secret), timeout=deadline)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise problems.from_rpc_error(error) from None
    return KeyPrincipal(org_id=reply.api_key.org_id, key_id=reply.api_key.key_id)
