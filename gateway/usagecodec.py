"""A dedicated JSON codec for the usage ingestion routes.

The generic transcoder (``json_format``) costs about 70 µs per event, most of
the gateway's CPU on a 1,000-event batch. This codec builds the request
messages straight from the parsed JSON and writes the batch answer without
``MessageToDict``.

It only ever answers for plain input: known field names, each once, strings
that are strings without NUL or surrogates, timestamps it reads exactly as
``Timestamp.FromJsonString`` does. Anything else returns None and the generic
transcoder takes the request, so every error (status, problem document,
violations) is the generic one by construction.
``tests/unit/gateway/test_usage_codec.py`` checks with Hypothesis that
whatever the codec answers equals what ``json_format`` answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from tally.usage.v1 import resources_pb2, usage_pb2

_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402300799

_EVENT_FIELDS = {
    "orgId": "org_id",
    "org_id": "org_id",
    "metricCode": "metric_code",
    "metric_code": "metric_code",
    "value": "value",
    "eventTime": "event_time",
    "event_time": "event_time",
    "idempotencyKey": "idempotency_key",
    "idempotency_key": "idempotency_key",
    "subscriptionId": "subscription_id",
    "subscription_id": "subscription_id",
    "externalSubscriptionId": "external_subscription_id",
    "external_subscription_id": "external_subscription_id",
    "properties": "properties",
}
_REQUEST_ID = frozenset({"requestId", "request_id"})
_OMIT_ACCEPTED = frozenset({"omitAcceptedResults", "omit_accepted_results"})


def _fields_are(message: type[Message], names: set[str]) -> bool:
    # A field added to the proto that this module does not know would be
    # silently dropped; the codec then stays off and the generic path serves.
    return {f.name for f in message.DESCRIPTOR.fields} == names


_KNOWN_SHAPES = (
    _fields_are(resources_pb2.UsageEvent, set(_EVENT_FIELDS.values()))
    and _fields_are(
        usage_pb2.RecordUsageBatchRequest, {"events", "request_id", "omit_accepted_results"}
    )
    and _fields_are(usage_pb2.RecordUsageRequest, {"event", "request_id"})
    and _fields_are(usage_pb2.RecordUsageResponse, {"result"})
    and _fields_are(
        usage_pb2.RecordUsageBatchResponse,
        {"results", "accepted_count", "duplicate_count", "rejected_count"},
    )
    and _fields_are(
        resources_pb2.UsageEventResult, {"index", "idempotency_key", "status", "reason", "message"}
    )
)


def timestamp(text: Any) -> Timestamp | None:
    """``text`` as json_format reads a Timestamp, or None when it would not."""
    if type(text) is not str:
        return None
    found = _RFC3339.fullmatch(text)
    if found is None:
        return _library_timestamp(text)
    day, hour_text, minute_text, second_text, fraction, zulu, sign, off_h, off_m = found.groups()
    hour, minute, second = int(hour_text), int(minute_text), int(second_text)
    if hour > 23 or minute > 59 or second > 59:
        return _library_timestamp(text)
    try:
        days = _days_since_epoch(day)
    except ValueError:
        return _library_timestamp(text)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if zulu is None:
        offset = (int(off_h) * 60 + int(off_m)) * 60
        seconds += -offset if sign == "+" else offset
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        return _library_timestamp(text)
    # Integer arithmetic: at most 9 digits, so this is exactly what
    # FromJsonString's float rounding yields, without a float.
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return Timestamp(seconds=seconds, nanos=nanos)


@lru_cache(maxsize=4096)
def _days_since_epoch(day: str) -> int:
    # Events of one batch mostly share a few days: the calendar sum is cached.
    return date(int(day[:4]), int(day[5:7]), int(day[8:10])).toordinal() - _EPOCH_DAY


def _library_timestamp(text: str) -> Timestamp | None:
    # Forms the regex leaves out (other offsets, odd digits): the library decides.
    stamp = Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError:
        return None
    return stamp


def _event(item: Any, stamps: dict[str, Timestamp]) -> dict[str, Any] | None:
    """Keyword arguments for a UsageEvent, or None when the input is not plain.

    String fields are left to the message constructor, which refuses what
    json_format refuses (numbers, lists, objects, lone surrogates) with
    TypeError or ValueError; the caller turns those into a miss.
    """
    if type(item) is not dict:
        return None
    try:
        fields = {_EVENT_FIELDS[key]: value for key, value in item.items()}
    except KeyError:
        return None
    if len(fields) != len(item):  # one field named twice (orgId and org_id)
        return None
    if "event_time" in fields:
        text = fields["event_time"]
        stamp = stamps.get(text) if type(text) is str else None
        if stamp is None:
            stamp = timestamp(text)
            if stamp is None:
                return None
            stamps[text] = stamp
        fields["event_time"] = stamp
    # The constructor would also take a list of pairs, which JSON must not.
    if "properties" in fields and type(fields["properties"]) is not dict:
        return None
    return fields


def _request_fields(
    body: Any, message_field: str, *, batch: bool = False
) -> tuple[Any, str, bool] | None:
    """The top level: ``message_field``, the optional request id and (``batch``) the
    optional omit_accepted_results flag, nothing else."""
    if type(body) is not dict:
        return None
    payload: Any = None
    request_id: Any = None
    omit: bool | None = None
    seen_payload = False
    for key, value in body.items():
        if key == message_field:
            seen_payload = True
            payload = value
        elif key in _REQUEST_ID and request_id is None and type(value) is str:
            request_id = value
        elif batch and key in _OMIT_ACCEPTED and omit is None and type(value) is bool:
            omit = value
        else:
            return None
    if not seen_payload:
        return None
    return payload, request_id or "", bool(omit)


def _may_hold_nul(raw: bytes) -> bool:
    # Strict JSON strings get U+0000 only from this escape; the transcoder
    # refuses it with its own 400, so such a body takes the generic path.
    return b"\\u0000" in raw


def decode_batch(body: Any, raw: bytes) -> usage_pb2.RecordUsageBatchRequest | None:
    """``RecordUsageBatchRequest`` from the parsed body, or None to use the generic path."""
    top = _request_fields(body, "events", batch=True)
    if top is None or type(top[0]) is not list or _may_hold_nul(raw):
        return None
    items, request_id, omit_accepted = top
    stamps: dict[str, Timestamp] = {}
    try:
        request = usage_pb2.RecordUsageBatchRequest(
            request_id=request_id, omit_accepted_results=omit_accepted
        )
        add = request.events.add
        for item in items:
            fields = _event(item, stamps)
            if fields is None:
                return None
            add(**fields)
    except (TypeError, ValueError):
        return None
    return request


def decode_single(body: Any, raw: bytes) -> usage_pb2.RecordUsageRequest | None:
    """``RecordUsageRequest`` from the parsed body, or None to use the generic path."""
    top = _request_fields(body, "event")
    if top is None or _may_hold_nul(raw):
        return None
    item, request_id, _ = top
    fields = _event(item, {})
    if fields is None:
        return None
    try:
        event = resources_pb2.UsageEvent(**fields)
        return usage_pb2.RecordUsageRequest(event=event, request_id=request_id)
    except (TypeError, ValueError):
        return None


_STATUS_NAMES = {v.number: v.name for v in resources_pb2.UsageEventStatus.DESCRIPTOR.values}
_REASON_NAMES = {v.number: v.name for v in resources_pb2.UsageRejectionReason.DESCRIPTOR.values}


def _result(result: resources_pb2.UsageEventResult) -> dict[str, Any]:
    # MessageToDict's shape: field-number order, defaults left out, enums by
    # name (an unknown number as itself, as proto3 open enums print).
    out: dict[str, Any] = {}
    if result.index:
        out["index"] = result.index
    if result.idempotency_key:
        out["idempotencyKey"] = result.idempotency_key
    if result.status:
        out["status"] = _STATUS_NAMES.get(result.status, result.status)
    if result.reason:
        out["reason"] = _REASON_NAMES.get(result.reason, result.reason)
    if result.message:
        out["message"] = result.message
    return out


def encode_batch(reply: usage_pb2.RecordUsageBatchResponse) -> dict[str, Any]:
    """``json_format.MessageToDict(reply)`` for the batch answer, without its per-field cost."""
    out: dict[str, Any] = {}
    if len(reply.results):
        out["results"] = [_result(r) for r in reply.results]
    if reply.accepted_count:
        out["acceptedCount"] = reply.accepted_count
    if reply.duplicate_count:
        out["duplicateCount"] = reply.duplicate_count
    if reply.rejected_count:
        out["rejectedCount"] = reply.rejected_count
    return out


def encode_single(reply: usage_pb2.RecordUsageResponse) -> dict[str, Any]:
    """``json_format.MessageToDict(reply)`` for the single-event answer."""
    return {"result": _result(reply.result)} if reply.HasField("result") else {}


@dataclass(frozen=True)
class Codec:
    decode: Callable[[Any, bytes], Message | None]
    encode: Callable[[Any], dict[str, Any]]


_SERVICE = "/tally.usage.v1.UsageService/"
# By gRPC method path; empty when the protos changed shape under this module.
CODECS: dict[str, Codec] = (
    {
        _SERVICE + "RecordUsageBatch": Codec(decode_batch, encode_batch),
        _SERVICE + "RecordUsage": Codec(decode_single, encode_single),
    }
    if _KNOWN_SHAPES
    else {}
)
