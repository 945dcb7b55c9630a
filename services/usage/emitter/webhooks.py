"""Verifying Tally's outbound webhooks in the receiver's own code.

``Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``;
during a secret rotation the header carries one ``v1`` per secret in use.
Tally signs with :func:`compute_signature` too, so both sides share one
definition of the format (docs/integrations.md#outbound-webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["WebhookSignatureError", "compute_signature", "verify_signature"]


class WebhookSignatureError(ValueError):
    """The body was not signed by the endpoint's secret (or too long ago)."""


def compute_signature(secret: str, timestamp: int, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return mac.hexdigest()


def verify_signature(
    payload: bytes,
    header: str,
    secret: str,
    tolerance_seconds: int = 300,
    *,
    now: float | None = None,
) -> None:
    """Raise :class:`WebhookSignatureError` unless ``header`` signs ``payload``
    (the raw request body, before any JSON parsing) with ``secret`` within
    ``tolerance_seconds`` of ``now`` (the current time when None); 0 skips the
    age check. The comparison is constant time."""
    if not header:
        raise WebhookSignatureError("missing Tally-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError("Tally-Signature has a bad timestamp") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None:
        raise WebhookSignatureError("Tally-Signature has no timestamp (t=)")
    if not candidates:
        raise WebhookSignatureError("Tally-Signature has no v1 signature")
    expected = compute_signature(secret, timestamp, payload)
    # Every candidate is compared (no early exit), so timing says nothing.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureError("Tally-Signature does not match the payload and secret")
    if tolerance_seconds > 0:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_seconds:
            raise WebhookSignatureError(
                f"Tally-Signature timestamp is {int(current - timestamp)}s away from now"
                f" (tolerance {tolerance_seconds}s)"
            )
