"""Property, through the real service and database: RecordUsageBatch with
omit_accepted_results, and StreamUsage, store exactly the rows and answer
exactly the problems and counts of the default RecordUsageBatch, for any
batches (duplicates within and across them, every kind of rejection); a
replay by request id answers the stored short answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally.usage.v1 import resources_pb2 as usage_pb2
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from tests.support.usage import Seeder, event, uid, usage_stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=40)
CLOSED_END = NOW - timedelta(days=10)
OPEN_END = NOW + timedelta(days=20)
ACCEPTED = usage_pb2.USAGE_EVENT_STATUS_ACCEPTED


@dataclass(frozen=True)
class World:
    """One org (with a closed and an open period) and one org without subscription."""

    org: str
    subscription: str
    no_subscription: str

    def normalise(self, text: str) -> str:
        return (
            text.replace(self.subscription, "SUB")
            .replace(self.no_subscription, "NOSUB")
            .replace(self.org, "ORG")
        )


async def _world(seeder: Seeder, name: str) -> World:
    world = World(uid(f"o{name}"), uid(f"s{name}"), uid(f"n{name}"))
    await seeder.subscription(
        world.org, start=START, end=CLOSED_END, subscription_id=world.subscription
    )
    await seeder.close_period(world.subscription, world.org, START, CLOSED_END, OPEN_END)
    await seeder.wait_period(world.subscription, CLOSED_END)
    return world


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[usage_pb2_grpc.UsageServiceStub, str, dict[str, World]]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        worlds = {name: await _world(seeder, name) for name in ("full", "omit", "stream")}
        yield stub, database_url, worlds


# One event, independent of the world it is sent in: which org, key, metric,
# value, time, subscription id and properties.
events = st.tuples(
    st.sampled_from(["org", "org", "org", "no_subscription"]),
    st.sampled_from(["k0", "k1", "k2", "k3", "k4", "", "x" * 200]),
    st.sampled_from(["api_calls", "bytes_sent", "peak_seats", "active_users", "balance", "nope"]),
    st.sampled_from(["", "", "3", "-2", "abc", "1.5"]),
    st.sampled_from(["none", "recent", "recent", "closed", "future", "before"]),
    st.integers(0, 10**9),  # microseconds back, for "recent"
    st.sampled_from(["", "", "own", "unknown"]),
    st.sampled_from([{}, {"user_id": "ann"}, {"bytes": "7", "seats": "2", "amount": "4"}]),
)
batches = st.lists(st.lists(events, min_size=1, max_size=12), min_size=1, max_size=4)


def _time(kind: str, micros: int) -> datetime | None:
    return {
        "none": None,
        "recent": NOW - timedelta(microseconds=micros),
        "closed": START + timedelta(days=1),
        "future": NOW + timedelta(days=1),
        "before": START - timedelta(days=5),
    }[kind]


def _message(world: World, run: str, spec: tuple[Any, ...]) -> usage_pb2.UsageEvent:
    org, key, metric, value, when, micros, subscription, properties = spec
    return event(
        getattr(world, org),
        metric,
        f"{run}-{key}" if key else "",
        value,
        at=_time(when, micros),
        subscription_id={"": "", "own": world.subscription, "unknown": "sub-missing"}[subscription],
        properties=properties,
    )


def _results(world: World, results: Any) -> list[tuple[Any, ...]]:
    return [
        (r.index, r.idempotency_key, r.status, r.reason, world.normalise(r.message))
        for r in results
    ]


async def _stored(database_url: str, world: World, run: str) -> tuple[list[Any], list[Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT org_id, idempotency_key, metric_code, subscription_id, period_start,"
            " event_time, value, unique_value, properties FROM usage.usage_event"
            " WHERE org_id = ANY($1::text[]) AND idempotency_key LIKE $2"
            " ORDER BY org_id, idempotency_key",
            [world.org, world.no_subscription],
            f"{run}-%",
        )
        aggregates = await conn.fetch(
            "SELECT metric_code, period_start, value, event_count, latest_time, latest_key"
            " FROM usage.usage_aggregate WHERE subscription_id = $1"
            " ORDER BY metric_code, period_start",
            world.subscription,
        )
    finally:
        await conn.close()
    return [tuple(_comparable(world, v) for v in r.values()) for r in rows], [
        tuple(_comparable(world, v) for v in r.values()) for r in aggregates
    ]


def _comparable(world: World, value: Any) -> Any:
    # An event sent without a time is stamped when received, which differs
    # between the worlds; every time the test sends is before NOW.
    if isinstance(value, datetime) and value > NOW:
        return "RECEIVED"
    return world.normalise(value) if isinstance(value, str) else value


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=batches)
async def test_omitting_accepted_results_answers_and_stores_as_the_full_answer(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, str, dict[str, World]],
    sent: list[list[tuple[Any, ...]]],
) -> None:
    stub, database_url, worlds = stack
    run = uid("r")
    full_world, omit_world, stream_world = worlds["full"], worlds["omit"], worlds["stream"]

    full = [
        await stub.RecordUsageBatch(
            usage_api.RecordUsageBatchRequest(events=[_message(full_world, run, e) for e in batch]),
            timeout=30,
        )
        for batch in sent
    ]
    omitted = [
        await stub.RecordUsageBatch(
            usage_api.RecordUsageBatchRequest(
                events=[_message(omit_world, run, e) for e in batch], omit_accepted_results=True
            ),
            timeout=30,
        )
        for batch in sent
    ]
    requests = [
        usage_api.StreamUsageRequest(
            sequence=i + 1, events=[_message(stream_world, run, e) for e in batch]
        )
        for i, batch in enumerate(sent)
    ]
    acks = [a async for a in stub.StreamUsage(iter(requests), timeout=30)]
    streamed = [b for a in acks for b in a.batches]

    assert len(full) == len(omitted) == len(streamed) == len(sent)
    for batch, whole, short, ack in zip(sent, full, omitted, streamed, strict=True):
        assert [r.index for r in whole.results] == list(range(len(batch)))
        problems = [r for r in whole.results if r.status != ACCEPTED]
        expected = _results(full_world, problems)
        assert _results(omit_world, short.results) == expected
        assert _results(stream_world, ack.problems) == expected
        counts = (whole.accepted_count, whole.duplicate_count, whole.rejected_count)
        assert (short.accepted_count, short.duplicate_count, short.rejected_count) == counts
        assert (ack.accepted_count, ack.duplicate_count, ack.rejected_count) == counts
        assert whole.accepted_count == len(whole.results) - len(problems)

    stored = {name: await _stored(database_url, w, run) for name, w in worlds.items()}
    assert stored["omit"] == stored["full"]
    assert stored["stream"] == stored["full"]


async def test_a_replayed_request_id_answers_the_stored_short_answer(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, str, dict[str, World]],
) -> None:
    stub, _database_url, worlds = stack
    world = worlds["omit"]
    run = uid("replay")
    request = usage_api.RecordUsageBatchRequest(
        events=[
            event(world.org, "api_calls", f"{run}-a"),
            event(world.org, "api_calls", f"{run}-a"),
            event(world.org, "nope", f"{run}-b"),
            event(world.org, "api_calls", f"{run}-c"),
        ],
        request_id=run,
        omit_accepted_results=True,
    )
    first = await stub.RecordUsageBatch(request, timeout=30)
    replay = await stub.RecordUsageBatch(request, timeout=30)
    assert replay == first
    assert (first.accepted_count, first.duplicate_count, first.rejected_count) == (2, 1, 1)
    assert [(r.index, r.status) for r in first.results] == [
        (1, usage_pb2.USAGE_EVENT_STATUS_DUPLICATE),
        (2, usage_pb2.USAGE_EVENT_STATUS_REJECTED),
    ]
