"""Errors as RFC 9457 problem documents, and the one gRPC -> HTTP status table."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.responses import JSONResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://billing.tally.dev/problems/"

# grpc-gateway's and Envoy's table, so clients of either see the same codes.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status_for(code: grpc.StatusCode) -> int:
    # INTERNAL, UNKNOWN, DATA_LOSS: the service failed; say so without detail.
    return HTTP_STATUS.get(code, 500)


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


@dataclass
class Problem(Exception):
    """An error the gateway answers itself or translated from a service."""

    status: int
    detail: str
    reason: str = ""
    violations: list[Violation] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        title = _title(self.status)
        slug = (self.reason or title).lower().replace(" ", "-").replace("_", "-")
        doc: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.reason:
            doc["reason"] = self.reason
        if self.violations:
            doc["violations"] = [
                {"field": v.field, "description": v.description} for v in self.violations
            ]
        if request_id:
            doc["requestId"] = request_id
        return doc

    def response(self, request_id: str | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(request_id),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_CONTENT_TYPE,
        )


def _title(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def from_rpc_error(error: grpc.aio.AioRpcError) -> Problem:
    """The service's status with its ErrorInfo reason and BadRequest violations."""
    code = error.code()
    status = http_status_for(code)
    reason = ""
    violations: list[Violation] = []
    rich: status_pb2.Status | None = None
    try:
        rich = rpc_status.from_call(error)
    except ValueError:
        rich = None  # details that contradict the code are ignored, not trusted
    if rich is not None:
        for detail in rich.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(Violation(v.field, v.description) for v in bad.field_violations)
    # Never leak a stack trace or driver text from an unexpected failure.
    message = "the service failed to answer" if status == 500 else error.details() or code.name
    return Problem(status, message, reason or code.name, violations)


_FAILED_FIELD = re.compile(r"Failed to parse (\S+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')


def from_parse_error(error: json_format.ParseError, prefix: str = "") -> Problem:
    """A 400 naming the field json_format could not take (nested path, dotted)."""
    text = str(error)
    path = _FAILED_FIELD.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        path.append(unknown.group(1))
    field_path = ".".join(p for p in [prefix, *path] if p) or "body"
    # The "Available Fields" tail is noise for an API client.
    description = text.split("\n", 1)[0].strip()
    return Problem(
        400,
        f"invalid field {field_path}: {description}",
        "INVALID_REQUEST_FIELD",
        [Violation(field_path, description)],
    )


def invalid(field_path: str, description: str, reason: str = "INVALID_REQUEST_FIELD") -> Problem:
    return Problem(
        400,
        f"invalid field {field_path}: {description}",
        reason,
        [Violation(field_path, description)],
    )


def not_found(detail: str = "no such resource") -> Problem:
    return Problem(404, detail, "NOT_FOUND")


def with_headers(problem: Problem, headers: Mapping[str, str]) -> Problem:
    problem.headers.update(headers)
    return problem
