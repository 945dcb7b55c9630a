"""What portal and admin pages share: the guards, optional parts, invoice documents."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from console.gateway import Problem, Unavailable, segment
from console.session import Principal

if TYPE_CHECKING:
    from console.app import Console

T = TypeVar("T")
# Policy answers are the whole page, never one missing part of it.
_POLICY = frozenset({401, 403, 429})
# Problem statuses shown next to the form's fields rather than as a page.
FORM_STATUSES = frozenset({400, 409, 422})


async def portal_principal(console: Console, request: Request) -> Principal | Response:
    principal = console.principal(request)
    if principal is None:
        return console.sign_in_first(request)
    if not principal.portal:
        return console.forbidden(
            request, "an organisation's token with the organization:billing permission"
        )
    if not await console.portal_enabled(request, principal):
        return console.render(request, "portal/off.html", status_code=404)
    return principal


def staff_principal(console: Console, request: Request) -> Principal | Response:
    principal = console.principal(request)
    if principal is None:
        return console.sign_in_first(request)
    if not principal.staff:
        return console.forbidden(request, "the billing_admin or billing_support role")
    return principal


class Parts:
    """Parts of a page that may be missing: each failure is noted, the page still renders."""

    def __init__(self) -> None:
        self.missing: list[str] = []

    async def get(self, name: str, call: Awaitable[T]) -> T | None:
        try:
            return await call
        except Unavailable:
            self.missing.append(name)
        except Problem as problem:
            if problem.status in _POLICY:
                raise
            self.missing.append(name)
        return None


async def invoice_document(
    console: Console, request: Request, principal: Principal, prefix: str, kind: str
) -> Response:
    """An invoice's HTML (``:render``) or PDF (``:pdf``) through the gateway, as a download."""
    invoice_id = request.path_params["invoice_id"]
    verb = "render" if kind == "html" else "pdf"
    document = await console.gateway.document(
        f"{prefix}/invoices/{segment(invoice_id)}:{verb}",
        principal.token,
        console.request_id(request),
    )
    # Always an attachment: the invoice's HTML must not run as a page of this origin.
    given = document.disposition or ""
    params = given[given.index(";") :] if ";" in given else f'; filename="{invoice_id}.{kind}"'
    disposition = "attachment" + params
    return Response(
        document.content,
        media_type=document.media_type,
        headers={"content-disposition": disposition},
    )


def amount_minor(money: dict[str, Any] | None) -> int:
    return int((money or {}).get("amountMinor") or 0)
