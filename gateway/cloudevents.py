"""CloudEvents-style JSON for usage ingestion (structured mode, CloudEvents 1.0).

Product services often emit CloudEvents already; the internal usage routes take
them as they are, with ``Content-Type: application/cloudevents+json`` (one
event, at ``RecordUsage``'s route) or ``application/cloudevents-batch+json`` (a
JSON array, at ``RecordUsageBatch``'s). Each event becomes a
``tally.usage.v1.UsageEvent``:

===========================  ======================================
CloudEvents                  UsageEvent
===========================  ======================================
``id``                       ``idempotency_key`` (dedup key)
``time``                     ``event_time``
``orgid`` (ext.) or          ``org_id``
``subject``
``data.metric`` or ``type``  ``metric_code``
``data.value``               ``value`` (number or decimal string)
``data.properties``          ``properties`` (string -> string)
``subscriptionid`` (ext.)    ``subscription_id``
===========================  ======================================

``specversion`` must be ``"1.0"``; ``source`` is required by CloudEvents and
not stored. Other extension attributes are ignored, as CloudEvents allows. A
malformed event is a 400 naming the attribute (``[2].time`` in a batch).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor

from gateway import problems
from gateway.problems import Problem

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MEDIA_TYPES = (SINGLE, BATCH)
USAGE_EVENT = "tally.usage.v1.UsageEvent"
_DATA_MEMBERS = {"metric", "value", "properties"}


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lower case."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _usage_event_field(descriptor: Descriptor, repeated: bool) -> str | None:
    # Found by type, not by RPC name: any request carrying UsageEvent(s) qualifies.
    for field in descriptor.fields:
        if (
            field.message_type is not None
            and field.message_type.full_name == USAGE_EVENT
            and field.is_repeated == repeated
        ):
            return field.name
    return None


def accepts(descriptor: Descriptor, kind: str) -> bool:
    return _usage_event_field(descriptor, repeated=kind == BATCH) is not None


def request_body(descriptor: Descriptor, kind: str, body: Any) -> dict[str, Any]:
    """The request's protobuf-JSON body built from CloudEvents JSON, or a Problem."""
    target = _usage_event_field(descriptor, repeated=kind == BATCH)
    if target is None:
        expected = SINGLE if kind == BATCH else BATCH
        raise Problem(
            415,
            f"{kind} is not accepted here"
            + (f"; this route takes {expected}" if accepts(descriptor, expected) else ""),
            "UNSUPPORTED_MEDIA_TYPE",
        )
    if kind == SINGLE:
        return {target: usage_event(body, "")}
    if not isinstance(body, list):
        raise problems.invalid("body", "expected a JSON array of CloudEvents")
    return {target: [usage_event(event, f"[{i}].") for i, event in enumerate(body)]}


def _text(event: dict[str, Any], name: str, prefix: str, required: bool) -> str:
    value = event.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise problems.invalid(prefix + name, "required, a non-empty string")
    return value


def usage_event(event: Any, prefix: str) -> dict[str, Any]:
    """One CloudEvent as a UsageEvent in the protobuf JSON mapping."""
    if not isinstance(event, dict):
        raise problems.invalid(prefix.rstrip(".") or "body", "expected a CloudEvent JSON object")
    if event.get("specversion") != "1.0":
        raise problems.invalid(prefix + "specversion", 'required, "1.0"')
    idempotency_key = _text(event, "id", prefix, required=True)
    _text(event, "source", prefix, required=True)
    event_type = _text(event, "type", prefix, required=True)
    org_id = _text(event, "orgid", prefix, required=False) or _text(
        event, "subject", prefix, required=False
    )
    if not org_id:
        raise problems.invalid(prefix + "subject", "required (or the orgid extension): the org")
    result: dict[str, Any] = {"orgId": org_id, "idempotencyKey": idempotency_key}
    time = _text(event, "time", prefix, required=False)
    if time:
        try:
            timestamp_pb2.Timestamp().FromJsonString(time)
        except ValueError:
            raise problems.invalid(prefix + "time", "expected an RFC 3339 timestamp") from None
        result["eventTime"] = time
    subscription_id = _text(event, "subscriptionid", prefix, required=False)
    if subscription_id:
        result["subscriptionId"] = subscription_id
    content_type = event.get("datacontenttype")
    if content_type is not None and media_type(str(content_type)) != "application/json":
        raise problems.invalid(prefix + "datacontenttype", "only application/json data")
    if "data_base64" in event:
        raise problems.invalid(prefix + "data_base64", "binary data is not accepted; use data")
    data = event.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise problems.invalid(prefix + "data", "expected a JSON object")
    for key in data:
        if key not in _DATA_MEMBERS:
            raise problems.invalid(f"{prefix}data.{key}", "unknown member")
    metric = data.get("metric", event_type)
    if not isinstance(metric, str) or not metric:
        raise problems.invalid(prefix + "data.metric", "expected a non-empty string")
    result["metricCode"] = metric
    if "value" in data:
        result["value"] = _decimal(data["value"], prefix + "data.value")
    if "properties" in data:
        result["properties"] = _properties(data["properties"], prefix + "data.properties")
    return result


def _decimal(value: Any, name: str) -> str:
    # bool is an int in Python; a JSON true is no quantity.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise problems.invalid(name, "expected a number or a decimal string")
    if isinstance(value, float) and not math.isfinite(value):
        raise problems.invalid(name, "expected a finite number")
    if isinstance(value, str):
        return value  # the usage service parses and validates the decimal
    return repr(value) if isinstance(value, float) else str(value)


def _properties(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise problems.invalid(name, "expected an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise problems.invalid(f"{name}.{key}", "expected a string")
    return dict(value)


def schema(single: bool) -> dict[str, Any]:
    """OpenAPI schema of the accepted CloudEvents JSON."""
    string = {"type": "string"}
    event: dict[str, Any] = {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": string,
            "source": string,
            "type": string,
            "subject": string,
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": string,
            "orgid": string,
            "subscriptionid": string,
            "data": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "metric": string,
                    "value": {"type": ["string", "number"]},
                    "properties": {"type": "object", "additionalProperties": string},
                },
            },
        },
    }
    return event if single else {"type": "array", "items": event}
