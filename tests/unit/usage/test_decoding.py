"""Decoding a batch of UsageEvent messages: every field as sent, times exact to the microsecond."""

from __future__ import annotations

from datetime import UTC

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from tally.usage.v1 import resources_pb2

from services.kit.protoconv import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS
from services.usage.protomap import incoming_events

stamps = st.builds(
    Timestamp,
    seconds=st.integers(MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS),
    nanos=st.integers(0, 999_999_999),
)


@given(st.lists(st.none() | stamps, max_size=8))
def test_event_times_decode_as_to_datetime_does(times: list[Timestamp | None]) -> None:
    # Runs of one instant are decoded once: repeats exercise that path too.
    times = times + times[:2]
    events = [
        resources_pb2.UsageEvent(
            org_id="o",
            metric_code="m",
            idempotency_key=f"k{i}",
            value="1.5",
            subscription_id="s" if i % 2 else "",
            properties={"user_id": "ann"} if i % 3 else {},
            **({"event_time": t} if t is not None else {}),
        )
        for i, t in enumerate(times)
    ]

    decoded = incoming_events(events)

    assert [d.event_time for d in decoded] == [
        t.ToDatetime(tzinfo=UTC) if t is not None else None for t in times
    ]
    assert [(d.idempotency_key, d.subscription_id, dict(d.properties)) for d in decoded] == [
        (e.idempotency_key, e.subscription_id, dict(e.properties)) for e in events
    ]
    assert {(d.org_id, d.metric_code, d.value) for d in decoded} <= {("o", "m", "1.5")}


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(MAX_TIMESTAMP_SECONDS + 1, 0), (MIN_TIMESTAMP_SECONDS - 1, 0), (0, -1)]
)
def test_an_instant_out_of_range_marks_that_event_only(seconds: int, nanos: int) -> None:
    valid = resources_pb2.UsageEvent(idempotency_key="ok", event_time=Timestamp(seconds=5))
    bad = resources_pb2.UsageEvent(
        idempotency_key="bad", event_time=Timestamp(seconds=seconds, nanos=nanos)
    )

    # The bad one twice, around a valid one of the same instant as before it.
    decoded = incoming_events([valid, bad, valid, bad])

    assert [d.time_error == "" for d in decoded] == [True, False, True, False]
    assert [d.event_time for d in decoded] == [
        Timestamp(seconds=5).ToDatetime(tzinfo=UTC),
        None,
        Timestamp(seconds=5).ToDatetime(tzinfo=UTC),
        None,
    ]
    assert decoded[1].time_error.startswith(f"event_time (seconds={seconds}, nanos={nanos})")
