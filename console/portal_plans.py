"""The customer portal's plan pages: the subscription, the packages, change, cancel, withdraw.

A plan change is two steps. The quote is a GET (invoicing's PreviewPlanChange
changes nothing); its page carries a confirm form with the version the quote
priced and a request id made when the quote was rendered, so only the POST
changes the plan, and a double click or a reloaded POST replays the first
call instead of changing twice. A pending schedule entry (a cancellation or a
plan change at period end) is withdrawn with CancelSchedule, the portal's
"resume": ResumeSubscription is for paused subscriptions and staff only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.gateway import PORTAL, Problem, new_request_id, segment, valid_request_id
from console.money import format_price
from console.pages import FORM_STATUSES, Parts, portal_principal
from console.portal import console_banner
from console.session import CSRF_FIELD, Principal, csrf_ok

if TYPE_CHECKING:
    from console.app import Console

PLAN_PAGE = "/portal/plan"
# The subscription the portal manages: the one the overview shows (gateway/overview.py).
CURRENT_STATES = (
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_TRIALING",
    "SUBSCRIPTION_STATE_PAST_DUE",
    "SUBSCRIPTION_STATE_PAUSED",
)
# The form's choice -> the API's enum; the form never sends the enum itself.
CHANGE_TIMINGS = {
    "now": "PLAN_CHANGE_TIMING_IMMEDIATE",
    "period_end": "PLAN_CHANGE_TIMING_PERIOD_END",
}
CANCEL_TIMINGS = {
    "period_end": "CANCEL_TIMING_PERIOD_END",
    "now": "CANCEL_TIMING_IMMEDIATE",
}
INTERVALS = {
    "BILLING_INTERVAL_WEEKLY": "week",
    "BILLING_INTERVAL_MONTHLY": "month",
    "BILLING_INTERVAL_YEARLY": "year",
}
# Refusals of a change whose gateway detail is written for developers.
REFUSALS = {
    "PLAN_UNCHANGED": "You are already on this plan.",
    "PLAN_INCOMPATIBLE": (
        "This plan is billed in another currency or interval than yours, so it cannot replace it."
    ),
    "PACKAGE_ARCHIVED": "This plan is no longer offered.",
    "SUBSCRIPTION_NOT_CHANGEABLE": "Your subscription cannot change plan in its current state.",
    "PACKAGE_NOT_FOUND": "This plan is not offered.",
    "PACKAGE_VERSION_NOT_FOUND": "This plan version is not offered.",
    "SCHEDULE_NOT_PENDING": "This change has already taken effect or was withdrawn.",
}
# 404s that name the chosen plan, not the page: shown next to the choice.
_CHOICE_NOT_FOUND = frozenset({"PACKAGE_NOT_FOUND", "PACKAGE_VERSION_NOT_FOUND"})
DONE = {
    "changed": "Your plan has changed.",
    "scheduled": "Your plan will change at the end of the current period.",
    "canceled": "Your subscription is canceled.",
    "cancel_scheduled": "Your subscription will end at the end of the current period.",
    "withdrawn": "Done: the pending change was withdrawn.",
}


def _quantity(text: object) -> str:
    """ "100000" -> "100,000", exact; anything else as it came."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return str(text)
    if not value.is_finite():
        return str(text)
    return f"{value.normalize():,f}" if value != value.to_integral_value() else f"{int(value):,}"


def _tiers(tiers: Sequence[Mapping[str, Any]], price: str, currency: str) -> str:
    """Tiers as "up to 1,000: free; 1,000 to 100,000: $0.002 each; over 100,000: ..."."""
    parts: list[str] = []
    lower = ""
    for tier in tiers:
        upper = tier.get("upTo")
        if not upper:
            span = f"over {_quantity(lower)}" if lower else "every unit"
        else:
            span = (
                f"{_quantity(lower)} to {_quantity(upper)}"
                if lower
                else f"up to {_quantity(upper)}"
            )
        amount = tier.get(price) or "0"
        text = "free" if Decimal(str(amount)) == 0 else f"{format_price(amount, currency)}"
        if price == "unitAmount" and text != "free":
            text += " each"
        if price == "rate":
            text = f"{_quantity(amount)}%"
        flat = tier.get("flatAmount")
        if flat and Decimal(str(flat)) != 0:
            text += f" + {format_price(flat, currency)} flat"
        parts.append(f"{span}: {text}")
        lower = upper or lower
    return "; ".join(parts)


def charge_summary(charge: Mapping[str, Any], currency: str) -> str:
    """One line per usage charge for the plan picker, prices exactly as the catalog has them."""
    name = charge.get("displayName") or charge.get("metricCode") or "usage"
    if standard := charge.get("standard"):
        model = f"{format_price(standard.get('unitAmount'), currency)} per unit"
    elif graduated := charge.get("graduated"):
        model = _tiers(graduated.get("tiers") or [], "unitAmount", currency)
    elif volume := charge.get("volume"):
        tiers = _tiers(volume.get("tiers") or [], "unitAmount", currency)
        model = f"every unit at the tier reached: {tiers}"
    elif package := charge.get("package"):
        model = (
            f"{format_price(package.get('packageAmount'), currency)} per"
            f" {_quantity(package.get('packageSize') or 1)} units"
        )
        if int(package.get("freeUnits") or 0):
            model += f", first {_quantity(package['freeUnits'])} free"
    elif percentage := charge.get("percentage"):
        model = f"{_quantity(percentage.get('rate') or 0)}%"
        if (fixed := percentage.get("fixedAmount")) and Decimal(str(fixed)) != 0:
            model += f" + {format_price(fixed, currency)}"
        model += " per transaction"
        if int(percentage.get("freeUnitsPerEvents") or 0):
            model += f", first {_quantity(percentage['freeUnitsPerEvents'])} free"
    elif graduated_percentage := charge.get("graduatedPercentage"):
        model = _tiers(graduated_percentage.get("tiers") or [], "rate", currency)
    else:
        model = "priced by usage"
    if minimum := charge.get("minimumAmount"):
        model += f" (minimum {format_price(minimum, currency)} a period)"
    return f"{name}: {model}"


def limit_summary(limit: Mapping[str, Any]) -> str:
    key = limit.get("featureKey") or "feature"
    if limit.get("unlimited"):
        return f"{key}: unlimited"
    text = f"{key}: {_quantity(limit.get('limit') or '0')}"
    if limit.get("resetsEachPeriod"):
        text += " a period"
    if limit.get("enforcement") == "LIMIT_ENFORCEMENT_SOFT":
        text += " (soft limit)"
    return text


@dataclass(frozen=True)
class PlanCard:
    """A published package as the plan picker shows it."""

    package_id: str
    code: str
    name: str
    description: str
    version_id: str
    version: int
    base_fee: str
    fee_timing: str
    interval: str
    trial_days: int
    charges: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)


def plan_card(package: Mapping[str, Any]) -> PlanCard | None:
    """None for a package without a published version (nothing to subscribe to)."""
    version = package.get("publishedVersion")
    if not version:
        return None
    currency = str(version.get("currencyCode") or "")
    interval = INTERVALS.get(str(version.get("billingInterval")), "period")
    timing = version.get("baseFeeTiming")
    return PlanCard(
        package_id=str(package.get("packageId", "")),
        code=str(package.get("code", "")),
        name=str(version.get("name") or package.get("code", "")),
        description=str(version.get("description") or ""),
        version_id=str(version.get("packageVersionId", "")),
        version=int(version.get("version") or 0),
        base_fee=f"{format_price(version.get('baseFeeAmount') or '0', currency)} a {interval}",
        fee_timing="in arrears" if timing == "BASE_FEE_TIMING_IN_ARREARS" else "in advance",
        interval=interval,
        trial_days=int(version.get("trialDays") or 0),
        charges=[charge_summary(c, currency) for c in version.get("charges") or []],
        limits=[limit_summary(limit) for limit in version.get("featureLimits") or []],
    )


def version_name(version: Mapping[str, Any]) -> str:
    return f"{version.get('name')} (v{version.get('version')})"


def current_subscription(listed: Mapping[str, Any]) -> dict[str, Any] | None:
    subscriptions: list[dict[str, Any]] = list(listed.get("subscriptions") or [])
    return next((s for s in subscriptions if s.get("state") in CURRENT_STATES), None)


def refusal(problem: Problem) -> str:
    """What to tell the customer about a refused quote or change."""
    text = REFUSALS.get(problem.reason)
    if text is None:
        return problem.detail or problem.title or "The billing API refused this."
    return text


@dataclass
class FormError:
    """A refusal shown next to what it is about: a package's choice, a schedule entry."""

    target: str
    message: str
    violations: dict[str, str] = field(default_factory=dict)
    request_id: str = ""

    @classmethod
    def of(cls, target: str, problem: Problem, request_id: str = "") -> FormError:
        return cls(target, refusal(problem), dict(problem.violations), request_id)


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def load(request: Request, principal: Principal) -> dict[str, Any] | None:
        listed = await gateway.get(
            f"{PORTAL}/subscriptions", principal.token, console.request_id(request)
        )
        return current_subscription(listed)

    async def plan_page(
        request: Request,
        principal: Principal,
        error: FormError | None = None,
        values: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        rid = console.request_id(request)
        parts = Parts()
        subscription, packages = await asyncio.gather(
            load(request, principal),
            parts.get(
                "plans",
                gateway.get(f"{PORTAL}/packages", principal.token, rid, {"pageSize": "100"}),
            ),
        )
        cards = [
            c for c in (plan_card(p) for p in (packages or {}).get("packages", [])) if c is not None
        ]
        names = {c.version_id: version_name({"name": c.name, "version": c.version}) for c in cards}
        pending = list((subscription or {}).get("pendingSchedules") or [])
        if error and error.target not in {c.package_id for c in cards} | {
            s["scheduleId"] for s in pending
        }:
            # Nothing on the page to show it next to (a crafted id): the top of the page.
            error = FormError("", error.message, error.violations, error.request_id)
        targets = {
            s["targetPackageVersionId"]
            for s in pending
            if s.get("targetPackageVersionId") and s["targetPackageVersionId"] not in names
        }
        if subscription and subscription.get("packageVersionId") not in names:
            targets.add(str(subscription.get("packageVersionId")))
        found = await asyncio.gather(
            *(
                parts.get(
                    "plan names",
                    gateway.get(f"{PORTAL}/packageVersions/{segment(t)}", principal.token, rid),
                )
                for t in sorted(targets)
            )
        )
        for answer in found:
            version = (answer or {}).get("packageVersion") or {}
            if version.get("packageVersionId"):
                names[version["packageVersionId"]] = version_name(version)
        return console.render(
            request,
            "portal_plans/plan.html",
            {
                "subscription": subscription,
                "plan_name": names.get(str((subscription or {}).get("packageVersionId")), ""),
                "cards": cards,
                "names": names,
                "pending": pending,
                # A form shown again after an error keeps its id; others get a new one.
                "withdraw_ids": {
                    s["scheduleId"]: (
                        error.request_id
                        if error and error.target == s["scheduleId"] and error.request_id
                        else new_request_id()
                    )
                    for s in pending
                },
                "error": error,
                "values": values or {},
                "done": DONE.get(request.query_params.get("done", "")),
                "banner": console_banner(parts),
            },
            status_code=status_code,
        )

    async def plan(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await plan_page(request, principal)

    def choice_problem(problem: Problem) -> bool:
        return problem.status in FORM_STATUSES or (
            problem.status == 404 and problem.reason in _CHOICE_NOT_FOUND
        )

    async def quote(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        package_id = request.query_params.get("package_id", "").strip()
        timing = request.query_params.get("timing", "")
        values = {"package_id": package_id, "timing": timing}
        violations = {}
        if not package_id:
            violations["package_id"] = "choose a plan"
        if timing not in CHANGE_TIMINGS:
            violations["timing"] = "choose now or at the end of the period"
        subscription = await load(request, principal)
        if subscription is None:
            error = FormError(package_id, "Your organisation has no subscription to change.")
            return await plan_page(request, principal, error, values, 409)
        if violations:
            error = FormError(package_id, "Choose a plan and when it starts.", violations)
            return await plan_page(request, principal, error, values, 400)
        sid = str(subscription["subscriptionId"])
        try:
            quoted = await gateway.get(
                f"{PORTAL}/subscriptions/{segment(sid)}:previewPlanChange",
                principal.token,
                console.request_id(request),
                {"packageId": package_id, "timing": CHANGE_TIMINGS[timing]},
            )
        except Problem as problem:
            if not choice_problem(problem):
                raise
            return await plan_page(
                request, principal, FormError.of(package_id, problem), values, problem.status
            )
        version_id = str(quoted.get("packageVersionId", ""))
        target = await gateway.get(
            f"{PORTAL}/packageVersions/{segment(version_id)}",
            principal.token,
            console.request_id(request),
        )
        return console.render(
            request,
            "portal_plans/quote.html",
            {
                "subscription": subscription,
                "quote": quoted,
                "target": target.get("packageVersion") or {},
                "package_id": package_id,
                "timing": timing,
                # Made now: every submit of this page's form is the same change.
                "request_id": new_request_id(),
            },
        )

    async def posted(request: Request) -> tuple[FormData, str] | Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        return form, valid_request_id(str(form.get("request_id", "")))

    async def change(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        sent = await posted(request)
        if isinstance(sent, Response):
            return sent
        form, request_id = sent
        package_id = str(form.get("package_id", ""))
        timing = str(form.get("timing", ""))
        values = {"package_id": package_id, "timing": timing}
        subscription_id = segment(str(form.get("subscription_id", "")))
        try:
            answer = await gateway.post(
                f"{PORTAL}/subscriptions/{subscription_id}:changePlan",
                principal.token,
                request_id,
                {
                    "packageVersionId": str(form.get("package_version_id", "")),
                    "timing": CHANGE_TIMINGS.get(timing, "PLAN_CHANGE_TIMING_UNSPECIFIED"),
                    "requestId": request_id,
                },
            )
        except Problem as problem:
            if not choice_problem(problem):
                raise
            return await plan_page(
                request,
                principal,
                FormError.of(package_id, problem, request_id),
                values,
                problem.status,
            )
        done = "scheduled" if answer.get("schedule") else "changed"
        return RedirectResponse(f"{PLAN_PAGE}?done={done}", status_code=303)

    def cancel_page(
        request: Request,
        subscription: dict[str, Any],
        values: Mapping[str, str] | None = None,
        problem: Problem | None = None,
        errors: dict[str, str] | None = None,
    ) -> Response:
        shown = dict(values or {})
        return console.render(
            request,
            "portal_plans/cancel.html",
            {
                "subscription": subscription,
                "values": shown,
                "problem": problem,
                "message": refusal(problem) if problem else "",
                "errors": errors or (problem.violations if problem else {}),
                "request_id": shown.get("request_id") or new_request_id(),
            },
            status_code=problem.status if problem else (400 if errors else 200),
        )

    async def cancel_form(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        subscription = await load(request, principal)
        if subscription is None:
            return await plan_page(request, principal)
        return cancel_page(request, subscription, {"timing": "period_end"})

    async def cancel(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        sent = await posted(request)
        if isinstance(sent, Response):
            return sent
        form, request_id = sent
        subscription = await load(request, principal)
        if subscription is None:
            return await plan_page(request, principal)
        values = {k: str(v) for k, v in form.items() if k != CSRF_FIELD}
        values["request_id"] = request_id
        timing = values.get("timing", "")
        if timing not in CANCEL_TIMINGS:
            errors = {"timing": "choose now or at the end of the period"}
            return cancel_page(request, subscription, values, errors=errors)
        try:
            await gateway.post(
                f"{PORTAL}/subscriptions/{segment(str(subscription['subscriptionId']))}:cancel",
                principal.token,
                request_id,
                {
                    "timing": CANCEL_TIMINGS[timing],
                    "reason": values.get("reason", ""),
                    "requestId": request_id,
                },
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES:
                raise
            return cancel_page(request, subscription, values, problem)
        done = "canceled" if timing == "now" else "cancel_scheduled"
        return RedirectResponse(f"{PLAN_PAGE}?done={done}", status_code=303)

    async def withdraw(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        sent = await posted(request)
        if isinstance(sent, Response):
            return sent
        _, request_id = sent
        schedule_id = request.path_params["schedule_id"]
        try:
            await gateway.post(
                f"{PORTAL}/schedules/{segment(schedule_id)}:cancel",
                principal.token,
                request_id,
                {"requestId": request_id},
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES:
                raise
            error = FormError.of(schedule_id, problem, request_id)
            return await plan_page(request, principal, error, status_code=problem.status)
        return RedirectResponse(f"{PLAN_PAGE}?done=withdrawn", status_code=303)

    return [
        Route(PLAN_PAGE, plan),
        Route(f"{PLAN_PAGE}/change", quote, methods=["GET"]),
        Route(f"{PLAN_PAGE}/change", change, methods=["POST"]),
        Route(f"{PLAN_PAGE}/cancel", cancel_form, methods=["GET"]),
        Route(f"{PLAN_PAGE}/cancel", cancel, methods=["POST"]),
        Route(f"{PLAN_PAGE}/schedules/{{schedule_id}}/withdraw", withdraw, methods=["POST"]),
    ]
