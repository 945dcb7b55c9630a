"""Provider idempotency keys: one per thing that must happen at most once.

A key names the attempt (not the call), so resending the same attempt after a
crash or a timeout replays the provider's first answer instead of charging twice.
"""

from __future__ import annotations


def attempt_key(invoice_id: str, attempt_number: int) -> str:
    return f"tally:invoice:{invoice_id}:attempt:{attempt_number}"


def refund_key(refund_id: str) -> str:
    return f"tally:refund:{refund_id}"


def customer_key(org_id: str) -> str:
    return f"tally:customer:{org_id}"


def request_key(kind: str, org_id: str, request_id: str) -> str | None:
    """A key for a client-retryable call; none when the client gave no request id."""
    return f"tally:{kind}:{org_id}:{request_id}" if request_id else None
