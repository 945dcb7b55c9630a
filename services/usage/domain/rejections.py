"""What the rejection feed keeps of an event that did not count (pure).

The event as received is kept as JSON, bounded so a producer sending huge
properties cannot grow the table without limit; the dedupe key makes a
retried rejection one row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.usage.domain.events import MAX_KEY_LENGTH, IncomingEvent

MAX_PAYLOAD_CHARS = 8192
MAX_MESSAGE_CHARS = 500
# Identifying strings are cut to this in a truncated payload.
_MAX_FIELD_CHARS = 256


def _event_dict(event: IncomingEvent) -> dict[str, Any]:
    return {
        "org_id": event.org_id,
        "metric_code": event.metric_code,
        "idempotency_key": event.idempotency_key,
        "value": event.value,
        "event_time": event.event_time.isoformat() if event.event_time else None,
        "subscription_id": event.subscription_id,
        "properties": dict(event.properties),
    }


def rejected_payload(event: IncomingEvent) -> str:
    """The event as JSON, at most ``MAX_PAYLOAD_CHARS`` characters.

    Too large, it keeps its identifying fields (each cut) and says it was
    truncated and how large it was, rather than being cut mid-JSON.
    """
    full = json.dumps(_event_dict(event), separators=(",", ":"), ensure_ascii=False)
    if len(full) <= MAX_PAYLOAD_CHARS:
        return full
    kept = {
        k: v[:_MAX_FIELD_CHARS] if isinstance(v, str) else v
        for k, v in _event_dict(event).items()
        if k != "properties"
    }
    kept["truncated"] = True
    kept["size"] = len(full)
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def stored_key(event: IncomingEvent) -> str:
    """The idempotency key as listed: cut to the longest valid length."""
    return event.idempotency_key[:MAX_KEY_LENGTH]


def dedupe_key(event: IncomingEvent, payload: str) -> str:
    """One row per (org, this, reason): the key, or the payload's hash without one.

    An event with no valid idempotency key cannot be told from its retries by
    key; the same payload is the same event, a different one another event.
    """
    key = event.idempotency_key
    if key and len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def bounded_message(message: str) -> str:
    return message[:MAX_MESSAGE_CHARS]
