"""Who is signed in, and the CSRF token of their session.

The token is the gateway's to verify: the console only reads its claims (without
checking the signature) to choose pages and navigation, and every call it makes
with the token is checked by the gateway again. In dev the token lives in the
signed session cookie; in production the host app forwards it in
``Authorization: Bearer`` on every request and the console never stores it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request

from console.settings import ConsoleSettings

PORTAL_PERMISSION = "organization:billing"
ADMIN_ROLE = "billing_admin"
SUPPORT_ROLE = "billing_support"
CSRF_FIELD = "csrf_token"
# The dev sign-in page's choices: (value, label, token claims).
DEV_ROLES: dict[str, tuple[str, dict[str, list[str]]]] = {
    "customer": ("Customer (organization:billing)", {"permissions": [PORTAL_PERMISSION]}),
    ADMIN_ROLE: ("Finance admin (billing_admin)", {"roles": [ADMIN_ROLE]}),
    SUPPORT_ROLE: ("Support (billing_support)", {"roles": [SUPPORT_ROLE]}),
}


@dataclass(frozen=True)
class Principal:
    token: str
    subject: str
    org_id: str
    permissions: frozenset[str]
    roles: frozenset[str]

    @property
    def portal(self) -> bool:
        return bool(self.org_id) and PORTAL_PERMISSION in self.permissions

    @property
    def staff(self) -> bool:
        return bool(self.roles & {ADMIN_ROLE, SUPPORT_ROLE})

    @property
    def admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def label(self) -> str:
        if self.staff:
            return f"{self.subject} ({', '.join(sorted(self.roles))})"
        return f"{self.subject} @ {self.org_id}" if self.org_id else self.subject


def _claims(token: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, options={"verify_signature": False, "verify_aud": False}
        )
    except jwt.PyJWTError:
        return None
    return claims


def principal_from(token: str | None) -> Principal | None:
    """The claims of a token that has not expired; the gateway checks the rest."""
    if not token:
        return None
    claims = _claims(token)
    if claims is None or float(claims.get("exp", 0)) <= time.time():
        return None
    permissions = claims.get("permissions") or []
    if isinstance(permissions, str):
        permissions = permissions.split()
    return Principal(
        token=token,
        subject=str(claims.get("sub", "")),
        org_id=str(claims.get("org_id", "")),
        permissions=frozenset(str(p) for p in permissions),
        roles=frozenset(str(r) for r in claims.get("roles") or []),
    )


def forwarded_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def current_principal(request: Request, settings: ConsoleSettings) -> Principal | None:
    token = forwarded_token(request)
    if token is None and settings.dev_sign_in:
        token = request.session.get("token")
    return principal_from(token)


def mint_dev_token(settings: ConsoleSettings, org_id: str, role: str) -> str:
    """The same token `tally dev token` prints, for the chosen org and role."""
    from gateway.auth import issue_dev_token

    _, claims = DEV_ROLES[role]
    staff = "roles" in claims
    return issue_dev_token(
        settings.dev_token_secret,
        subject=f"dev-{role}",
        audience=settings.dev_token_audience,
        issuer=settings.dev_token_issuer,
        ttl_seconds=settings.dev_token_ttl_seconds,
        org_id=None if staff else org_id,
        permissions=claims.get("permissions"),
        roles=claims.get("roles"),
    )


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use; every form carries it."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    return (
        isinstance(expected, str)
        and bool(expected)
        and isinstance(submitted, str)
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )
