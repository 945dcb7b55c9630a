"""The admin usage explorer: one org's raw events, its aggregates per period, a backfill dry run.

Events come from ``ListEvents`` (filters: metric, time range, idempotency key;
paged by the gateway's token), aggregates from ``ListAggregates`` for each of
the org's subscription's newest billing periods, and the backfill form always
sends ``dryRun: true``: it shows what a recomputation would change and
changes nothing, so only staff who may act (``billing_admin``) get the form.
The filter inputs are named by ListEvents' field paths, so a violation the
gateway names lands next to its input.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.gateway import ADMIN, Problem, new_request_id, segment, valid_request_id
from console.pages import FORM_STATUSES, Parts, staff_principal
from console.portal import console_banner
from console.session import CSRF_FIELD, Principal, csrf_ok

if TYPE_CHECKING:
    from console.app import Console

EVENTS_PAGE_SIZE = "50"
PERIODS_SHOWN = "6"
# Filters of ListEvents as query parameters: (form input = proto field path, gateway's JSON name).
EVENT_FILTERS = (("metric_code", "metricCode"), ("idempotency_key", "idempotencyKey"))
TIME_FILTERS = (("start_time", "startTime"), ("end_time", "endTime"))
TIME_HINT = "a UTC time such as 2026-12-01T00:00 (or a date, 2026-12-01)"
# The explorer's aggregates follow the org's live subscription, as the portal does.
LIVE_STATES = (
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_TRIALING",
    "SUBSCRIPTION_STATE_PAST_DUE",
    "SUBSCRIPTION_STATE_PAUSED",
)


def parse_time(text: str) -> str | None:
    """A typed instant as RFC 3339 UTC; None when it is not one.

    Accepts what a ``datetime-local`` input sends (``2026-12-01T10:30``), a
    full RFC 3339 instant (with ``Z`` or an offset) or a bare date (its
    midnight). A time without an offset is UTC: the console's times all are.
    """
    text = text.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if len(text) == 10:  # a date alone
        when = datetime.combine(when.date(), time(), UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # isoformat, not strftime: %Y does not pad years before 1000 to four digits.
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def time_params(
    values: dict[str, str], names: tuple[tuple[str, str], ...] = TIME_FILTERS
) -> tuple[dict[str, str], dict[str, str]]:
    """The gateway's time parameters of the typed values, and the inputs that are not times."""
    params: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field, json_name in names:
        typed = values.get(field, "").strip()
        if not typed:
            continue
        parsed = parse_time(typed)
        if parsed is None:
            errors[field] = TIME_HINT
        else:
            params[json_name] = parsed
    return params, errors


def live_subscription(subscriptions: list[dict[str, Any]]) -> dict[str, Any] | None:
    for subscription in subscriptions:
        if subscription.get("state") in LIVE_STATES:
            return subscription
    return subscriptions[0] if subscriptions else None


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def aggregates_by_period(
        request: Request, principal: Principal, subscription_id: str
    ) -> list[dict[str, Any]]:
        """The newest periods (current first), each with its aggregates."""
        rid = console.request_id(request)
        base = f"{ADMIN}/subscriptions/{segment(subscription_id)}"
        listed = await gateway.get(
            f"{base}/periods", principal.token, rid, {"pageSize": PERIODS_SHOWN}
        )
        periods: list[dict[str, Any]] = listed.get("periods") or []
        answers = await asyncio.gather(
            *(
                gateway.get(
                    f"{base}/aggregates",
                    principal.token,
                    rid,
                    {"periodStartTime": str(p.get("periodStartTime", "")), "pageSize": "1000"},
                )
                for p in periods
            )
        )
        return [
            {"period": p, "aggregates": a.get("aggregates") or []}
            for p, a in zip(periods, answers, strict=True)
        ]

    async def explorer(
        request: Request,
        principal: Principal,
        org: str,
        backfill: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Response:
        query = request.query_params
        values = {name: query.get(name, "") for name, _ in (*EVENT_FILTERS, *TIME_FILTERS)}
        context: dict[str, Any] = {
            "org": org,
            "values": values,
            "errors": {},
            "events": [],
            "next_page_token": "",
            "first_page": "page_token" not in query,
            # The pager's links keep the filters.
            "filter_query": urlencode({"org": org, **{k: v for k, v in values.items() if v}}),
            "periods": [],
            "subscription": None,
            "backfill": backfill
            or {"values": {}, "errors": {}, "request_id": new_request_id(), "problem": None},
        }
        if not org:
            return console.render(request, "admin/usage.html", context, status_code=status_code)
        params, errors = time_params(values)
        params |= {j: values[f].strip() for f, j in EVENT_FILTERS if values[f].strip()}
        params["pageSize"] = EVENTS_PAGE_SIZE
        if token := query.get("page_token"):
            params["pageToken"] = token
        parts = Parts()
        rid = console.request_id(request)
        if errors:
            status_code = 400
        else:
            try:
                listed = await gateway.get(
                    f"{ADMIN}/orgs/{segment(org)}/usage/events", principal.token, rid, params
                )
                context["events"] = listed.get("events") or []
                context["next_page_token"] = listed.get("nextPageToken", "")
            except Problem as problem:
                if problem.status not in FORM_STATUSES:
                    raise
                errors = problem.violations or {"": problem.detail or problem.title}
                status_code = problem.status
        context["errors"] = errors
        subscriptions = await parts.get(
            "subscriptions",
            gateway.get(
                f"{ADMIN}/orgs/{segment(org)}/subscriptions",
                principal.token,
                rid,
                {"pageSize": "20"},
            ),
        )
        subscription = live_subscription((subscriptions or {}).get("subscriptions") or [])
        if subscription is not None:
            context["subscription"] = subscription
            context["periods"] = (
                await parts.get(
                    "aggregates",
                    aggregates_by_period(request, principal, str(subscription["subscriptionId"])),
                )
                or []
            )
        context["banner"] = console_banner(parts)
        return console.render(request, "admin/usage.html", context, status_code=status_code)

    async def page(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await explorer(request, principal, request.query_params.get("org", "").strip())

    async def backfill(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        form: FormData = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        org = str(form.get("org_id", "")).strip()
        values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        request_id = valid_request_id(values.get("request_id"))
        state: dict[str, Any] = {
            "values": values,
            "errors": {},
            "request_id": request_id,
            "problem": None,
        }
        params, errors = time_params(values, (("start_time", "startTime"), ("end_time", "endTime")))
        for field in ("start_time", "end_time"):
            if not values.get(field, "").strip():
                errors[field] = "is required"
        if not org:
            errors["org_id"] = "is required"
        if errors:
            state["errors"] = errors
            return await explorer(request, principal, org, state, status_code=400)
        body = {
            "orgId": org,
            "subscriptionId": values.get("subscription_id", "").strip(),
            **params,
            # The console's backfill only ever asks; applying one is `tally usage backfill`'s.
            "dryRun": True,
            "requestId": request_id,
        }
        try:
            state["answer"] = await gateway.post(
                f"{ADMIN}/usage:backfill", principal.token, request_id, body
            )
            # A new question gets a new id; the answer above keeps the one it was asked with.
            state["request_id"] = new_request_id()
        except Problem as problem:
            if problem.status != 403 and problem.status not in FORM_STATUSES:
                raise
            state["problem"] = problem
            state["errors"] = problem.violations
            return await explorer(request, principal, org, state, status_code=problem.status)
        return await explorer(request, principal, org, state)

    return [
        Route("/admin/usage", page, methods=["GET"]),
        Route("/admin/usage/backfill", backfill, methods=["POST"]),
    ]
