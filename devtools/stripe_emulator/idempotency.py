"""Stripe's idempotent requests: a key replays its first response, byte for byte."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devtools.stripe_emulator.errors import StripeError


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    request_id: str


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    return json.dumps([method, path, params], sort_keys=True)


class IdempotencyStore:
    def __init__(self) -> None:
        self._responses: dict[str, StoredResponse] = {}

    def lookup(self, key: str, print_: str) -> StoredResponse | None:
        """The stored response for ``key``; raises when it was used for another request."""
        stored = self._responses.get(key)
        if stored is None:
            return None
        if stored.fingerprint != print_:
            raise StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they"
                f" were first used with. Try using a key other than '{key}' if you meant to"
                " execute a different request.",
                type="idempotency_error",
            )
        return stored

    def save(self, key: str, response: StoredResponse) -> None:
        self._responses[key] = response

    def responses(self) -> dict[str, StoredResponse]:
        return dict(self._responses)

    def restore(self, responses: dict[str, StoredResponse]) -> None:
        self._responses = dict(responses)

    def forget_all(self) -> None:
        """Stripe prunes keys once they are at least 24 hours old; tests stage that here."""
        self._responses.clear()
