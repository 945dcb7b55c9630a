"""The portal's billing overview: one answer composed from three portal RPCs.

Not a route of its own RPC: it calls the same transcoded portal routes the
client could call (current subscription, upcoming invoice, usage this period),
through the same channels, with the token's org. A part whose service fails
is left out and named in ``unavailable``, so the page still renders while,
say, invoicing is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.problems import Problem

# Calls one portal route (method, path) for the caller's org and answers its JSON.
PortalCall = Callable[[str, str], Awaitable[dict[str, Any]]]

PORTAL = "/portal/billing/v1"
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


async def compose(org_id: str, call: PortalCall) -> dict[str, Any]:
    unavailable: list[dict[str, Any]] = []
    listed = await _part("subscription", call("GET", f"{PORTAL}/subscriptions"), unavailable)
    subscriptions = (listed or {}).get("subscriptions", [])
    current = next(
        (s for s in subscriptions if s.get("state") in _CURRENT_STATES),
        None,
    )
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
