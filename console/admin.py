"""The admin console's invoice operations: list, detail, finalize, void, write off,
credit memo (by invoice lines or a plain amount), retry payment.

Support staff see every page but get no action buttons; a forged POST from
them reaches the gateway, which refuses it (403), and the page says so. Each
operation is a confirmation page first; its form carries the request id, so a
second click replays the first call instead of acting twice. The result page
shows the audit entry the operation wrote, found by that same request id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from console.gateway import ADMIN, Problem, new_request_id, segment, valid_request_id
from console.money import major_amount
from console.pages import FORM_STATUSES, Parts, amount_minor, invoice_document, staff_principal
from console.portal import console_banner
from console.session import CSRF_FIELD, Principal, csrf_ok
from services.kit.currency import minor_units

if TYPE_CHECKING:
    from console.app import Console

PAGE_SIZE = "20"
DRAFT = ("INVOICE_STATE_DRAFT",)
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
    action: str  # the RPC its audit entry names
    service: str  # the service that writes that entry
    form: str = "reason"  # what the confirmation asks: "reason", "credit" or "nothing"
    needs_due: bool = False  # only while something is due
    warning: str = "This cannot be undone."

    def offered(self, invoice: dict[str, Any]) -> bool:
        return invoice.get("state") in self.states and (
            not self.needs_due or amount_minor(invoice.get("amountDue")) > 0
        )


OPERATIONS = {
    op.slug: op
    for op in (
        Operation(
            "finalize",
            "Finalize invoice",
            "Finalize this invoice",
            DRAFT,
            ":finalize",
            "FinalizeInvoice",
            "invoicing",
            form="nothing",
            warning="It gets the next number of the organisation's sequence and can no "
            "longer change; its payment is collected as for any finalized invoice.",
        ),
        Operation(
            "void", "Void invoice", "Void this invoice", UNPAID, ":void", "VoidInvoice", "invoicing"
        ),
        Operation(
            "mark-uncollectible",
            "Mark invoice uncollectible",
            "Write this invoice off",
            UNPAID,
            ":markUncollectible",
            "MarkInvoiceUncollectible",
            "invoicing",
        ),
        Operation(
            "credit-memo",
            "Issue a credit memo",
            "Issue this credit memo",
            CREDITABLE,
            "/creditMemos",
            "IssueCreditMemo",
            "invoicing",
            form="credit",
        ),
        Operation(
            "retry-payment",
            "Retry payment",
            "Charge the payment method now",
            UNPAID,
            ":pay",
            "PayInvoice",
            "payments",
            form="nothing",
            needs_due=True,
            warning="This charges the organisation's default payment method for the "
            "amount due now.",
        ),
    )
}
_REQUEST_LINE = re.compile(r"^lines\[(\d+)\]")


def _minor(text: str, currency: str) -> int | None:
    """A typed major-unit amount ("12.50") in minor units; None unless exact in the currency."""
    try:
        scaled = Decimal(text.strip()).scaleb(minor_units(currency))
    except InvalidOperation:
        return None
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def _amount_hint(currency: str) -> str:
    exponent = minor_units(currency)
    return (
        f"an amount in {currency} with at most {exponent} decimals, e.g. "
        f"{Decimal(1250).scaleb(-exponent)}"
    )


@dataclass(frozen=True)
class CreditRow:
    """One invoice line the memo may credit: its form row and what remains of it."""

    row: int
    line: dict[str, Any]
    remaining_minor: int
    remaining: str  # in major units, the amount input's default


def credit_rows(invoice: dict[str, Any], memos: list[dict[str, Any]]) -> list[CreditRow]:
    """The invoice's positive lines, each with what earlier memos left of it.

    Form row i is request line i when every row is chosen; the row after
    the last is the plain amount, not tied to a line.
    """
    currency = str(invoice.get("currencyCode", ""))
    credited: dict[str, int] = {}
    for memo in memos:
        for line in memo.get("lines") or []:
            if line_id := line.get("invoiceLineId"):
                credited[line_id] = credited.get(line_id, 0) + amount_minor(line.get("amount"))
    rows: list[CreditRow] = []
    for line in invoice.get("lines") or []:
        amount = amount_minor(line.get("amount"))
        if amount <= 0 or not line.get("lineId"):
            continue
        left = max(amount - credited.get(line["lineId"], 0), 0)
        rows.append(CreditRow(len(rows), line, left, str(major_amount(left, currency))))
    return rows


def _credit_body(
    form: FormData, currency: str, rows: list[CreditRow]
) -> tuple[dict[str, Any], dict[str, str], list[int]]:
    """The IssueCreditMemo body, violations the gateway could not name, and the
    form row of each request line (to put the gateway's violations back by row).

    Amounts are typed in major units ("12.50"); the gateway wants minor
    units, so a value that is not a number in the currency's decimals is
    refused here, next to the same field the gateway's violations name.
    """
    errors: dict[str, str] = {}
    chosen = set(form.getlist("credit_line"))
    lines: list[dict[str, Any]] = []
    sent: list[int] = []

    def add(row: int, line_id: str, default_description: str) -> None:
        name = f"lines[{row}]"
        minor = _minor(str(form.get(f"{name}.amount", "")), currency)
        if minor is None:
            errors[f"{name}.amount"] = _amount_hint(currency)
        line = {
            "description": str(form.get(f"{name}.description", "")).strip() or default_description,
            "amount": {"currencyCode": currency, "amountMinor": str(minor or 0)},
        }
        if line_id:
            line["invoiceLineId"] = line_id
        lines.append(line)
        sent.append(row)

    for credit in rows:
        if credit.line["lineId"] in chosen:
            add(credit.row, credit.line["lineId"], str(credit.line.get("description", "")))
    plain = len(rows)
    if str(form.get(f"lines[{plain}].amount", "")).strip() or not lines:
        add(plain, "", "")
    reason = str(form.get("reason", ""))
    body = {
        "reason": reason if reason in CREDIT_REASONS else "CREDIT_MEMO_REASON_UNSPECIFIED",
        "memo": str(form.get("memo", "")),
        "lines": lines,
    }
    return body, errors, sent


def credit_problem_fields(
    problem: Problem, sent: list[int], rows: list[CreditRow]
) -> dict[str, str]:
    """The gateway's violations named by form row instead of request line.

    A line credited beyond what remains is a 409 without violations; its
    detail names the invoice line, so it too lands next to that row.
    """
    errors: dict[str, str] = {}
    for field, text in problem.violations.items():
        match = _REQUEST_LINE.match(field)
        if match and int(match.group(1)) < len(sent):
            field = f"lines[{sent[int(match.group(1))]}]{field[match.end() :]}"
        errors[field] = text
    if problem.reason == "CREDIT_EXCEEDS_REMAINING":
        for credit in rows:
            if credit.row in sent and problem.detail.startswith(f"line {credit.line['lineId']}:"):
                errors[f"lines[{credit.row}].amount"] = (
                    f"more than remains of this line ({credit.remaining})"
                )
    return errors


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

    async def audit_entry(
        request: Request, principal: Principal, op: Operation, request_id: str
    ) -> dict[str, Any] | None:
        """The entry the operation wrote: the newest of its action whose request id is the form's.

        The audit route filters by action, not by request id; the entry was
        committed with the change, so it is among the newest of its action.
        """
        answer = await gateway.get(
            f"{ADMIN}/audit",
            principal.token,
            console.request_id(request),
            {"action": op.action, "service": op.service, "pageSize": "50"},
        )
        for entry in answer.get("entries") or []:
            if entry.get("requestId") == request_id:
                found: dict[str, Any] = entry
                return found
        return None

    async def newest_attempt(
        request: Request, principal: Principal, payment_id: str
    ) -> dict[str, Any] | None:
        answer = await gateway.get(
            f"{ADMIN}/payments/{segment(payment_id)}/attempts",
            principal.token,
            console.request_id(request),
            {"pageSize": "1"},
        )
        attempts: list[dict[str, Any]] = answer.get("attempts") or []
        return attempts[0] if attempts else None

    async def invoice(request: Request) -> Response:
        principal = staff_principal(console, request)
        if isinstance(principal, Response):
            return principal
        found = await load(request, principal)
        actions = [op for op in OPERATIONS.values() if op.offered(found)]
        done = OPERATIONS.get(request.query_params.get("done", ""))
        parts = Parts()
        entry = attempt = None
        # The redirect after an operation names its request id; anything else names none.
        asked = request.query_params.get("request", "")
        done_request = asked if done and valid_request_id(asked) == asked else ""
        if done_request and done:
            entry = await parts.get(
                "the audit entry", audit_entry(request, principal, done, done_request)
            )
        if done and (payment_id := request.query_params.get("payment")):
            attempt = await parts.get(
                "the payment attempt", newest_attempt(request, principal, payment_id)
            )
        return console.render(
            request,
            "admin/invoice.html",
            {
                "invoice": found,
                # Support sees the invoice, never a button it may not press.
                "actions": actions if principal.admin else [],
                "done": done,
                "done_request": done_request,
                "written": entry,
                "attempt": attempt,
                "banner": console_banner(parts),
            },
        )

    async def credit_context(
        request: Request, principal: Principal, found: dict[str, Any]
    ) -> list[CreditRow]:
        answer = await gateway.get(
            f"{ADMIN}/creditMemos",
            principal.token,
            console.request_id(request),
            {"invoiceId": str(found.get("invoiceId", "")), "pageSize": "500"},
        )
        return credit_rows(found, answer.get("creditMemos") or [])

    def confirm_page(
        request: Request,
        found: dict[str, Any],
        op: Operation,
        rows: list[CreditRow],
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
                "rows": rows,
                # A first showing has every line chosen at what remains of it.
                "chosen": set(form.getlist("credit_line"))
                if form is not None
                else {r.line["lineId"] for r in rows if r.remaining_minor > 0},
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
        found = await load(request, principal)
        rows = await credit_context(request, principal, found) if op.form == "credit" else []
        return confirm_page(request, found, op, rows)

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
        rows: list[CreditRow] = []
        sent: list[int] = []
        if op.form == "credit":
            rows = await credit_context(request, principal, found)
            body, errors, sent = _credit_body(form, str(found.get("currencyCode", "")), rows)
        elif op.form == "reason":
            body = {"reason": str(form.get("reason", ""))}
        else:
            body = {}
        if errors:
            return confirm_page(request, found, op, rows, form, errors, status_code=400)
        body["requestId"] = request_id
        invoice_id = segment(found.get("invoiceId", ""))
        try:
            answer = await gateway.post(
                f"{ADMIN}/invoices/{invoice_id}{op.verb}", principal.token, request_id, body
            )
        except Problem as problem:
            if problem.status == 403:
                return confirm_page(
                    request, found, op, rows, form, problem=problem, status_code=403
                )
            if problem.status not in FORM_STATUSES:
                raise
            named = credit_problem_fields(problem, sent, rows)
            return confirm_page(request, found, op, rows, form, named, problem, problem.status)
        query = {"done": op.slug, "request": request_id}
        if payment_id := (answer.get("payment") or {}).get("paymentId"):
            query["payment"] = str(payment_id)
        return RedirectResponse(f"/admin/invoices/{invoice_id}?{urlencode(query)}", status_code=303)

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
