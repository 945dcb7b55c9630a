"""The portal's billing profile: billing email, legal name and address, and payment methods.

The profile form is validated by the gateway's answer: its violations name
the request's fields (``billing_profile.invoice_email``), which are the
form's input names, so each lands next to its input. Payment methods are
listed, made default, removed after a confirmation, and added through the
SetupIntent flow: in production Stripe.js Elements would confirm the intent
in the browser (not built: it needs Stripe's external script); in dev the
Stripe emulator cannot run Stripe.js, so the form offers Stripe's test card
tokens (``pm_card_visa``...), which the emulator and Stripe's test mode both
accept, and posts the chosen one to AttachPaymentMethod.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.gateway import PORTAL, Problem, new_request_id, segment, valid_request_id
from console.pages import FORM_STATUSES, Parts, portal_principal
from console.portal import console_banner
from console.session import CSRF_FIELD, Principal, csrf_ok

if TYPE_CHECKING:
    from console.app import Console

PROFILE = "/portal/billing-profile"
# The form's inputs, named by UpdateBillingProfile's field paths (its violations' names).
ADDRESS_FIELDS = ("line1", "line2", "city", "region", "postal_code", "country_code")
TEXT_FIELDS = ("legal_name", "invoice_email", "tax_id")
UPDATE_MASK = "legalName,address,taxId,invoiceEmail"
# Stripe's test card tokens the emulator knows (devtools/stripe_emulator/README.md).
TEST_CARDS = {
    "pm_card_visa": "Visa 4242",
    "pm_card_mastercard": "Mastercard 4444",
    "pm_card_chargeDeclined": "Visa 0002 (declines when charged)",
    "pm_card_authenticationRequired": "Visa 3184 (asks for 3-D Secure)",
}
CARD_FIELD = "provider_payment_method_id"
NOTICES = {
    "saved": "Billing profile saved.",
    "card-added": "Card added.",
    "default": "Default payment method changed.",
    "removed": "Payment method removed.",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def profile_values(profile: dict[str, Any] | None) -> dict[str, str]:
    """The gateway's profile JSON as the form's values, keyed by input name."""
    profile = profile or {}
    values = {f"billing_profile.{f}": str(profile.get(_camel(f)) or "") for f in TEXT_FIELDS}
    address = profile.get("address") or {}
    for f in ADDRESS_FIELDS:
        values[f"billing_profile.address.{f}"] = str(address.get(_camel(f)) or "")
    return values


def profile_body(form: FormData, request_id: str) -> dict[str, Any]:
    """UpdateBillingProfile's JSON body from the form: every editable field, as typed."""

    def text(name: str) -> str:
        return str(form.get(f"billing_profile.{name}", "")).strip()

    profile: dict[str, Any] = {_camel(f): text(f) for f in TEXT_FIELDS}
    profile["address"] = {_camel(f): text(f"address.{f}") for f in ADDRESS_FIELDS}
    return {"billingProfile": profile, "updateMask": UPDATE_MASK, "requestId": request_id}


def offers_test_cards(dev: bool, publishable_key: str) -> bool:
    """Test card tokens only in dev, against a test-mode provider (the emulator's key: pk_test_)."""
    return dev and (not publishable_key or publishable_key.startswith("pk_test_"))


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def profile_page(
        request: Request,
        principal: Principal,
        form: FormData | None = None,
        problem: Problem | None = None,
        method_problem: Problem | None = None,
    ) -> Response:
        rid = console.request_id(request)
        parts = Parts()
        profile = None
        if form is None:
            profile = await parts.get(
                "billing profile", gateway.get(f"{PORTAL}/billingProfile", principal.token, rid)
            )
        methods = await parts.get(
            "payment methods", gateway.get(f"{PORTAL}/paymentMethods", principal.token, rid)
        )
        values = (
            dict(form)
            if form is not None
            else profile_values((profile or {}).get("billingProfile"))
        )
        shown = problem or method_problem
        status = shown.status if shown else 200
        return console.render(
            request,
            "portal_profile/profile.html",
            {
                "values": values,
                "profile_missing": form is None and profile is None,
                "errors": problem.violations if problem else {},
                "problem": problem,
                "method_problem": method_problem,
                # proto3 JSON leaves an empty list out: {} is "no methods", None "unavailable".
                "methods": None if methods is None else methods.get("paymentMethods", []),
                "notice": NOTICES.get(request.query_params.get("done", "")),
                # A new id per form shown; a form shown again after an error keeps its own.
                "request_id": str(form.get("request_id") if form else "") or new_request_id(),
                "banner": console_banner(parts),
            },
            status_code=status,
        )

    async def posted(request: Request) -> tuple[Principal, FormData, str] | Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        return principal, form, valid_request_id(str(form.get("request_id", "")))

    async def show(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await profile_page(request, principal)

    async def save(request: Request) -> Response:
        got = await posted(request)
        if isinstance(got, Response):
            return got
        principal, form, rid = got
        try:
            await gateway.patch(
                f"{PORTAL}/billingProfile", principal.token, rid, profile_body(form, rid)
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES | {403}:
                raise
            return await profile_page(request, principal, form, problem)
        return RedirectResponse(f"{PROFILE}?done=saved", status_code=303)

    async def method_action(request: Request, verb: str, done: str) -> Response:
        got = await posted(request)
        if isinstance(got, Response):
            return got
        principal, _, rid = got
        method_id = request.path_params["method_id"]
        try:
            await gateway.post(
                f"{PORTAL}/paymentMethods/{segment(method_id)}:{verb}",
                principal.token,
                rid,
                {"requestId": rid},
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES | {403}:
                raise
            return await profile_page(request, principal, method_problem=problem)
        return RedirectResponse(f"{PROFILE}?done={done}", status_code=303)

    async def make_default(request: Request) -> Response:
        return await method_action(request, "setDefault", "default")

    async def remove(request: Request) -> Response:
        return await method_action(request, "detach", "removed")

    async def confirm_remove(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        method_id = request.path_params["method_id"]
        # No route reads one method: the org's list (default first) has it, or it is not the org's.
        listed = await gateway.get(
            f"{PORTAL}/paymentMethods",
            principal.token,
            console.request_id(request),
            {"pageSize": "500"},
        )
        method = next(
            (m for m in listed.get("paymentMethods", []) if m.get("paymentMethodId") == method_id),
            None,
        )
        if method is None:
            return console.render(request, "not_found.html", status_code=404)
        return console.render(
            request,
            "portal_profile/remove.html",
            {"method": method, "request_id": new_request_id()},
        )

    async def add_page(
        request: Request,
        principal: Principal,
        request_id: str,
        form: FormData | None = None,
        problem: Problem | None = None,
    ) -> Response:
        # The SetupIntent is the flow's first step (it also makes the org's provider
        # customer); the same request id answers the same intent when the form is shown again.
        intent = await gateway.post(
            f"{PORTAL}/setupIntents", principal.token, request_id, {"requestId": request_id}
        )
        test_cards = offers_test_cards(
            console.settings.dev_sign_in, str(intent.get("publishableKey") or "")
        )
        return console.render(
            request,
            "portal_profile/add_card.html",
            {
                "test_cards": TEST_CARDS if test_cards else None,
                "values": dict(form or {}),
                "errors": problem.violations if problem else {},
                "problem": problem,
                "request_id": request_id,
                "setup_intent_id": intent.get("setupIntentId", ""),
            },
            status_code=problem.status if problem else 200,
        )

    async def add_form(request: Request) -> Response:
        principal = await portal_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await add_page(request, principal, new_request_id())

    async def add(request: Request) -> Response:
        got = await posted(request)
        if isinstance(got, Response):
            return got
        principal, form, rid = got
        card = str(form.get(CARD_FIELD, ""))
        if not console.settings.dev_sign_in or card not in TEST_CARDS:
            refused = Problem(
                400, "Invalid card", violations={CARD_FIELD: "choose one of the test cards"}
            )
            return await add_page(request, principal, rid, form, refused)
        try:
            await gateway.post(
                f"{PORTAL}/paymentMethods:attach",
                principal.token,
                rid,
                {
                    "providerPaymentMethodId": card,
                    "setDefault": form.get("set_default") == "true",
                    "requestId": rid,
                },
            )
        except Problem as problem:
            if problem.status not in FORM_STATUSES | {403}:
                raise
            return await add_page(request, principal, rid, form, problem)
        return RedirectResponse(f"{PROFILE}?done=card-added", status_code=303)

    return [
        Route(PROFILE, show, methods=["GET"]),
        Route(PROFILE, save, methods=["POST"]),
        Route("/portal/payment-methods/new", add_form, methods=["GET"]),
        Route("/portal/payment-methods/new", add, methods=["POST"]),
        Route("/portal/payment-methods/{method_id}/default", make_default, methods=["POST"]),
        Route("/portal/payment-methods/{method_id}/remove", confirm_remove, methods=["GET"]),
        Route("/portal/payment-methods/{method_id}/remove", remove, methods=["POST"]),
    ]
