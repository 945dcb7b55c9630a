"""The admin console's invoice operations: list, detail, void, write off, credit memo.

Support staff see every page but get no action buttons; a forged POST from
them reaches the gateway, which refuses it (403), and the page says so. Each
operation is a confirmation page first; its form carries the request id, so a
second click replays the first call instead of acting twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.gateway import ADMIN, Problem, new_request_id, segment, valid_request_id
from console.pages import FORM_STATUSES, invoice_document, staff_principal
from console.session import CSRF_FIELD, Principal, csrf_ok
from services.kit.currency import minor_units

if TYPE_CHECKING:
    from console.app import Console

PAGE_SIZE = "20"
UNPAID = ("INVOICE_STATE_FINALIZED",)
CREDITABLE = ("INVOICE_STATE_FINALIZED", "INVOICE_STATE_PAID")
CREDIT_REASONS = {
    "CREDIT_MEMO_REASON_BILLING_ERROR": "Billing error",
    "CREDIT_MEMO_REASON_DUPLICATE": "Duplicate charge",
    "CREDIT_MEMO_REASON_PRODUCT_UNSATISFACTORY": "Goodwill / service problem",
    "CREDIT_MEMO_REASON_ORDER_CHANGE": "Order changed",
    "CREDIT_MEMO_REASON_OTHER": "Other (see memo)",
}


@dataclass(frozen=True)
class Operation:
    slug: str
    title: str
    button: str
    states: tuple[str, ...]
    verb: str  # the gateway route after /invoices/{id}


OPERATIONS = {
    op.slug: op
    for op in (
        Operation("void", "Void invoice", "Void this invoice", UNPAID, ":void"),
        Operation(
            "mark-uncollectible",
            "Mark invoice uncollectible",
            "Write this invoice off",
            UNPAID,
            ":markUncollectible",
        ),
        Operation(
            "credit-memo",
            "Issue a credit memo",
            "Issue this credit memo",
            CREDITABLE,
            "/creditMemos",
        ),
    )
}


def _credit_body(form: FormData, currency: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The IssueCreditMemo body from the form, or violations the gateway could not name.

    The amount is typed in major units ("12.50"); the gateway wants minor
    units, so a value that is not a number in the currency's decimals is
    refused here, next to the same field the gateway's violations name.
    """
    errors: dict[str, str] = {}
    exponent = minor_units(currency)
    text = str(form.get("lines[0].amount", "")).strip()
    minor = 0
    try:
        scaled = Decimal(text).scaleb(exponent)
        if scaled != scaled.to_integral_value():
            raise InvalidOperation
        minor = int(scaled)
    except InvalidOperation:
        errors["lines[0].amount"] = (
            f"an amount in {currency} with at most {exponent} decimals, e.g. "
            f"{Decimal(1250).scaleb(-exponent)}"
        )
    reason = str(form.get("reason", ""))
    body = {
        "reason": reason if reason in CREDIT_REASONS else "CREDIT_MEMO_REASON_UNSPECIFIED",
        "memo": str(form.get("memo", "")),
        "lines": [
            {
                "description": str(form.get("lines[0].description", "")),
                "amount": {"currencyCode": currency, "amountMinor": str(minor)},
            }
        ],
    }
    return body, errors


def routes(console: Console) -> list[BaseRoute]:
    gateway = console.gateway

    async def invoices(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        params = {"pageSize": PAGE_SIZE, "omitLines": "true"}
        if token := request.query_params.get("page_token"):
            params["pageToken"] = token
        org = request.query_params.get("org", "").strip()
        path = f"{ADMIN}/orgs/{segment(org)}/invoices" if org else f"{ADMIN}/invoices"
        listed = await gateway.get(path, principal.token, console.request_id(request), params)
        return console.render(
            request,
            "admin/invoices.html",
            {
                "invoices": listed.get("invoices", []),
                "next_page_token": listed.get("nextPageToken", ""),
                "first_page": "page_token" not in request.query_params,
                "org": org,
            },
        )

    async def load(request: Request, principal: Principal) -> dict[str, Any]:
        invoice_id = request.path_params["invoice_id"]
        answer = await gateway.get(
            f"{ADMIN}/invoices/{segment(invoice_id)}", principal.token, console.request_id(request)
        )
        invoice: dict[str, Any] = answer.get("invoice") or {}
        return invoice

    async def invoice(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        found = await load(request, principal)
        actions = [op for op in OPERATIONS.values() if found.get("state") in op.states]
        return console.render(
            request,
            "admin/invoice.html",
            {
                "invoice": found,
                # Support sees the invoice, never a button it may not press.
                "actions": actions if principal.admin else [],
                "done": OPERATIONS.get(request.query_params.get("done", "")),
            },
        )

    def confirm_page(
        request: Request,
        found: dict[str, Any],
        op: Operation,
        form: FormData | None = None,
        errors: dict[str, str] | None = None,
        problem: Problem | None = None,
        status_code: int = 200,
    ) -> Response:
        values = dict(form or {})
        return console.render(
            request,
            "admin/confirm.html",
            {
                "invoice": found,
                "op": op,
                "values": values,
                "errors": errors or {},
                "problem": problem,
                "reasons": CREDIT_REASONS,
                "request_id": values.get("request_id") or new_request_id(),
            },
            status_code=status_code,
        )

    async def confirm(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        op = OPERATIONS.get(request.path_params["operation"])
        if op is None:
            return console.render(request, "not_found.html", status_code=404)
        return confirm_page(request, await load(request, principal), op)

    async def act(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        op = OPERATIONS.get(request.path_params["operation"])
        if op is None:
            return console.render(request, "not_found.html", status_code=404)
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        found = await load(request, principal)
        request_id = valid_request_id(str(form.get("request_id", "")))
        errors: dict[str, str] = {}
        if op.slug == "credit-memo":
            body, errors = _credit_body(form, str(found.get("currencyCode", "")))
        else:
            body = {"reason": str(form.get("reason", ""))}
        if errors:
            return confirm_page(request, found, op, form, errors, status_code=400)
        body["requestId"] = request_id
        try:
            await gateway.post(
                f"{ADMIN}/invoices/{segment(found.get('invoiceId', ''))}{op.verb}",
                principal.token,
                request_id,
                body,
            )
        except Problem as problem:
            if problem.status == 403:
                return confirm_page(request, found, op, form, problem=problem, status_code=403)
            if problem.status not in FORM_STATUSES:
                raise
            return confirm_page(
                request, found, op, form, problem.violations, problem, problem.status
            )
        return RedirectResponse(
            f"/admin/invoices/{segment(found.get('invoiceId', ''))}?done={op.slug}",
            status_code=303,
        )

    async def document_html(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        return await invoice_document(console, request, principal, ADMIN, "html")

    return [
        Route("/admin", invoices),
        Route("/admin/invoices/{invoice_id}", invoice),
        Route("/admin/invoices/{invoice_id}/invoice.html", document_html),
        Route("/admin/invoices/{invoice_id}/{operation}", confirm, methods=["GET"]),
        Route("/admin/invoices/{invoice_id}/{operation}", act, methods=["POST"]),
    ]
