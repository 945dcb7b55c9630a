"""Ingestion API keys at the gateway: ``Authorization: Bearer <secret>`` to an org.

The usage service owns the keys (``VerifyApiKey``); the gateway keeps each
answer for ``GATEWAY_API_KEY_CACHE_SECONDS`` (10 s) so ingestion does not pay a
round trip per call. A key revoked through this gateway is forgotten at once;
one revoked elsewhere stops working within the TTL. Unknown keys are not
cached, so a key created a moment ago works on its first call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import Headers

from gateway.problems import Problem

# Bounded so a flood of distinct keys cannot grow the process without limit.
MAX_CACHED = 10_000


@dataclass(frozen=True)
class KeyPrincipal:
    org_id: str
    key_id: str

    @property
    def subject(self) -> str:
        return f"api-key:{self.key_id}"


# secret -> the key's principal, or None when the service says unknown/revoked.
Verify = Callable[[str], Awaitable[KeyPrincipal | None]]


def bearer_secret(headers: Headers) -> str:
    """The key of ``Bearer <key>``, or of ``Basic`` with the key as user name (``curl -u key:``,
    as Stripe's docs authenticate)."""
    scheme, _, secret = headers.get("authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() == "basic" and secret:
        try:
            secret = base64.b64decode(secret, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            secret = ""
    elif scheme.lower() != "bearer":
        secret = ""
    if not secret:
        raise unauthorized("send the API key as Authorization: Bearer <key>")
    return secret


def unauthorized(detail: str = "unknown or revoked API key") -> Problem:
    return Problem(401, detail, "UNAUTHENTICATED", headers={"WWW-Authenticate": "Bearer"})


class ApiKeyVerifier:
    def __init__(
        self, verify: Verify, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._verify = verify
        self._ttl = ttl_seconds
        self._clock = clock
        # Keyed by the secret's digest: the process never keeps secrets themselves.
        self._cache: dict[bytes, tuple[KeyPrincipal, float]] = {}

    async def principal(self, headers: Headers) -> KeyPrincipal:
        return await self.principal_of(bearer_secret(headers))

    async def principal_of(self, secret: str) -> KeyPrincipal:
        digest = hashlib.sha256(secret.encode()).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = await self._verify(secret)
        if found is None:
            self._cache.pop(digest, None)
            raise unauthorized()
        if self._ttl > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (found, now + self._ttl)
        return found

    def forget(self, key_id: str) -> None:
        """Drop a revoked key now rather than at the end of its TTL."""
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]
