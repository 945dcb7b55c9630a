"""Composed answers: the portal's billing overview and the admin support view.

Not routes of their own RPCs: they call the same transcoded routes a client
could call, through the same channels and deadlines. The portal overview
(current subscription, upcoming invoice, usage this period) uses the token's
org; the support view (``/super-admin/billing/v1/orgs/{org_id}/context``) the
org in its path. A part whose service fails is left out (``null``) and named
in ``unavailable``, so the page still renders while, say, invoicing or
payments is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from gateway.problems import Problem

# Calls one transcoded route (method, "path?query") for the caller and answers its JSON.
PortalCall = Callable[[str, str], Awaitable[dict[str, Any]]]
RouteCall = PortalCall

PORTAL = "/portal/billing/v1"
ADMIN = "/super-admin/billing/v1"
_CURRENT_STATES = (
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_TRIALING",
    "SUBSCRIPTION_STATE_PAST_DUE",
    "SUBSCRIPTION_STATE_PAUSED",
)


async def _part(
    name: str, call: Awaitable[dict[str, Any]], unavailable: list[dict[str, Any]]
) -> dict[str, Any] | None:
    try:
        return await call
    except Problem as problem:
        if problem.status in (401, 403, 429):
            raise  # policy answers are the whole answer, not a missing part
        unavailable.append({"part": name, "status": problem.status, "reason": problem.reason})
        return None


def _current(subscriptions: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in subscriptions if s.get("state") in _CURRENT_STATES), None)


async def compose(org_id: str, call: PortalCall) -> dict[str, Any]:
    unavailable: list[dict[str, Any]] = []
    listed = await _part("subscription", call("GET", f"{PORTAL}/subscriptions"), unavailable)
    current = _current((listed or {}).get("subscriptions", []))
    invoice: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    if current is not None:
        sid = current["subscriptionId"]
        invoice, usage = await asyncio.gather(
            _part(
                "upcomingInvoice",
                call("GET", f"{PORTAL}/invoices:preview?subscriptionId={sid}"),
                unavailable,
            ),
            _part("usage", call("GET", f"{PORTAL}/subscriptions/{sid}/aggregates"), unavailable),
        )
    return {
        "orgId": org_id,
        "subscription": current,
        "upcomingInvoice": (invoice or {}).get("invoice"),
        "usage": (usage or {}).get("aggregates", []) if usage is not None else None,
        "unavailable": unavailable,
    }


async def compose_support_context(org_id: str, call: RouteCall) -> dict[str, Any]:
    """One org's whole billing context for support staff, from the admin routes.

    Subscriptions (all states), the current one's usage aggregates this period,
    invoices and credit balance (invoicing), payment methods (payments). The
    org id is in each path; the admin routes filter by it.
    """
    unavailable: list[dict[str, Any]] = []
    # Quoted: the org id is the caller's text; "?" or "/" must stay inside the segment.
    org = f"{ADMIN}/orgs/{quote(org_id, safe='')}"
    listed, invoices, credit, methods = await asyncio.gather(
        _part("subscriptions", call("GET", f"{org}/subscriptions"), unavailable),
        _part("invoices", call("GET", f"{org}/invoices"), unavailable),
        _part("creditBalance", call("GET", f"{org}/creditBalance"), unavailable),
        _part("paymentMethods", call("GET", f"{org}/paymentMethods"), unavailable),
    )
    subscriptions = (listed or {}).get("subscriptions", []) if listed is not None else None
    current = _current(subscriptions or [])
    usage: dict[str, Any] | None = None
    if current is not None:
        sid = quote(current["subscriptionId"], safe="")
        usage = await _part(
            "usage", call("GET", f"{ADMIN}/subscriptions/{sid}/aggregates"), unavailable
        )
    return {
        "orgId": org_id,
        "subscriptions": subscriptions,
        "currentSubscription": current,
        "usage": (usage or {}).get("aggregates", []) if usage is not None else None,
        "invoices": (invoices or {}).get("invoices", []) if invoices is not None else None,
        "creditBalance": credit,
        "paymentMethods": (methods or {}).get("paymentMethods", [])
        if methods is not None
        else None,
        # Sorted, so the answer does not depend on which call failed first.
        "unavailable": sorted(unavailable, key=lambda p: str(p["part"])),
    }
