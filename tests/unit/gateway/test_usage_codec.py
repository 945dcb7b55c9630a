"""The usage codec answers exactly what the generic json_format transcoder answers.

Whatever the codec decodes must equal the generic request message; whatever it
declines goes the generic way, so errors cannot differ. Plain batches must
take the codec, or the property would hold with a codec that declines all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse
from tally.usage.v1 import resources_pb2, usage_pb2

from gateway import usagecodec
from gateway.descriptors import http_bindings
from gateway.problems import Problem
from gateway.transcoding import Route, Router, build_request, parse_body, response_payload

ROUTER = Router(http_bindings())
SERVICE = "/tally.usage.v1.UsageService/"


def route_of(path: str) -> Route:
    found = ROUTER.match("POST", path)
    assert found is not None
    return found[0]


BATCH_ROUTE = route_of("/internal/billing/v1/usage/events:batchRecord")
SINGLE_ROUTE = route_of("/internal/billing/v1/usage/events")
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generated input ------------------------------------------------------------

tricky_chars = st.sampled_from(["\x00", "\ud800", "\udc00", "é", "😀", '"', "\\", "-", "T", "Z"])
strings = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(st.characters(), tricky_chars), max_size=6).map("".join),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), strings
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """Timestamps of every shape json_format reads, and near misses."""
    at = draw(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
    )
    text = f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at:%H:%M:%S}"
    digits = draw(st.sampled_from([0, 0, 1, 3, 6, 9, 9, 10]))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    offset = draw(
        st.one_of(
            st.just("Z"),
            st.just("Z"),
            st.just("+00:00"),
            st.builds(
                lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
                st.sampled_from("+-"),
                st.integers(0, 30),
                st.integers(0, 70),
            ),
            st.sampled_from(["", "z", "+0100", "+1:00", "Zx", "+01:00Z"]),
        )
    )
    text += offset
    mangle = draw(st.sampled_from(["", "", "", "", "lower", "space", "short", "leap"]))
    if mangle == "lower":
        text = text.replace("T", "t", 1)
    elif mangle == "space":
        text = " " + text
    elif mangle == "short":
        text = text.replace("-0", "-", 1)
    elif mangle == "leap":
        text = text[:17] + "60" + text[19:]
    return text


timestamps = st.one_of(rfc3339(), strings, json_values)
EVENT_KEYS = [
    *usagecodec._EVENT_FIELDS,  # both spellings of every field
    "unknown",
    "eventtime",
    "[tally.ext]",
]


@st.composite
def events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(json_values)  # not an object at all
    keys = draw(st.lists(st.sampled_from(EVENT_KEYS), max_size=7, unique=True))
    event: dict[str, Any] = {}
    for key in keys:
        name = usagecodec._EVENT_FIELDS.get(key)
        if name == "event_time":
            event[key] = draw(timestamps)
        elif name == "properties":
            event[key] = draw(
                st.one_of(
                    st.dictionaries(strings, strings, max_size=3),
                    st.dictionaries(strings, json_values, max_size=2),
                    st.lists(st.tuples(strings, strings), max_size=2),
                    json_values,
                )
            )
        else:
            event[key] = draw(st.one_of(strings, strings, json_values))
    return event


@st.composite
def bodies(draw: st.DrawFn, payload: str) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(json_values)
    body: dict[str, Any] = {}
    shape = draw(st.sampled_from(["plain", "plain", "plain", "odd", "missing"]))
    if shape == "plain":
        body[payload] = (
            draw(st.lists(events(), max_size=5)) if payload == "events" else draw(events())
        )
    elif shape == "odd":
        body[payload] = draw(json_values)
    top_keys = ["requestId", "request_id", "omitAcceptedResults", "omit_accepted_results", "other"]
    for key in draw(st.lists(st.sampled_from(top_keys), unique=True)):
        if key.startswith("omit"):
            body[key] = draw(st.one_of(st.booleans(), st.booleans(), json_values))
        else:
            body[key] = draw(st.one_of(strings, json_values))
    return body


# Plain input: what well-behaved producers send; the codec must take all of it.
plain_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)


@st.composite
def plain_events(draw: st.DrawFn) -> dict[str, Any]:
    at = draw(
        st.datetimes(
            min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        )
    )
    shift = draw(st.integers(-14 * 60, 14 * 60))
    stamp = at.astimezone(timezone(timedelta(minutes=shift))).isoformat()
    if shift == 0 and draw(st.booleans()):
        stamp = stamp.replace("+00:00", "Z")
    event: dict[str, Any] = {
        "orgId": draw(plain_text),
        "metricCode": draw(plain_text),
        "idempotencyKey": draw(plain_text),
        "eventTime": stamp,
    }
    if draw(st.booleans()):
        event["value"] = draw(plain_text)
    if draw(st.booleans()):
        event["subscription_id"] = draw(plain_text)
    if draw(st.booleans()):
        event["externalSubscriptionId"] = draw(plain_text)
    if draw(st.booleans()):
        event["properties"] = draw(st.dictionaries(plain_text, plain_text, max_size=3))
    return event


# --- the comparison ---------------------------------------------------------------


def generic(route: Route, body: Any) -> Message | Problem | Exception:
    try:
        return build_request(route, {}, [], body)
    except Problem as problem:
        return problem
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError, SystemError) as exc:
        return exc


def assert_codec_agrees(route: Route, body: Any) -> Message | None:
    raw = json.dumps(body).encode()  # escapes NUL and lone surrogates, as clients do
    parsed = parse_body(raw)
    codec = usagecodec.CODECS[route.rpc_path]
    fast = codec.decode(parsed, raw)
    if fast is not None:
        slow = generic(route, parsed)
        assert isinstance(slow, Message), f"codec took input the transcoder refuses: {slow}"
        assert fast == slow
        assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(
            deterministic=True
        )
    return fast


@EXAMPLES
@given(bodies("events"))
def test_batch_decode_agrees_with_json_format(body: Any) -> None:
    assert_codec_agrees(BATCH_ROUTE, body)


@EXAMPLES
@given(bodies("event"))
def test_single_decode_agrees_with_json_format(body: Any) -> None:
    assert_codec_agrees(SINGLE_ROUTE, body)


@EXAMPLES
@given(
    st.lists(plain_events(), min_size=1, max_size=8),
    st.one_of(st.none(), plain_text),
    st.one_of(st.none(), st.booleans()),
)
def test_plain_batches_take_the_codec(
    items: list[dict[str, Any]], request_id: str | None, omit_accepted: bool | None
) -> None:
    body: dict[str, Any] = {"events": items}
    if request_id is not None:
        body["requestId"] = request_id
    if omit_accepted is not None:
        body["omitAcceptedResults"] = omit_accepted
    decoded = assert_codec_agrees(BATCH_ROUTE, body)
    assert decoded is not None
    assert decoded.omit_accepted_results is bool(omit_accepted)  # type: ignore[attr-defined]
    assert assert_codec_agrees(SINGLE_ROUTE, {"event": items[0]}) is not None


@EXAMPLES
@given(rfc3339())
def test_timestamps_read_as_json_format_reads_them(text: str) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    expected: Timestamp | None = Timestamp()
    try:
        expected.FromJsonString(text)  # type: ignore[union-attr]
    except ValueError:
        expected = None
    assert usagecodec.timestamp(text) == expected


def test_nul_and_surrogates_take_the_generic_path() -> None:
    for bad in ("a\x00b", "\ud800"):
        body = {"events": [{"orgId": "org_1", "metricCode": "m", "idempotencyKey": bad}]}
        raw = json.dumps(body).encode()
        assert usagecodec.decode_batch(parse_body(raw), raw) is None
        assert isinstance(generic(BATCH_ROUTE, parse_body(raw)), Problem)


# --- answers ----------------------------------------------------------------------

int32 = st.integers(-(2**31), 2**31 - 1)
results = st.builds(
    resources_pb2.UsageEventResult,
    index=int32,
    idempotency_key=plain_text,
    status=st.integers(0, 5),  # 4 and 5 are unknown numbers: printed as numbers
    reason=st.integers(0, 12),
    message=plain_text,
)


def rendered(payload: Any) -> bytes:
    return bytes(JSONResponse(payload).body)


@EXAMPLES
@given(st.lists(results, max_size=8), int32, int32, int32)
def test_batch_answer_is_message_to_dict_byte_for_byte(
    items: list[resources_pb2.UsageEventResult], accepted: int, duplicate: int, rejected: int
) -> None:
    reply = usage_pb2.RecordUsageBatchResponse(
        results=items, accepted_count=accepted, duplicate_count=duplicate, rejected_count=rejected
    )
    expected = response_payload(BATCH_ROUTE, reply)
    assert rendered(usagecodec.encode_batch(reply)) == rendered(expected)


@EXAMPLES
@given(st.one_of(st.none(), results))
def test_single_answer_is_message_to_dict_byte_for_byte(
    result: resources_pb2.UsageEventResult | None,
) -> None:
    reply = usage_pb2.RecordUsageResponse(result=result)
    expected = json_format.MessageToDict(reply)
    assert rendered(usagecodec.encode_single(reply)) == rendered(expected)


def test_every_usage_ingestion_route_has_the_codec() -> None:
    # A proto change the codec does not know switches it off; this says so.
    assert set(usagecodec.CODECS) == {SERVICE + "RecordUsageBatch", SERVICE + "RecordUsage"}
