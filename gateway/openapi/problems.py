"""The problem+json answers every route can give, per status the gateway's policy can answer."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from gateway.openapi.schemas import schema_ref

PROBLEM = "Problem"
PROBLEM_MEDIA = "application/problem+json"
REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}

# What every route can answer by the gateway's policy (docs/gateway.md): a bad
# field, no or a bad token, a missing permission, a flag off or an unknown or
# other tenant's id, the rate limit, and a service failing, away or too slow.
COMMON_ERRORS = (400, 401, 403, 404, 429, 500, 503, 504)
HEADERS_BY_STATUS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {
        "Retry-After": {
            "schema": {"type": "integer"},
            "description": "seconds until the rate limit's window frees a slot",
        }
    },
}
STATUS_MEANING = {
    400: "a request field is invalid (`violations` names it) or the state forbids the change",
    401: "no token, or a token that does not verify",
    403: "the token lacks the permission or role, or sets a staff-only field",
    404: "no such route or resource (a disabled route group and another tenant's ids too)",
    409: "already exists, or a concurrent change won",
    415: "a CloudEvents media type on a route that does not take it",
    429: "over the rate limit; retry after `Retry-After` seconds",
    500: "the service failed (no detail is given)",
    501: "not served over HTTP (a client-streaming RPC: use gRPC or the batch route)",
    503: "the service is not reachable",
    504: "the service did not answer within the gateway's deadline",
}


def error_statuses(method: str, body: bool = False, streaming: bool = False) -> tuple[int, ...]:
    """The problem statuses a route can answer: the common ones, 409 for mutations, ..."""
    extra = []
    if method.lower() != "get":
        extra.append(409)
    if body:
        extra.append(415)
    if streaming:
        extra.append(501)
    return tuple(sorted({*COMMON_ERRORS, *extra}))


def response_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"Status{status}"


def problem_refs(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(s): {"$ref": f"#/components/responses/{response_name(s)}"} for s in sorted(statuses)
    }


def problem_components(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        response_name(s): {
            "description": f"{response_name(s)}: {STATUS_MEANING.get(s, 'an error')}",
            "headers": {**REQUEST_ID_HEADER, **HEADERS_BY_STATUS.get(s, {})},
            "content": {PROBLEM_MEDIA: {"schema": schema_ref(PROBLEM)}},
        }
        for s in sorted(statuses)
    }


# The body of every error answer (gateway/problems.py).
PROBLEM_SCHEMAS: dict[str, dict[str, Any]] = {
    PROBLEM: {
        "type": "object",
        "description": "An RFC 9457 problem document",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "reason": {
                "type": "string",
                "description": "stable: the service's ErrorInfo reason or the gateway's own",
                "example": "INVALID_REQUEST_FIELD",
            },
            "violations": {"type": "array", "items": schema_ref("Violation")},
            "requestId": {"type": "string"},
        },
    },
    "Violation": {
        "type": "object",
        "required": ["field", "description"],
        "properties": {
            "field": {
                "type": "string",
                "description": "proto names, dotted",
                "example": "metric.code",
            },
            "description": {"type": "string"},
        },
    },
}
