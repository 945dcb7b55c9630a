"""Lago's event API: ``POST /api/v1/events`` and ``POST /api/v1/events/batch``.

``{"event": {transaction_id, external_subscription_id | external_customer_id,
code, timestamp, properties}}`` (or ``{"events": [...]}``) becomes
``UsageEvent``s of the API key's org:

=============================  ==========================================
Lago                           Tally
=============================  ==========================================
``transaction_id``             ``idempotency_key`` (counted once)
``external_subscription_id``   ``external_subscription_id``: the org's
                               subscription with that external id (or
                               that Tally subscription id), resolved by
                               the usage service
``external_customer_id``       must be the API key's org id, else refused
``code``                       ``metric_code`` (a metric's code or alias)
``timestamp`` (Unix seconds)   ``event_time`` (fractions kept to the µs)
``properties``                 ``properties`` (scalars as strings); a sum,
                               max or latest metric reads its
                               ``property_key`` there, as Lago's
                               ``field_name``
=============================  ==========================================

Answers are shaped as Lago's: the event echoed with a ``lago_id`` (stable per
org and transaction id, so a retry gets the same one) and ``tally_status``
(``accepted`` or ``duplicate``). A rejected event is Lago's 422
``validation_errors`` naming the field and Tally's rejection reason; in a
batch the other events are stored all the same (unlike Lago, a batch is never
all-or-nothing), so resending the whole batch is safe.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from google.protobuf.json_format import MessageToDict
from tally.usage.v1 import resources_pb2

from gateway.dialects import MAX_BATCH, DialectError, Outcome, property_text, unix_time

SINGLE_PATH = "/api/v1/events"
BATCH_PATH = "/api/v1/events/batch"
# lago_id is Lago's UUID for a stored event; ours is derived, so retries agree.
_LAGO_ID_NAMESPACE = uuid.UUID("7b0c2f9e-2f65-4d1a-9a57-0f2f4e6c1d20")
# Which of Lago's fields a rejection is about.
_REASON_FIELD = {
    "invalid_idempotency_key": "transaction_id",
    "unknown_metric": "code",
    "invalid_value": "properties",
    "negative_value": "properties",
    "missing_property": "properties",
    "future_timestamp": "timestamp",
    "period_closed": "timestamp",
    "unknown_subscription": "external_subscription_id",
    "no_active_subscription": "external_subscription_id",
}


def error_body(status: int, code: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": HTTPStatus(status).phrase, "code": code}
    if details is not None:
        body["error_details"] = details
    return body


def decode(body: Any, org_id: str, batch: bool) -> list[resources_pb2.UsageEvent]:
    """The body's events for ``org_id``, or a DialectError with Lago's error details."""
    if not isinstance(body, dict):
        raise DialectError("expected a JSON object", {"body": ["invalid_format"]})
    if not batch:
        problems: dict[str, list[str]] = {}
        event = _event(body.get("event"), org_id, problems)
        if problems:
            raise DialectError("the event cannot be read: it was not stored", problems)
        return [event]
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise DialectError("expected events, a non-empty array", {"events": ["value_is_mandatory"]})
    if len(events) > MAX_BATCH:
        raise DialectError(
            f"{len(events)} events in one batch; at most {MAX_BATCH}: nothing was stored",
            {"events": [f"too_many_events: at most {MAX_BATCH} per batch"]},
        )
    details: dict[str, Any] = {}
    decoded = []
    for i, item in enumerate(events):
        found: dict[str, list[str]] = {}
        decoded.append(_event(item, org_id, found))
        if found:
            details[str(i)] = found
    if details:
        raise DialectError("some events cannot be read: nothing was stored", details)
    return decoded


def _event(item: Any, org_id: str, problems: dict[str, list[str]]) -> resources_pb2.UsageEvent:
    collect = problems  # every bad field at once, as Lago reports them
    if not isinstance(item, dict):
        collect["event"] = ["invalid_format"]
        item = {}
    event = resources_pb2.UsageEvent(org_id=org_id)
    transaction_id = item.get("transaction_id")
    if not isinstance(transaction_id, str) or not transaction_id:
        collect["transaction_id"] = ["value_is_mandatory"]
    else:
        event.idempotency_key = transaction_id
    code = item.get("code")
    if not isinstance(code, str) or not code:
        collect["code"] = ["value_is_mandatory"]
    else:
        event.metric_code = code
    subscription = item.get("external_subscription_id")
    customer = item.get("external_customer_id")
    if subscription is not None and not isinstance(subscription, str):
        collect["external_subscription_id"] = ["invalid_format"]
    elif subscription:
        event.external_subscription_id = subscription
    # The org is the key's: naming another customer is refused, never obeyed.
    if customer not in (None, "", org_id):
        collect["external_customer_id"] = ["customer_not_found"]
    timestamp = item.get("timestamp")
    if timestamp is not None:
        when = unix_time(timestamp)
        if when is None:
            collect["timestamp"] = ["invalid_format"]
        else:
            event.event_time.FromDatetime(when)
    properties = item.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            collect["properties"] = ["invalid_format"]
        else:
            for key, value in properties.items():
                text = property_text(value)
                if text is None:
                    collect["properties"] = [f"invalid_format: {key}"]
                else:
                    event.properties[str(key)] = text
    return event


def event_answer(event: resources_pb2.UsageEvent, outcome: Outcome) -> dict[str, Any]:
    """One stored (or already stored) event, as Lago's EventResponse."""
    when = event.event_time.ToDatetime(UTC) if event.HasField("event_time") else datetime.now(UTC)
    return {
        "lago_id": str(uuid.uuid5(_LAGO_ID_NAMESPACE, f"{event.org_id}\n{event.idempotency_key}")),
        "transaction_id": event.idempotency_key,
        "lago_customer_id": None,
        "external_customer_id": event.org_id,
        # The usage service resolves the external id; its answer does not say to which.
        "lago_subscription_id": None,
        "external_subscription_id": event.external_subscription_id,
        "code": event.metric_code,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "precise_total_amount_cents": None,
        "properties": MessageToDict(event)["properties"] if event.properties else {},
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "tally_status": outcome.status,
    }


def rejection_details(outcome: Outcome) -> dict[str, list[str]]:
    field = _REASON_FIELD.get(outcome.reason, "event")
    return {field: [outcome.reason + (f": {outcome.message}" if outcome.message else "")]}
