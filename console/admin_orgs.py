"""Staff reads of one org: the subscription inspector and the org's support context.

Read only, for billing_admin and billing_support alike: nothing here changes
anything. The first call of a page (the subscription, the org's context) is
the page; every other read is a part (``Parts``) whose failure leaves the
page up with the banner naming what is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.gateway import ADMIN, segment
from console.pages import Parts, staff_principal
from console.session import Principal
from console.timeline import timeline

if TYPE_CHECKING:
    from console.app import Console

# Enough for a subscription's whole history in the demo and for years of a
# monthly plan; the tables say when there is more.
HISTORY_PAGE = "100"
RECENT_AUDIT = "10"
CURRENT_STATES = (
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_TRIALING",
    "SUBSCRIPTION_STATE_PAST_DUE",
    "SUBSCRIPTION_STATE_PAUSED",
)


def pick(subscriptions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The org's current subscription, else its newest (the list is newest first)."""
    current = [s for s in subscriptions if s.get("state") in CURRENT_STATES]
    every = current or subscriptions
    return every[0] if every else None


def missing_banner(missing: list[str]) -> str | None:
    if not missing:
        return None
    return f"Some of this page is missing right now ({', '.join(missing)}); try again in a minute."


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    def get(
        request: Request, principal: Principal, path: str, params: dict[str, str] | None = None
    ) -> Awaitable[dict[str, Any]]:
        return gateway.get(path, principal.token, console.request_id(request), params)

    async def entitlements(
        request: Request,
        principal: Principal,
        parts: Parts,
        subscription: dict[str, Any],
        version: dict[str, Any] | None,
        aggregates: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Each feature limit of the pinned version with this period's usage and, for
        admins, the gateway's own CheckEntitlement answer (a POST, which support may not send).
        """
        limits = ((version or {}).get("packageVersion") or {}).get("featureLimits") or []
        used = {
            str(a.get("metricCode", "")): str(a.get("value", ""))
            for a in (aggregates or {}).get("aggregates") or []
        }
        org, sid = str(subscription.get("orgId", "")), str(subscription.get("subscriptionId", ""))

        async def check(limit: dict[str, Any]) -> dict[str, Any] | None:
            if not principal.admin:
                return None
            answer = await parts.get(
                f"entitlement {limit.get('featureKey', '')}",
                gateway.post(
                    f"{ADMIN}/orgs/{segment(org)}/entitlements:check",
                    principal.token,
                    console.request_id(request),
                    {"featureKey": limit.get("featureKey", "")},
                ),
            )
            # The check answers from the org's current subscription, which may be another.
            return answer if answer and answer.get("subscriptionId") == sid else None

        checks = await asyncio.gather(*(check(limit) for limit in limits))
        return [
            {"limit": limit, "used": used.get(str(limit.get("metricCode", ""))), "check": answer}
            for limit, answer in zip(limits, checks, strict=True)
        ]

    async def inspect(
        request: Request, principal: Principal, subscription: dict[str, Any], others: list[Any]
    ) -> Response:
        parts = Parts()
        sid = segment(str(subscription.get("subscriptionId", "")))
        org = segment(str(subscription.get("orgId", "")))
        page = {"pageSize": HISTORY_PAGE}
        schedules, periods, invoices, payments, version, aggregates = await asyncio.gather(
            parts.get(
                "schedules", get(request, principal, f"{ADMIN}/subscriptions/{sid}/schedules", page)
            ),
            parts.get(
                "billing periods",
                get(request, principal, f"{ADMIN}/subscriptions/{sid}/periods", page),
            ),
            parts.get(
                "invoices",
                get(
                    request,
                    principal,
                    f"{ADMIN}/orgs/{org}/invoices",
                    {
                        **page,
                        "subscriptionId": str(subscription.get("subscriptionId", "")),
                        "omitLines": "true",
                    },
                ),
            ),
            parts.get("payments", get(request, principal, f"{ADMIN}/orgs/{org}/payments", page)),
            parts.get(
                "package version",
                get(
                    request,
                    principal,
                    f"{ADMIN}/packageVersions/{segment(str(subscription.get('packageVersionId')))}",
                ),
            ),
            parts.get("usage", get(request, principal, f"{ADMIN}/subscriptions/{sid}/aggregates")),
        )
        mine = [
            p
            for p in (payments or {}).get("payments") or []
            if p.get("subscriptionId") == subscription.get("subscriptionId")
        ]
        listed_schedules = (schedules or {}).get("schedules") or []
        listed_periods = (periods or {}).get("periods") or []
        listed_invoices = (invoices or {}).get("invoices") or []
        return console.render(
            request,
            "admin_orgs/subscription.html",
            {
                "subscription": subscription,
                "others": others,
                "schedules": listed_schedules,
                "periods": listed_periods,
                "invoices": listed_invoices,
                "payments": mine,
                "entitlements": await entitlements(
                    request, principal, parts, subscription, version, aggregates
                ),
                "events": timeline(
                    subscription, listed_schedules, listed_periods, listed_invoices, mine
                ),
                "banner": missing_banner(parts.missing),
            },
        )

    async def subscriptions(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        sid = request.query_params.get("id", "").strip()
        org = request.query_params.get("org", "").strip()
        if sid:
            found = await get(request, principal, f"{ADMIN}/subscriptions/{segment(sid)}")
            return await inspect(request, principal, found.get("subscription") or {}, [])
        if org:
            listed = await get(
                request, principal, f"{ADMIN}/orgs/{segment(org)}/subscriptions", {"pageSize": "50"}
            )
            every: list[dict[str, Any]] = listed.get("subscriptions") or []
            chosen = pick(every)
            if chosen is not None:
                others = [s for s in every if s is not chosen]
                return await inspect(request, principal, chosen, others)
        return console.render(
            request,
            "admin_orgs/find.html",
            {"org": org, "searched": bool(org)},
            status_code=404 if org else 200,
        )

    async def org_context(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        org_id = str(request.path_params["org_id"])
        org = segment(org_id)
        parts = Parts()
        context, payments, audit = await asyncio.gather(
            get(request, principal, f"{ADMIN}/orgs/{org}/context"),
            parts.get(
                "payments",
                get(request, principal, f"{ADMIN}/orgs/{org}/payments", {"pageSize": HISTORY_PAGE}),
            ),
            parts.get(
                "audit entries",
                get(
                    request,
                    principal,
                    f"{ADMIN}/audit",
                    {"orgId": org_id, "pageSize": RECENT_AUDIT},
                ),
            ),
        )
        missing = [str(p.get("part", "")) for p in context.get("unavailable") or []] + parts.missing
        return console.render(
            request,
            "admin_orgs/org.html",
            {
                "org_id": org_id,
                "context": context,
                "payments": (payments or {}).get("payments") if payments is not None else None,
                "audit": (audit or {}).get("entries") if audit is not None else None,
                "banner": missing_banner(missing),
            },
        )

    return [
        Route("/admin/subscriptions", subscriptions),
        Route("/admin/orgs/{org_id}", org_context),
    ]
