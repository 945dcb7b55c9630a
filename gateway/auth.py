"""Who is calling, and may they call this route group.

Tokens are JWTs verified with PyJWT. The algorithm is never taken on trust:
HS256 is only ever checked against the shared secret, RS256/ES256 only against
a key from the JWKS file or URL whose type matches, and ``alg: none`` is in no
list, so neither "none" nor algorithm confusion (an RSA public key used as an
HMAC secret) can pass.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from starlette.datastructures import Headers

from gateway.problems import Problem
from gateway.tokencache import VerifiedTokens
from services.kit.errors import StartupError
from services.kit.settings import DEV_HS256_SECRET, GatewaySettings

log = logging.getLogger("gateway.auth")

BILLING_PERMISSION = "organization:billing"
ADMIN_ROLE = "billing_admin"
SUPPORT_ROLE = "billing_support"
# The only asymmetric algorithms accepted, each with the one key type it may use.
_ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}
# How long a verified token is taken again without checking its signature.
TOKEN_TRUST_SECONDS = 60.0


@dataclass(frozen=True)
class Principal:
    subject: str
    org_id: str = ""
    permissions: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    service: str = ""
    via: str = "jwt"  # or "api-key"
    # Cohort tags of the token's own org (gateway/flags.py), from the org_tags claim.
    org_tags: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


def unauthenticated(detail: str, reason: str = "UNAUTHENTICATED") -> Problem:
    return Problem(401, detail, reason, headers={"WWW-Authenticate": 'Bearer realm="tally"'})


def forbidden(detail: str) -> Problem:
    return Problem(403, detail, "PERMISSION_DENIED")


class TokenVerifier:
    def __init__(self, settings: GatewaySettings) -> None:
        self._secret = settings.jwt_hs256_secret
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._jwks: jwt.PyJWKSet | None = None
        # A key leaving a JWKS URL's set is seen after its cache lifespan at the
        # latest; a verified token is not trusted longer than that.
        trust = TOKEN_TRUST_SECONDS
        if settings.jwt_jwks_url:
            trust = min(trust, settings.jwt_jwks_cache_seconds)
        self._verified: VerifiedTokens[Principal] = VerifiedTokens(trust, self._leeway)
        self._jwks_client: jwt.PyJWKClient | None = None
        if settings.profile == "production":
            _check_production(settings)
        if settings.jwt_jwks_file:
            data = json.loads(Path(settings.jwt_jwks_file).read_text())
            self._jwks = jwt.PyJWKSet.from_dict(data)
        if settings.jwt_jwks_url:
            # PyJWKClient caches the whole set for `lifespan` seconds and refetches
            # on an unknown kid at most once per cooldown, so a flood of bogus
            # kids cannot turn into a flood of fetches.
            self._jwks_client = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_jwk_set=True,
                lifespan=settings.jwt_jwks_cache_seconds,
                timeout=settings.jwt_jwks_timeout_seconds,
            )

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            header: dict[str, Any] = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"malformed token: {exc}") from None
        return header

    def _local_key(self, header: dict[str, Any]) -> tuple[Any, str] | None:
        """The key from the secret or the JWKS file, None when the URL must decide."""
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            return self._secret, "HS256"
        if alg in _ASYMMETRIC and self._jwks is not None:
            kid = header.get("kid")
            for key in self._jwks.keys:
                if (kid is None or key.key_id == kid) and _fits(key, alg):
                    return key.key, alg
            if self._jwks_client is None:
                raise unauthenticated("no key in the key set matches the token")
        if alg in _ASYMMETRIC and self._jwks_client is not None:
            return None
        raise unauthenticated(f"token algorithm {alg!r} is not accepted")

    def _url_key(self, header: dict[str, Any]) -> tuple[Any, str]:
        """Blocking (may fetch the key set): call it from a worker thread."""
        assert self._jwks_client is not None
        alg = str(header.get("alg"))
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise unauthenticated("the token names no key (kid)")
        try:
            key = self._jwks_client.get_signing_key(kid)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, OSError, ValueError) as exc:
            # The key set server is down or sent garbage: this request cannot be
            # verified, which is the caller's 401, not the gateway's 500.
            log.warning("JWKS %s unavailable: %s", self._jwks_client.uri, exc)
            raise unauthenticated(
                "the key set (JWKS) is unavailable; try again later", "KEY_SET_UNAVAILABLE"
            ) from None
        except jwt.PyJWKClientError:
            raise unauthenticated("no key in the key set matches the token") from None
        if not _fits(key, alg):
            raise unauthenticated("no key in the key set matches the token")
        return key.key, alg

    def verify(self, token: str) -> Principal:
        """Synchronous verification; a JWKS URL fetch, if needed, blocks the caller."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        header = self._header(token)
        found = self._local_key(header)
        key, algorithm = found if found is not None else self._url_key(header)
        return self._decode(token, key, algorithm)

    async def verify_async(self, token: str) -> Principal:
        """For the event loop: the JWKS URL fetch runs in a worker thread."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        header = self._header(token)
        found = self._local_key(header)
        if found is None:
            found = await asyncio.to_thread(self._url_key, header)
        key, algorithm = found
        return self._decode(token, key, algorithm)

    def _decode(self, token: str, key: Any, algorithm: str) -> Principal:
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
        principal = Principal(
            subject=str(claims["sub"]),
            org_id=str(claims.get("org_id") or ""),
            permissions=frozenset(_strings(claims.get("permissions"))),
            roles=frozenset(_strings(claims.get("roles"))),
            service=str(claims.get("service") or ""),
            org_tags=frozenset(_strings(claims.get("org_tags"))),
            claims=claims,
        )
        self._verified.put(token, principal, claims)
        return principal


def _fits(key: jwt.PyJWK, alg: str) -> bool:
    # The key's own type decides its algorithm, not the token header: an RSA key
    # only ever verifies RS256, a P-256 key only ES256.
    return key.algorithm_name == alg and key.key_type == _ASYMMETRIC.get(alg)


def _check_production(settings: GatewaySettings) -> None:
    """Refuse a production start that could verify no token, or only with the public dev secret."""
    if settings.jwt_hs256_secret == DEV_HS256_SECRET:
        raise StartupError(
            "TALLY_PROFILE=production must not use the built-in dev JWT secret; "
            "set GATEWAY_JWT_HS256_SECRET to your own or use a JWKS file or URL"
        )
    if not (settings.jwt_hs256_secret or settings.jwt_jwks_file or settings.jwt_jwks_url):
        raise StartupError(
            "TALLY_PROFILE=production needs GATEWAY_JWT_HS256_SECRET, GATEWAY_JWT_JWKS_FILE "
            "or GATEWAY_JWT_JWKS_URL: without one no token can be verified"
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

    async def _bearer(self, headers: Headers) -> Principal:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("a bearer token is required")
        return await self._verifier.verify_async(token.strip())

    async def authenticate(self, group: str, headers: Headers) -> Principal:
        """Who is calling: 401 when the credentials are missing or invalid."""
        if group == "internal":
            key = headers.get("x-api-key")
            if key is not None:
                if self._api_key and hmac.compare_digest(key.encode(), self._api_key.encode()):
                    return Principal(subject="api-key", service="api-key", via="api-key")
                raise unauthenticated("invalid API key")
        return await self._bearer(headers)

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

    async def authorize(
        self, group: str, http_method: str, headers: Headers
    ) -> tuple[Principal, str]:
        principal = await self.authenticate(group, headers)
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
    org_tags: list[str] | None = None,
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
    if org_tags:
        claims["org_tags"] = org_tags
    return jwt.encode(claims, secret, algorithm="HS256")
