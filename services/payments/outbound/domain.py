"""Pure rules of outbound webhooks: which events an endpoint hears, the body
and signature of a delivery, the retry schedule and when an endpoint is
disabled. No I/O imports."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message

from services.kit.errors import FieldViolation
from services.usage.emitter.webhooks import compute_signature

SIGNATURE_HEADER = "Tally-Signature"
DELIVERY_HEADER = "Tally-Delivery-Id"
EVENT_TYPE_HEADER = "Tally-Event-Type"

# The event types an org may subscribe to, by the name carried in ``type``.
# ``subscription.*`` and ``*`` select families; usage.event_rejected is listed so
# an endpoint may subscribe before its producer exists.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "invoice.finalized",
        "invoice.paid",
        "invoice.voided",
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
        "subscription.created",
        "subscription.changed",
        "subscription.canceled",
        "subscription.paused",
        "subscription.resumed",
        "subscription.trial_ended",
        "subscription.renewed",
        "subscription.period_closed",
        "usage.threshold_crossed",
        "usage.event_rejected",
    }
)


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (the first, or a retry)
    SUCCEEDED = "succeeded"  # a 2xx answer
    FAILED = "failed"  # every attempt of its schedule failed


def event_type_of(subject: str) -> str:
    """``tally.invoicing.invoice.finalized`` -> ``invoice.finalized``."""
    parts = subject.split(".", 2)
    return parts[2] if len(parts) == 3 else subject


def selects(patterns: Sequence[str], event_type: str) -> bool:
    for p in patterns:
        if p in ("*", event_type):
            return True
        if p.endswith(".*") and event_type.startswith(p[:-1]):
            return True
    return False


def pattern_violations(patterns: Sequence[str], field: str = "event_types") -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if not patterns:
        out.append(FieldViolation(field, "at least one event type is required"))
    families = {t.split(".", 1)[0] for t in EVENT_TYPES}
    for i, p in enumerate(patterns):
        if p == "*" or p in EVENT_TYPES:
            continue
        if p.endswith(".*") and p[:-2] in families:
            continue
        out.append(FieldViolation(f"{field}[{i}]", f"unknown event type {p!r}"))
    return out


def url_violations(url: str, field: str = "url") -> list[FieldViolation]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return [FieldViolation(field, "must be an absolute http(s) URL")]
    if len(url) > 2048:
        return [FieldViolation(field, "must be at most 2048 characters")]
    return []


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def org_of(event: Message) -> str:
    """The org an event belongs to: its own ``org_id`` or that of the resource
    it carries (``invoice``, ``subscription``, ``aggregate``)."""
    own = _org_field(event)
    if own:
        return own
    for f in event.DESCRIPTOR.fields:
        if f.message_type is not None and not _repeated(event, f.name):
            inner = _org_field(getattr(event, f.name))
            if inner:
                return inner
    return ""


def _org_field(message: Message) -> str:
    if "org_id" not in message.DESCRIPTOR.fields_by_name:
        return ""
    value: object = getattr(message, "org_id", "")
    return str(value)


def _repeated(message: Message, name: str) -> bool:
    return not isinstance(getattr(message, name), Message)


def delivery_id(event_id: str, endpoint_id: str) -> str:
    """The dedupe id of one event to one endpoint: the same on every retry and
    resend, so a receiver that keeps the ids it has seen applies each once."""
    digest = hashlib.sha256(f"{event_id}:{endpoint_id}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def payload(
    *, delivery: str, event_type: str, created: datetime, org_id: str, event: Message
) -> bytes:
    body: dict[str, Any] = {
        "id": delivery,
        "type": event_type,
        "created": int(created.timestamp()),
        "org_id": org_id,
        "data": json_format.MessageToDict(event, preserving_proto_field_name=True),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def signature_header(secrets_in_use: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>`` with one ``v1`` per secret: during a rotation both
    the new and the previous secret sign, so a receiver holding either verifies."""
    signed = [f"v1={compute_signature(s, timestamp, body)}" for s in secrets_in_use]
    parts = [f"t={timestamp}", *signed]
    return ",".join(parts)


@dataclass(frozen=True)
class RetryPolicy:
    """Waits after each failed attempt; the delivery fails for good once the
    next wait would pass ``horizon`` after the first attempt (3 days)."""

    first_wait: timedelta = timedelta(seconds=30)
    factor: float = 2.0
    max_wait: timedelta = timedelta(hours=6)
    horizon: timedelta = timedelta(days=3)
    # An endpoint all of whose attempts failed for this long (no 2xx since
    # the first failure) is disabled; so is one whose delivery has just
    # failed its whole schedule with no success since the streak began.
    disable_after: timedelta = timedelta(days=3)

    def wait_after(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1-based)."""
        cap = self.max_wait.total_seconds()
        # Capped before it grows: factor ** attempts overflows a timedelta long
        # before an attempt count runs out.
        seconds = self.first_wait.total_seconds()
        for _ in range(attempts - 1):
            seconds = min(seconds * self.factor, cap)
        return timedelta(seconds=min(seconds, cap))

    def next_attempt(
        self, first_attempt: datetime, attempts: int, now: datetime
    ) -> datetime | None:
        """When to try again after ``attempts`` failures, None when it is over."""
        at = now + self.wait_after(attempts)
        return at if at - first_attempt <= self.horizon else None


def should_disable(
    policy: RetryPolicy, failing_since: datetime | None, now: datetime, *, final: bool
) -> bool:
    """``failing_since``: the first failed attempt since the endpoint's last
    success; ``final``: this failure ended a delivery's schedule."""
    if failing_since is None:
        return False
    return final or now - failing_since >= policy.disable_after


def outcome_error(status_code: int | None, error: str) -> str:
    if error:
        return error[:500]
    return f"HTTP {status_code}"


def succeeded(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300
