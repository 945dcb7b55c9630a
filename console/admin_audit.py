"""The audit log page: the five services' trails merged by the gateway, filtered and paged.

A GET form whose inputs are named by the gateway's query parameters, so a
400's violations land next to the field they name. Times are typed in RFC
3339 (UTC when no offset is given) and sent as UTC. A 503 AUDIT_UNAVAILABLE is
the banner with the gateway's words, which name the service that is away.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.gateway import ADMIN, Problem, Unavailable
from console.pages import FORM_STATUSES, staff_principal
from console.timeline import parse_time
from services.kit.settings import SERVICE_NAMES

if TYPE_CHECKING:
    from console.app import Console

FILTERS = ("org_id", "actor", "action", "target", "start_time", "end_time")
TIMES = ("start_time", "end_time")
DEFAULT_PAGE_SIZE = "50"
AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"


def rfc3339(text: str) -> str | None:
    """A typed time as the gateway's RFC 3339 in UTC; None when it is not a time."""
    when = parse_time(text.strip())
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def query(values: dict[str, str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The gateway's query parameters from the form, and the values it could not read."""
    params: list[tuple[str, str]] = []
    errors: dict[str, str] = {}
    for name in FILTERS:
        value = values.get(name, "").strip()
        if not value:
            continue
        if name in TIMES:
            converted = rfc3339(value)
            if converted is None:
                errors[name] = "a time such as 2026-12-01T09:30:00Z (UTC when no offset is given)"
                continue
            value = converted
        params.append((name, value))
    if values.get("service") in SERVICE_NAMES:
        params.append(("service", values["service"]))
    size = values.get("page_size", "").strip() or DEFAULT_PAGE_SIZE
    if not size.isdigit():
        errors["page_size"] = "a whole number of entries"
    else:
        params.append(("page_size", size))
    if token := values.get("page_token", "").strip():
        params.append(("page_token", token))
    return params, errors


def routes(console: Console) -> list[BaseRoute]:
    async def audit(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        values = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        params, errors = query(values)
        entries: list[dict[str, object]] = []
        next_token = ""
        banner: str | None = None
        status = 200
        if not errors:
            try:
                answer = await console.gateway.get(
                    f"{ADMIN}/audit", principal.token, console.request_id(request), tuple(params)
                )
                entries = answer.get("entries") or []
                next_token = str(answer.get("nextPageToken", ""))
            except Unavailable as away:
                if away.reason != AUDIT_UNAVAILABLE:
                    raise  # the gateway itself is away: the unavailable page
                banner, status = away.detail or "The audit trail cannot be read now.", 503
            except Problem as problem:
                if problem.status not in FORM_STATUSES:
                    raise
                errors = problem.violations or {"page_token": problem.detail}
        if errors:
            status = 400
        # The next page keeps the filters: a page token is bound to them.
        kept = [(k, v) for k, v in values.items() if k != "page_token" and v]
        return console.render(
            request,
            "admin_audit/audit.html",
            {
                "values": values,
                "errors": errors,
                "entries": entries,
                "next_page_token": next_token,
                "kept": kept,
                "first_page": not values.get("page_token"),
                "services": SERVICE_NAMES,
                "banner": banner,
            },
            status_code=status,
        )

    return [Route("/admin/audit", audit)]
