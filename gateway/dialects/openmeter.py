"""OpenMeter's event API: CloudEvents at ``POST /api/v1/events``.

``Content-Type: application/cloudevents+json`` (one event) or
``application/cloudevents-batch+json`` (an array); ``application/json`` with a
CloudEvent object or array too, as OpenMeter takes it. Each event becomes a
``UsageEvent`` of the API key's org:

==================  ===============================================
OpenMeter           Tally
==================  ===============================================
``source`` + ``id`` ``idempotency_key`` = ``"<source> <id>"`` (a URI
                    reference holds no space, so the pair is unambiguous)
``type``            ``metric_code`` (a metric's code or alias)
``subject``         the API key's org id (its active subscription), or
                    ``external_subscription_id``: one of the org's
                    subscriptions by its external id, resolved by the
                    usage service (none: UNKNOWN_SUBSCRIPTION)
``time``            ``event_time`` (RFC 3339; unset means now)
``data``            ``properties``: every scalar member as a string,
                    nested objects flattened as ``a.b``; the metric's
                    ``property_key`` names the value, as a meter's
                    ``valueProperty`` (``$.tokens`` -> ``tokens``)
==================  ===============================================

Answers as OpenMeter does: 204 with no body when every event counted (or was
already stored). Errors are RFC 7807 problems: 400 naming each bad attribute
(nothing stored), 400 ``EVENTS_REJECTED`` listing the events that did not
count with their reason (the others were stored; resending them all is safe).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import timestamp_pb2
from tally.usage.v1 import resources_pb2

from gateway.dialects import MAX_BATCH, Outcome, property_text
from gateway.problems import Problem, Violation

PATH = "/api/v1/events"
MAX_KEY_LENGTH = 128  # the usage service's bound on an idempotency key


def decode(body: Any, org_id: str) -> list[resources_pb2.UsageEvent]:
    """One CloudEvent or an array of them, or a 400 Problem naming every bad attribute."""
    items, prefix = (body, True) if isinstance(body, list) else ([body], False)
    if not items:
        raise Problem(400, "expected at least one CloudEvent", "INVALID_REQUEST_FIELD")
    if len(items) > MAX_BATCH:
        raise Problem(
            400,
            f"{len(items)} events in one batch; at most {MAX_BATCH}: nothing was stored",
            "BATCH_TOO_LARGE",
        )
    violations: list[Violation] = []
    events = [
        _event(item, org_id, f"[{i}]." if prefix else "", violations)
        for i, item in enumerate(items)
    ]
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise Problem(400, f"invalid CloudEvents: {summary}", "INVALID_REQUEST_FIELD", violations)
    return events


def _text(item: dict[str, Any], name: str, prefix: str, bad: list[Violation]) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        bad.append(Violation(prefix + name, "required, a non-empty string"))
        return ""
    return value


def _event(item: Any, org_id: str, prefix: str, bad: list[Violation]) -> resources_pb2.UsageEvent:
    event = resources_pb2.UsageEvent(org_id=org_id)
    if not isinstance(item, dict):
        bad.append(Violation(prefix.rstrip(".") or "body", "expected a CloudEvent JSON object"))
        return event
    if item.get("specversion") != "1.0":
        bad.append(Violation(prefix + "specversion", 'required, "1.0"'))
    event_id = _text(item, "id", prefix, bad)
    source = _text(item, "source", prefix, bad)
    event.metric_code = _text(item, "type", prefix, bad)
    subject = _text(item, "subject", prefix, bad)
    if subject and subject != org_id:
        # The org stays the API key's: a subject names a subscription of that
        # org only (another org's subject resolves to nothing, and is rejected).
        event.external_subscription_id = subject
    key = f"{source} {event_id}"
    if len(key) > MAX_KEY_LENGTH:
        bad.append(
            Violation(prefix + "id", f"source and id together exceed {MAX_KEY_LENGTH - 1} chars")
        )
    event.idempotency_key = key
    time = item.get("time")
    if time is not None:
        try:
            if not isinstance(time, str):
                raise ValueError
            stamp = timestamp_pb2.Timestamp()
            stamp.FromJsonString(time)
            event.event_time.CopyFrom(stamp)
        except ValueError:
            bad.append(Violation(prefix + "time", "expected an RFC 3339 timestamp"))
    if "data_base64" in item:
        bad.append(Violation(prefix + "data_base64", "binary data is not accepted; use data"))
    data = item.get("data")
    if data is not None:
        if not isinstance(data, dict):
            bad.append(Violation(prefix + "data", "expected a JSON object"))
        else:
            _flatten(data, "", event, prefix + "data", bad)
    return event


def _flatten(
    data: dict[str, Any], path: str, event: resources_pb2.UsageEvent, at: str, bad: list[Violation]
) -> None:
    for key, value in data.items():
        name = f"{path}{key}"
        if isinstance(value, dict):
            _flatten(value, name + ".", event, at, bad)
        elif value is None:
            continue
        elif isinstance(value, list):
            event.properties[name] = json.dumps(value, separators=(",", ":"))
        else:
            text = property_text(value)
            if text is None:
                bad.append(Violation(f"{at}.{name}", "expected a finite number or a string"))
            else:
                event.properties[name] = text


def rejected_problem(
    events: list[resources_pb2.UsageEvent], outcomes: list[Outcome]
) -> Problem | None:
    """The 400 listing the events that did not count; None when every one did."""
    rejected = [(i, events[i], o) for i, o in enumerate(outcomes) if o.status == "rejected"]
    if not rejected:
        return None
    problem = Problem(
        400,
        f"{len(rejected)} of {len(events)} events were not counted; the others were stored",
        "EVENTS_REJECTED",
        [
            Violation(
                f"[{i}]" if len(events) > 1 else "event",
                f"{o.reason}: {o.message}" if o.message else o.reason,
            )
            for i, _, o in rejected
        ],
    )
    return problem
