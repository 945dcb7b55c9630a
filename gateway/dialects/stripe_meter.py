"""Stripe's meter events: ``/v1/billing/meter_events`` and the v2 session + stream pair.

v1 (form-encoded, ``Authorization: Bearer <API key>`` as Stripe's SDK sends
its secret key) and each event of a v2 stream become ``UsageEvent``s of the
key's org:

==================================  =====================================
Stripe                              Tally
==================================  =====================================
``identifier``                      ``idempotency_key`` (a UUID when unset,
                                    as Stripe makes one: then no dedupe)
``event_name``                      ``metric_code`` (a code or alias)
``payload[stripe_customer_id]``     required: the API key's org id (its
                                    active subscription), or
                                    ``external_subscription_id``: one of
                                    the org's subscriptions by its
                                    external id (a ``cus_...``), resolved
                                    by the usage service
``payload[value]``                  ``value`` (a whole number, as Stripe's)
other ``payload[...]``              ``properties``
``timestamp`` (Unix seconds)        ``event_time`` (unset: now)
==================================  =====================================

v2: ``POST /v2/billing/meter_event_session`` (API key) answers an
``authentication_token`` valid 15 minutes; ``POST
/v2/billing/meter_event_stream`` with that token sends up to 100 events. The
token is the API key sealed with Fernet (authenticated encryption, key
``GATEWAY_METER_SESSION_KEY``, per process when unset), so any gateway
replica sharing the key accepts it and the API key's revocation still applies
within the key cache's TTL.

Errors are Stripe's ``{"error": {"type", "code", "message", "param"}}`` with
400 (401 for the key). Stripe validates meter events asynchronously; Tally
answers each at once: an event the usage service rejects is a 400 naming the
reason (in a stream the others are stored; resending is safe).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from tally.usage.v1 import resources_pb2

from gateway.dialects import DialectError, Outcome, property_text, unix_time

V1_PATH = "/v1/billing/meter_events"
SESSION_PATH = "/v2/billing/meter_event_session"
STREAM_PATH = "/v2/billing/meter_event_stream"
MAX_STREAM_EVENTS = 100
SESSION_SECONDS = 15 * 60
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"


def error_body(
    message: str, *, param: str | None = None, code: str = "parameter_invalid"
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def decode_form(pairs: Iterable[tuple[str, str]], org_id: str) -> resources_pb2.UsageEvent:
    """A v1 form body (``payload[value]=3&event_name=...``) as one event, or a DialectError."""
    fields: dict[str, str] = {}
    payload: dict[str, Any] = {}
    for name, value in pairs:
        if name.startswith("payload[") and name.endswith("]"):
            payload[name[len("payload[") : -1]] = value
        else:
            fields[name] = value
    return _event(
        {
            "event_name": fields.get("event_name"),
            "identifier": fields.get("identifier"),
            "timestamp": fields.get("timestamp"),
            "payload": payload,
        },
        org_id,
        "",
    )


def decode_stream(body: Any, org_id: str) -> list[resources_pb2.UsageEvent]:
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise DialectError('expected {"events": [...]}', {"events": ["parameter_missing"]})
    events = body["events"]
    if not events or len(events) > MAX_STREAM_EVENTS:
        raise DialectError(
            f"{len(events)} events: a stream call takes 1 to {MAX_STREAM_EVENTS};"
            " nothing was stored",
            {"events": ["parameter_invalid"]},
        )
    return [_event(item, org_id, f"events[{i}].") for i, item in enumerate(events)]


def rejected_param(reason: str) -> str:
    """The parameter a usage rejection is about, as Stripe names it."""
    if reason in ("unknown_subscription", "no_active_subscription"):
        return f"payload[{CUSTOMER_KEY}]"
    return "event_name"


def _bad(param: str, message: str, code: str = "parameter_invalid") -> DialectError:
    return DialectError(message, {"param": [param], "code": [code]})


def _event(item: Any, org_id: str, prefix: str) -> resources_pb2.UsageEvent:
    if not isinstance(item, dict):
        raise _bad(prefix.rstrip(".") or "body", "expected an event object")
    name = item.get("event_name")
    if not isinstance(name, str) or not name:
        raise _bad(
            prefix + "event_name", "Missing required param: event_name.", "parameter_missing"
        )
    payload = item.get("payload")
    if not isinstance(payload, dict):
        raise _bad(prefix + "payload", "Missing required param: payload.", "parameter_missing")
    customer = payload.get(CUSTOMER_KEY)
    if not isinstance(customer, str) or not customer:
        raise _bad(
            f"{prefix}payload[{CUSTOMER_KEY}]",
            f"Missing required param: payload[{CUSTOMER_KEY}].",
            "parameter_missing",
        )
    identifier = item.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or not identifier):
        raise _bad(prefix + "identifier", "identifier must be a non-empty string")
    event = resources_pb2.UsageEvent(
        org_id=org_id,
        metric_code=name,
        idempotency_key=identifier or str(uuid.uuid4()),
    )
    if customer != org_id:
        # The org stays the API key's: a customer names a subscription of that
        # org only (another org's customer resolves to nothing, and is rejected).
        event.external_subscription_id = customer
    value = payload.get(VALUE_KEY)
    if value is not None:
        text = property_text(value)
        if text is None or not text.lstrip("-").isdigit():
            raise _bad(f"{prefix}payload[{VALUE_KEY}]", "payload[value] must be a whole number")
        event.value = text
    for key, member in payload.items():
        if key in (CUSTOMER_KEY, VALUE_KEY):
            continue
        text = property_text(member)
        if text is None:
            raise _bad(f"{prefix}payload[{key}]", "payload values must be strings or numbers")
        event.properties[str(key)] = text
    stamp = item.get("timestamp")
    if stamp not in (None, ""):
        when = unix_time(stamp) if not isinstance(stamp, str) or stamp.isdigit() else None
        if when is None:
            raise _bad(prefix + "timestamp", "timestamp must be Unix seconds")
        event.event_time.FromDatetime(when)
    return event


def meter_event(event: resources_pb2.UsageEvent, outcome: Outcome) -> dict[str, Any]:
    """The v1 answer: a ``billing.meter_event`` object."""
    now = int(time.time())
    stamp = event.event_time.seconds if event.HasField("event_time") else now
    payload = {CUSTOMER_KEY: event.org_id, **dict(event.properties)}
    if event.value:
        payload[VALUE_KEY] = event.value
    return {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event.metric_code,
        "identifier": event.idempotency_key,
        "livemode": False,
        "payload": payload,
        "timestamp": stamp,
        "tally_status": outcome.status,
    }


class Sessions:
    """v2 meter event sessions: the API key sealed in a Fernet token for 15 minutes."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode() if key else Fernet.generate_key())

    def open(self, secret: str, now: float) -> dict[str, Any]:
        token = self._fernet.encrypt_at_time(json.dumps({"k": secret}).encode(), int(now))
        created = datetime.fromtimestamp(int(now), UTC)
        expires = datetime.fromtimestamp(int(now) + SESSION_SECONDS, UTC)
        return {
            "id": "mes_" + uuid.uuid4().hex,
            "object": "v2.billing.meter_event_session",
            "authentication_token": token.decode(),
            "created": _iso(created),
            "expires_at": _iso(expires),
            "livemode": False,
        }

    def secret(self, token: str, now: float) -> str | None:
        """The API key of a live session token; None if forged, garbled or expired."""
        try:
            sealed = self._fernet.decrypt_at_time(token.encode(), SESSION_SECONDS, int(now))
            secret = json.loads(sealed)["k"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return secret if isinstance(secret, str) else None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
