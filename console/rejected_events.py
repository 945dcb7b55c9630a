"""The rejection feed in the console: events that did not count, and why.

Staff read one org's feed at ``/admin/usage/rejected?org=…``, a customer its
own at ``/portal/rejected-events`` (the gateway takes the org from the
token). Both pages are one ``ListRejectedEvents`` call with the same filters
(reason, metric, time range on when the event was rejected) and the
gateway's page token; the table is shared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.admin_usage import time_params
from console.gateway import ADMIN, PORTAL, Problem, segment
from console.pages import FORM_STATUSES, portal_principal, staff_principal
from console.session import Principal

if TYPE_CHECKING:
    from console.app import Console

PAGE_SIZE = "50"
# UsageRejectionReason without its prefix (stable API, docs/services/usage.md).
REASONS = (
    "UNKNOWN_METRIC",
    "NO_ACTIVE_SUBSCRIPTION",
    "UNKNOWN_SUBSCRIPTION",
    "INVALID_VALUE",
    "NEGATIVE_VALUE",
    "MISSING_PROPERTY",
    "FUTURE_TIMESTAMP",
    "PERIOD_CLOSED",
    "INVALID_IDEMPOTENCY_KEY",
    "INVALID_EVENT_TIME",
)
REASON_PREFIX = "USAGE_REJECTION_REASON_"
FILTERS = ("reason", "metric_code", "start_time", "end_time")


def feed_params(values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """ListRejectedEvents' query parameters of the typed filters, and the bad inputs."""
    params, errors = time_params(values)
    reason = values.get("reason", "").strip()
    if reason:
        if reason in REASONS:
            params["reason"] = REASON_PREFIX + reason
        else:
            errors["reason"] = "is not a rejection reason"
    if metric := values.get("metric_code", "").strip():
        params["metricCode"] = metric
    params["pageSize"] = PAGE_SIZE
    return params, errors


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def feed(
        request: Request, principal: Principal, path: str, template: str, org: str
    ) -> Response:
        query = request.query_params
        values = {name: query.get(name, "") for name in FILTERS}
        context: dict[str, Any] = {
            "org": org,
            "values": values,
            "reasons": REASONS,
            "errors": {},
            "rejected": [],
            "next_page_token": "",
            "first_page": "page_token" not in query,
            "filter_query": urlencode(
                {**({"org": org} if org else {}), **{k: v for k, v in values.items() if v}}
            ),
        }
        if not path:
            return console.render(request, template, context)
        params, errors = feed_params(values)
        if token := query.get("page_token"):
            params["pageToken"] = token
        status_code = 200
        if errors:
            status_code = 400
        else:
            try:
                listed = await gateway.get(
                    path, principal.token, console.request_id(request), params
                )
                context["rejected"] = listed.get("rejectedEvents") or []
                context["next_page_token"] = listed.get("nextPageToken", "")
            except Problem as problem:
                if problem.status not in FORM_STATUSES:
                    raise
                errors = problem.violations or {"": problem.detail or problem.title}
                status_code = problem.status
        context["errors"] = errors
        return console.render(request, template, context, status_code=status_code)

    async def admin_page(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        org = request.query_params.get("org", "").strip()
        path = f"{ADMIN}/orgs/{segment(org)}/rejectedEvents" if org else ""
        return await feed(request, principal, path, "admin/rejected.html", org)

    async def portal_page(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await feed(
            request, principal, f"{PORTAL}/rejectedEvents", "portal/rejected_events.html", ""
        )

    return [
        Route("/admin/usage/rejected", admin_page, methods=["GET"]),
        Route("/portal/rejected-events", portal_page, methods=["GET"]),
    ]
