"""The customer portal's billing pages: overview, invoices, invoice detail, pay now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.chart import Chart, usage_chart
from console.gateway import PORTAL, Problem, new_request_id, segment, valid_request_id
from console.pages import (
    FORM_STATUSES,
    Parts,
    amount_minor,
    invoice_document,
    portal_principal,
)
from console.session import CSRF_FIELD, Principal, csrf_ok

if TYPE_CHECKING:
    from console.app import Console

PAGE_SIZE = "10"


def _decimal(text: object) -> Decimal | None:
    try:
        return Decimal(str(text)) if text not in (None, "") else None
    except InvalidOperation:
        return None


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limits(version: dict[str, Any] | None) -> dict[str, Decimal]:
    """metric code -> its feature limit in the subscribed version (unlimited ones left out)."""
    limits: dict[str, Decimal] = {}
    for limit in ((version or {}).get("packageVersion") or {}).get("featureLimits", []):
        value = _decimal(limit.get("limit"))
        if limit.get("metricCode") and not limit.get("unlimited") and value is not None:
            limits[limit["metricCode"]] = value
    return limits


async def _charts(
    console: Console,
    principal: Principal,
    rid: str,
    subscription: dict[str, Any],
    aggregates: list[dict[str, Any]],
    parts: Parts,
) -> list[Chart]:
    """One chart per metric of the current period: daily buckets from usage:query."""
    gateway = console.gateway
    start = subscription.get("currentPeriodStartTime")
    end = subscription.get("currentPeriodEndTime")
    if not start or not end or not aggregates:
        return []
    until = min(datetime.fromisoformat(end.replace("Z", "+00:00")), datetime.now(UTC))
    version_id = subscription.get("packageVersionId", "")

    async def series(aggregate: dict[str, Any]) -> dict[str, Any] | None:
        return await parts.get(
            f"usage of {aggregate['metricCode']}",
            gateway.get(
                f"{PORTAL}/usage:query",
                principal.token,
                rid,
                {
                    "metricCode": aggregate["metricCode"],
                    "subscriptionId": subscription["subscriptionId"],
                    "startTime": start,
                    "endTime": _rfc3339(until),
                    "bucket": "TIME_BUCKET_DAY",
                },
            ),
        )

    version, *answers = await asyncio.gather(
        parts.get(
            "plan limits",
            gateway.get(f"{PORTAL}/packageVersions/{segment(version_id)}", principal.token, rid),
        ),
        *(series(a) for a in aggregates),
    )
    limits = _limits(version)
    charts = []
    for aggregate, answer in zip(aggregates, answers, strict=True):
        if answer is None:
            continue
        buckets = [
            (
                datetime.fromisoformat(b["startTime"].replace("Z", "+00:00")),
                _decimal(b.get("value")) or Decimal(0),
            )
            for b in answer.get("buckets", [])
        ]
        code = aggregate["metricCode"]
        aggregation = str(answer.get("aggregation") or aggregate.get("aggregation", ""))
        charts.append(usage_chart(code, buckets, aggregation, limits.get(code)))
    return charts


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def overview(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        rid = console.request_id(request)
        parts = Parts()
        composed, balance, profile, recent = await asyncio.gather(
            gateway.get(f"{PORTAL}/overview", principal.token, rid),
            parts.get(
                "credit balance", gateway.get(f"{PORTAL}/creditBalance", principal.token, rid)
            ),
            parts.get(
                "billing profile", gateway.get(f"{PORTAL}/billingProfile", principal.token, rid)
            ),
            parts.get(
                "payment status",
                gateway.get(
                    f"{PORTAL}/invoices",
                    principal.token,
                    rid,
                    {"pageSize": "5", "omitLines": "true"},
                ),
            ),
        )
        parts.missing += [str(p.get("part")) for p in composed.get("unavailable") or []]
        subscription = composed.get("subscription")
        charts = (
            await _charts(console, principal, rid, subscription, composed.get("usage") or [], parts)
            if subscription
            else []
        )
        latest = next(
            (
                i
                for i in (recent or {}).get("invoices", [])
                if i.get("state") != "INVOICE_STATE_DRAFT"
            ),
            None,
        )
        return console.render(
            request,
            "portal/overview.html",
            {
                "subscription": subscription,
                "upcoming": composed.get("upcomingInvoice"),
                "balance": (balance or {}).get("creditBalance"),
                "profile": (profile or {}).get("billingProfile"),
                "latest": latest,
                "charts": charts,
                "banner": console_banner(parts),
            },
        )

    async def invoices(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        params = {"pageSize": PAGE_SIZE, "omitLines": "true"}
        if token := request.query_params.get("page_token"):
            params["pageToken"] = token
        listed = await gateway.get(
            f"{PORTAL}/invoices", principal.token, console.request_id(request), params
        )
        return console.render(
            request,
            "portal/invoices.html",
            {
                "invoices": listed.get("invoices", []),
                "next_page_token": listed.get("nextPageToken", ""),
                "first_page": "page_token" not in request.query_params,
            },
        )

    async def invoice_page(
        request: Request,
        principal: Principal,
        error: Problem | None = None,
        request_id: str | None = None,
    ) -> Response:
        invoice_id = request.path_params["invoice_id"]
        answer = await gateway.get(
            f"{PORTAL}/invoices/{segment(invoice_id)}",
            principal.token,
            console.request_id(request),
        )
        invoice = answer.get("invoice") or {}
        payable = invoice.get("state") == "INVOICE_STATE_FINALIZED" and (
            amount_minor(invoice.get("amountDue")) > 0
        )
        return console.render(
            request,
            "portal/invoice.html",
            {
                "invoice": invoice,
                "payable": payable,
                "paid": request.query_params.get("paid"),
                "error": error,
                # A new id for each form shown; a second click sends the same one.
                "pay_request_id": request_id or new_request_id(),
            },
            status_code=error.status if error else 200,
        )

    async def invoice(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await invoice_page(request, principal)

    async def pay(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        request_id = valid_request_id(str(form.get("request_id", "")))
        invoice_id = request.path_params["invoice_id"]
        try:
            answer = await gateway.post(
                f"{PORTAL}/invoices/{segment(invoice_id)}:pay",
                principal.token,
                request_id,
                {"requestId": request_id},
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES:
                raise
            return await invoice_page(request, principal, problem, request_id)
        status = str((answer.get("attempt") or {}).get("state", "")).removeprefix("ATTEMPT_STATE_")
        return RedirectResponse(
            f"/portal/invoices/{segment(invoice_id)}?paid={status.lower() or 'sent'}",
            status_code=303,
        )

    async def document_html(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await invoice_document(console, request, principal, PORTAL, "html")

    async def document_pdf(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await invoice_document(console, request, principal, PORTAL, "pdf")

    return [
        Route("/portal", overview),
        Route("/portal/invoices", invoices),
        Route("/portal/invoices/{invoice_id}", invoice),
        Route("/portal/invoices/{invoice_id}/pay", pay, methods=["POST"]),
        Route("/portal/invoices/{invoice_id}/invoice.html", document_html),
        Route("/portal/invoices/{invoice_id}/invoice.pdf", document_pdf),
    ]


def console_banner(parts: Parts) -> str | None:
    if not parts.missing:
        return None
    missing = ", ".join(parts.missing)
    return f"Some billing data is unavailable right now ({missing}); try again in a minute."
