"""Who is calling, and may they call this route group.

Tokens are JWTs verified with PyJWT. The algorithm is never taken on trust:
HS256 is only ever checked against the shared secret, RS256/ES256 only against
a key from the JWKS file whose type matches, and ``alg: none`` is in no list,
so neither "none" nor algorithm confusion (an RSA public key used as an HMAC
secret) can pass.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from starlette.datastructures import Headers

from gateway.problems import Problem
from services.kit.settings import GatewaySettings

BILLING_PERMISSION = "organization:billing"
ADMIN_ROLE = "billing_admin"
SUPPORT_ROLE = "billing_support"
_ASYMMETRIC = ("RS256", "ES256")


@dataclass(frozen=True)
class Principal:
    subject: str
    org_id: str = ""
    permissions: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    service: str = ""
    via: str = "jwt"  # or "api-key"
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


def unauthenticated(detail: str) -> Problem:
    return Problem(
        401, detail, "UNAUTHENTICATED", headers={"WWW-Authenticate": 'Bearer realm="tally"'}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, detail, "PERMISSION_DENIED")


class TokenVerifier:
    def __init__(self, settings: GatewaySettings) -> None:
        self._secret = settings.jwt_hs256_secret
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._jwks: jwt.PyJWKSet | None = None
        if settings.jwt_jwks_file:
            data = json.loads(Path(settings.jwt_jwks_file).read_text())
            self._jwks = jwt.PyJWKSet.from_dict(data)

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            return self._secret, "HS256"
        if alg in _ASYMMETRIC and self._jwks is not None:
            kid = header.get("kid")
            for key in self._jwks.keys:
                # The key's own type decides its algorithm, not the token header.
                if (kid is None or key.key_id == kid) and key.algorithm_name == alg:
                    return key.key, alg
            raise unauthenticated("no key in the key set matches the token")
        raise unauthenticated(f"token algorithm {alg!r} is not accepted")

    def verify(self, token: str) -> Principal:
        key, algorithm = self._key_for(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"invalid token: {exc}") from None
        return Principal(
            subject=str(claims["sub"]),
            org_id=str(claims.get("org_id") or ""),
            permissions=frozenset(_strings(claims.get("permissions"))),
            roles=frozenset(_strings(claims.get("roles"))),
            service=str(claims.get("service") or ""),
            claims=claims,
        )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()  # OAuth-style space-separated scopes
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


class Authorizer:
    """The rules of the three route groups."""

    def __init__(self, settings: GatewaySettings, verifier: TokenVerifier | None = None) -> None:
        self._verifier = verifier or TokenVerifier(settings)
        self._api_key = settings.internal_api_key

    def _bearer(self, headers: Headers) -> Principal:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("a bearer token is required")
        return self._verifier.verify(token.strip())

    def authenticate(self, group: str, headers: Headers) -> Principal:
        """Who is calling: 401 when the credentials are missing or invalid."""
        if group == "internal":
            key = headers.get("x-api-key")
            if key is not None:
                if self._api_key and hmac.compare_digest(key.encode(), self._api_key.encode()):
                    return Principal(subject="api-key", service="api-key", via="api-key")
                raise unauthenticated("invalid API key")
        return self._bearer(headers)

    def permit(self, group: str, http_method: str, principal: Principal) -> str:
        """The role the caller acts in on this group; 403 when it has none."""
        if group == "portal":
            if not principal.org_id:
                raise forbidden("the token carries no organisation")
            if BILLING_PERMISSION not in principal.permissions:
                raise forbidden(f"the token lacks the {BILLING_PERMISSION} permission")
            return "portal"
        if group == "admin":
            if ADMIN_ROLE in principal.roles:
                return ADMIN_ROLE
            if SUPPORT_ROLE in principal.roles:
                if http_method not in ("GET", "HEAD"):
                    raise forbidden(f"{SUPPORT_ROLE} may read, not change")
                return SUPPORT_ROLE
            raise forbidden("a billing admin or support role is required")
        if group == "internal":
            if not principal.service:
                raise forbidden("a service token is required")
            return "service"
        raise forbidden("unknown route group")

    def authorize(self, group: str, http_method: str, headers: Headers) -> tuple[Principal, str]:
        principal = self.authenticate(group, headers)
        return principal, self.permit(group, http_method, principal)


def issue_dev_token(
    secret: str,
    *,
    subject: str,
    audience: str,
    issuer: str,
    ttl_seconds: int,
    org_id: str | None = None,
    permissions: list[str] | None = None,
    roles: list[str] | None = None,
    service: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for development and tests, signed with the gateway's dev secret."""
    import time

    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "aud": audience,
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if org_id:
        claims["org_id"] = org_id
    if permissions:
        claims["permissions"] = permissions
    if roles:
        claims["roles"] = roles
    if service:
        claims["service"] = service
    return jwt.encode(claims, secret, algorithm="HS256")
