"""The console's one way in: the gateway's HTTP API, with the signed-in user's token.

One ``httpx.AsyncClient`` for the process life (connection reuse, timeouts on
every call). Every call carries ``Authorization: Bearer <token>`` and an
``X-Request-Id``; answers become JSON, a :class:`Problem` (the gateway's
problem+json, with its field violations) or :class:`Unavailable` (the gateway
or the service behind it is down), so pages never show a stack trace.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

PORTAL = "/portal/billing/v1"
ADMIN = "/super-admin/billing/v1"
# What the gateway accepts as X-Request-Id (gateway/app.py); anything else it replaces.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Query parameters: a mapping, or pairs when a key repeats (the audit route's service=).
Params = Mapping[str, str] | tuple[tuple[str, str], ...]
# The gateway answers these when a service is away (503), too slow (504) or
# when something between us is (502): the banner, not an error next to a field.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str:
    return value if value and _REQUEST_ID.match(value) else new_request_id()


def segment(value: str) -> str:
    """One path segment: an id from a URL never reaches another gateway route."""
    return quote(value, safe="")


class Unavailable(Exception):
    """The gateway, or the service behind it, cannot answer now.

    ``detail`` and ``reason`` are the gateway's problem+json when it sent one
    (a 503 ``AUDIT_UNAVAILABLE`` names the service that is away); empty when
    the gateway itself could not be reached.
    """

    def __init__(self, message: str, detail: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.detail = detail
        self.reason = reason


@dataclass
class Problem(Exception):
    """A problem+json answer (or any other 4xx/5xx) from the gateway."""

    status: int
    title: str = ""
    detail: str = ""
    reason: str = ""
    violations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_response(cls, response: httpx.Response) -> Problem:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        violations: dict[str, str] = {}
        for violation in body.get("violations") or []:
            if isinstance(violation, dict) and violation.get("field"):
                name = str(violation["field"])
                text = str(violation.get("description", ""))
                violations[name] = f"{violations[name]}; {text}" if name in violations else text
        return cls(
            status=response.status_code,
            title=str(body.get("title", response.reason_phrase)),
            detail=str(body.get("detail", "")),
            reason=str(body.get("reason", "")),
            violations=violations,
        )


@dataclass(frozen=True)
class Document:
    """A raw answer (an invoice's HTML or PDF) with the headers worth passing on."""

    content: bytes
    media_type: str
    disposition: str | None


class Gateway:
    def __init__(
        self,
        base_url: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        request_id: str,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "X-Request-Id": request_id}
        try:
            response = await self.http.request(
                method, path, params=params, json=body, headers=headers
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out: all mean "not now"
            raise Unavailable(str(exc) or type(exc).__name__) from exc
        if response.status_code in UNAVAILABLE_STATUSES:
            said = Problem.from_response(response)
            raise Unavailable(f"{method} {path}: {response.status_code}", said.detail, said.reason)
        if response.status_code >= 400:
            raise Problem.from_response(response)
        return response

    async def get(
        self, path: str, token: str, request_id: str, params: Params | None = None
    ) -> dict[str, Any]:
        answer: dict[str, Any] = (await self._send("GET", path, token, request_id, params)).json()
        return answer

    async def post(
        self, path: str, token: str, request_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        answer: dict[str, Any] = (
            await self._send("POST", path, token, request_id, body=body)
        ).json()
        return answer

    async def patch(
        self, path: str, token: str, request_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        answer: dict[str, Any] = (
            await self._send("PATCH", path, token, request_id, body=body)
        ).json()
        return answer

    async def document(self, path: str, token: str, request_id: str) -> Document:
        response = await self._send("GET", path, token, request_id)
        return Document(
            content=response.content,
            media_type=response.headers.get("content-type", "application/octet-stream"),
            disposition=response.headers.get("content-disposition"),
        )
