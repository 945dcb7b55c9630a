"""The console's ASGI app: Starlette routes over Jinja2 templates, sessions and CSRF.

Every template is autoescaped (``autoescape=True`` for all of them, whatever
their extension), so any text a gateway answer carries (an org's legal name, a
memo, a reason) is shown as text. Failures end as pages: the gateway down is
the "unavailable" banner, a refused call a 403 page, anything unexpected a
plain error page without a trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import (
    admin,
    admin_audit,
    admin_catalog,
    admin_orgs,
    admin_usage,
    portal,
    portal_plans,
    portal_profile,
    portal_usage,
    rejected_events,
)
from console.gateway import ADMIN, Gateway, Problem, Unavailable, valid_request_id
from console.money import format_money
from console.session import (
    CSRF_FIELD,
    DEV_ROLES,
    Principal,
    csrf_ok,
    csrf_token,
    current_principal,
    mint_dev_token,
)
from console.settings import ConsoleSettings

HERE = Path(__file__).parent
log = logging.getLogger("tally.console")
UNAVAILABLE_TEXT = "Billing is unavailable right now; try again in a minute."
# Pages, forms and the SVG charts come from this origin only; no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _date(value: object) -> str:
    when = _timestamp(value)
    return when.strftime("%Y-%m-%d") if when else "—"


def _datetime(value: object) -> str:
    when = _timestamp(value)
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else "—"


def _enum(value: object, prefix: str) -> str:
    """INVOICE_STATE_PAST_DUE -> "past due"."""
    text = str(value or "").removeprefix(prefix)
    return text.replace("_", " ").lower() or "unknown"


def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=format_money, date=_date, datetime=_datetime, enum=_enum)
    return Jinja2Templates(env=env)


class SecurityHeaders:
    """CSP and friends on every answer (an invoice's own HTML is served as a download)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


class Console:
    """What every page needs: settings, the gateway client and the templates."""

    def __init__(self, settings: ConsoleSettings, gateway: Gateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.templates = templates()

    def principal(self, request: Request) -> Principal | None:
        if "session" not in request.scope:  # an error page rendered outside the middleware
            return None
        return current_principal(request, self.settings)

    def request_id(self, request: Request) -> str:
        rid = getattr(request.state, "request_id", None)
        if rid is None:
            rid = valid_request_id(request.headers.get("x-request-id"))
            request.state.request_id = rid
        return str(rid)

    async def portal_enabled(self, request: Request, principal: Principal) -> bool:
        """The gateway's features route; 404 (a gateway without it) counts as off."""
        cached = getattr(request.state, "portal_enabled", None)
        if cached is not None:
            return bool(cached)
        try:
            answer = await self.gateway.get(
                "/portal/billing/v1/features", principal.token, self.request_id(request)
            )
            enabled = bool((answer.get("features") or {}).get("portal"))
        except Problem:
            enabled = False
        request.state.portal_enabled = enabled
        return enabled

    async def admin_off(self, request: Request) -> bool:
        """After a 404 on an admin page: is the admin group off for this staff member?

        No call on the happy path: an admin page whose gateway call succeeded
        has shown the group is on. Only a 404 asks a list route, which has no
        "not found" of its own, so its 404 can only be the gateway's flag
        (docs/gateway.md "Flags by cohort": off or outside the cohort).
        """
        principal = self.principal(request)
        if principal is None or not principal.staff or not request.url.path.startswith("/admin"):
            return False
        try:
            await self.gateway.get(
                f"{ADMIN}/invoices",
                principal.token,
                self.request_id(request),
                {"pageSize": "1", "omitLines": "true"},
            )
        except Problem as problem:
            if problem.status == 404:
                request.state.admin_enabled = False
                return True
        except Unavailable:
            pass
        return False

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Response:
        principal = self.principal(request)
        values: dict[str, Any] = {
            "principal": principal,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(request) if "session" in request.scope else "",
            "dev_sign_in": self.settings.dev_sign_in,
            "portal_nav": bool(getattr(request.state, "portal_enabled", False)),
            # Shown unless the gateway has said the admin group is off (admin_off).
            "admin_nav": getattr(request.state, "admin_enabled", True) is not False,
            "unavailable_text": UNAVAILABLE_TEXT,
            "banner": None,
            **(context or {}),
        }
        response = self.templates.TemplateResponse(
            request, template, values, status_code=status_code
        )
        response.headers["x-request-id"] = self.request_id(request)
        return response

    def forbidden(self, request: Request, needed: str, detail: str = "") -> Response:
        return self.render(
            request, "forbidden.html", {"needed": needed, "detail": detail}, status_code=403
        )

    def sign_in_first(self, request: Request) -> Response:
        if self.settings.dev_sign_in:
            return RedirectResponse(f"/sign-in?next={request.url.path}", status_code=303)
        return self.render(request, "signed_out.html", status_code=401)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    gateway = Gateway(settings.gateway_url, settings.gateway_timeout_seconds, transport)
    console = Console(settings, gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.aclose()

    async def home(request: Request) -> Response:
        principal = console.principal(request)
        if principal is None:
            return console.sign_in_first(request)
        return RedirectResponse("/admin" if principal.staff else "/portal", status_code=303)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def sign_in_page(request: Request) -> Response:
        if not settings.dev_sign_in:
            return console.render(request, "not_found.html", status_code=404)
        from services.cli.seed import ORGS

        if request.method == "POST":
            form = await request.form()
            org, role = str(form.get("org_id", "")), str(form.get("role", ""))
            errors: dict[str, str] = {}
            if not csrf_ok(request, form.get(CSRF_FIELD)):
                return console.render(request, "csrf.html", status_code=403)
            if org not in {o.org_id for o in ORGS}:
                errors["org_id"] = "choose one of the demo organisations"
            if role not in DEV_ROLES:
                errors["role"] = "choose a role"
            if not errors:
                request.session["token"] = mint_dev_token(settings, org, role)
                target = str(form.get("next", ""))
                # Only our own paths: a crafted ?next= must not send the user elsewhere.
                safe = target.startswith("/") and not target.startswith("//")
                return RedirectResponse(target if safe else "/", status_code=303)
        else:
            errors = {}
        return console.render(
            request,
            "sign_in.html",
            {
                "orgs": [o.org_id for o in ORGS],
                "roles": {k: label for k, (label, _) in DEV_ROLES.items()},
                "errors": errors,
                "next": request.query_params.get("next", "/"),
            },
            status_code=400 if errors else 200,
        )

    async def sign_out(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return console.render(request, "csrf.html", status_code=403)
        request.session.clear()
        return RedirectResponse("/sign-in" if settings.dev_sign_in else "/", status_code=303)

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("gateway unavailable: %s", exc)
        return console.render(request, "unavailable.html", status_code=503)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        if exc.status == 401:
            request.session.pop("token", None)
            return console.sign_in_first(request)
        if exc.status == 403:
            return console.forbidden(request, "", exc.detail)
        if exc.status == 404:
            if await console.admin_off(request):
                return console.render(request, "admin_off.html", status_code=404)
            return console.render(request, "not_found.html", status_code=404)
        return console.render(request, "error.html", {"problem": exc}, status_code=exc.status)

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("console page failed", exc_info=exc)
        return console.render(request, "error.html", {"problem": None}, status_code=500)

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/sign-in", sign_in_page, methods=["GET", "POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        *portal.routes(console),
        *portal_plans.routes(console),
        *portal_usage.routes(console),
        *portal_profile.routes(console),
        *admin.routes(console),
        *admin_orgs.routes(console),
        *admin_audit.routes(console),
        *admin_catalog.routes(console),
        *admin_usage.routes(console),
        *rejected_events.routes(console),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=settings.session_secret,
                session_cookie="tally_console",
                max_age=settings.session_max_age_seconds,
                same_site="lax",
                https_only=settings.session_https_only,
            ),
        ],
        exception_handlers={Unavailable: unavailable, Problem: problem, Exception: crashed},
    )
