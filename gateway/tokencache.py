"""Tokens already verified, so a caller does not pay for the signature on every request.

Checking a JWT's signature and claims costs more than anything else the
gateway does per request. A producer sends the same token with every
request until it expires, so a token that verified once is trusted again
without those checks for at most ``ttl`` seconds. The time-dependent
claims are checked on every hit, with the same arithmetic as PyJWT, so
``exp`` is always honoured. Nothing else about a token changes while the
process runs, except that a key may leave a JWKS URL's set; the verifier
keeps ``ttl`` within the time its key set client caches the set anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    expires: int | None
    not_before: int | None
    issued: int | None
    trusted_until: float


def _int_claim(claims: Mapping[str, Any], name: str) -> int | None:
    # PyJWT compares int(claim); a claim it accepted converts without error.
    return int(claims[name]) if name in claims else None


class VerifiedTokens(Generic[T]):
    def __init__(
        self,
        ttl: float,
        leeway: float,
        capacity: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl
        self._leeway = leeway
        self._capacity = capacity
        self._clock = clock
        self._entries: dict[str, _Entry[T]] = {}

    def get(self, token: str) -> T | None:
        """What ``token`` verified to, while it is still trusted and valid now."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        now = self._clock()
        leeway = self._leeway
        if (
            now >= entry.trusted_until
            or (entry.expires is not None and entry.expires <= now - leeway)
            or (entry.not_before is not None and entry.not_before > now + leeway)
            or (entry.issued is not None and entry.issued > now + leeway)
        ):
            # Verified afresh, so an expired token gets the verifier's own answer.
            del self._entries[token]
            return None
        return entry.value

    def put(self, token: str, value: T, claims: Mapping[str, Any]) -> None:
        """Remember a token that has just passed full verification with ``claims``."""
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[token] = _Entry(
            value,
            _int_claim(claims, "exp"),
            _int_claim(claims, "nbf"),
            _int_claim(claims, "iat"),
            self._clock() + self._ttl,
        )
