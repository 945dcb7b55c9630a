"""BatchGetAggregates over real gRPC: request order, event values, the errors,
and a property that it answers exactly what GetAggregate answers item by item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from tests.support.subscriptions import details
from tests.support.usage import METRICS, Seeder, event, record_batch, ts, uid, usage_stack

pytestmark = pytest.mark.integration

Stack = tuple[usage_pb2_grpc.UsageServiceStub, Seeder, str]


@pytest.fixture(scope="module")
async def stack(database_url: str, nats_url: str) -> AsyncIterator[Stack]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield stub, seeder, database_url


def request(
    sub: str, metric: str, *, start: datetime | None = None, org: str = "", values: bool = False
) -> usage_api.GetAggregateRequest:
    r = usage_api.GetAggregateRequest(
        subscription_id=sub, metric_code=metric, org_id=org, include_event_values=values
    )
    if start is not None:
        r.period_start_time.CopyFrom(ts(start))
    return r


async def batch(
    stub: usage_pb2_grpc.UsageServiceStub, requests: list[usage_api.GetAggregateRequest]
) -> list[usage_api.GetAggregateResponse]:
    reply = await stub.BatchGetAggregates(
        usage_api.BatchGetAggregatesRequest(requests=requests), timeout=10
    )
    return list(reply.responses)


async def test_answers_in_request_order_with_event_values(stack: Stack) -> None:
    stub, seeder, _ = stack
    org_a, org_b = uid("org"), uid("org")
    sub_a, start_a, _ = await seeder.subscription(org_a)
    sub_b, _, _ = await seeder.subscription(org_b)
    at = datetime.now(UTC) - timedelta(hours=1)
    await record_batch(
        stub,
        [
            event(org_a, "bytes_sent", "a1", "2.5", at=at),
            event(org_a, "bytes_sent", "a2", "4", at=at + timedelta(minutes=1)),
            event(org_a, "api_calls", "a3", at=at),
            event(org_b, "bytes_sent", "b1", "7", at=at),
        ],
    )
    answers = await batch(
        stub,
        [
            request(sub_b, "bytes_sent"),
            request(sub_a, "bytes_sent", start=start_a, org=org_a, values=True),
            request(sub_a, "peak_seats"),  # nothing recorded: zero
            request(sub_a, "api_calls", values=True),
            request(sub_b, "bytes_sent"),  # the same item twice answers twice
        ],
    )
    assert [(a.aggregate.subscription_id, a.aggregate.metric_code) for a in answers] == [
        (sub_b, "bytes_sent"),
        (sub_a, "bytes_sent"),
        (sub_a, "peak_seats"),
        (sub_a, "api_calls"),
        (sub_b, "bytes_sent"),
    ]
    assert [(a.aggregate.value, a.aggregate.event_count) for a in answers] == [
        ("7", 1),
        ("6.5", 2),
        ("0", 0),
        ("1", 1),
        ("7", 1),
    ]
    assert list(answers[1].event_values) == ["2.5", "4"]
    assert list(answers[3].event_values) == ["1"]  # a count event is worth one
    assert list(answers[0].event_values) == []
    assert await batch(stub, []) == []


async def test_a_missing_item_fails_the_call_naming_it(stack: Stack) -> None:
    stub, seeder, _ = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    cases = [
        (request("sub-nobody", "bytes_sent"), "SUBSCRIPTION_NOT_FOUND"),
        (request(sub, "bytes_sent", org="org-other"), "SUBSCRIPTION_NOT_FOUND"),
        (request(sub, "no_such_metric"), "METRIC_NOT_FOUND"),
        (request(sub, "bytes_sent", start=datetime(2020, 1, 1, tzinfo=UTC)), "PERIOD_NOT_FOUND"),
    ]
    for missing, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await batch(stub, [request(sub, "bytes_sent"), missing, request(sub, "api_calls")])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert (err.value.details() or "").startswith("requests[1]: ")
        got_reason, meta, _ = details(err.value)
        assert (got_reason, meta["index"]) == (reason, "1")


async def test_invalid_and_oversized_batches(stack: Stack) -> None:
    stub, seeder, _ = stack
    sub, _, _ = await seeder.subscription(uid("org"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await batch(stub, [request(sub, "bytes_sent"), request(sub, "")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(details(err.value)[2]) == {"requests[1].metric_code"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await batch(stub, [request(sub, "bytes_sent")] * 1001)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[0] == "BATCH_TOO_LARGE"


# ------------------------------------------------------------------ property

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = timedelta(days=30)


@dataclass(frozen=True)
class World:
    """Subscriptions with one or two periods, some aggregates and events."""

    orgs: list[str]
    subs: list[str]
    has_current: list[bool]
    closed_first: list[bool]
    # (sub index, metric, period index, value, event count, frozen)
    aggregates: list[tuple[int, str, int, Decimal, int, bool]]
    # (sub index, metric, period index, value or None)
    events: list[tuple[int, str, int, Decimal | None]]


def period_start(index: int) -> datetime:
    return T0 + index * MONTH


METRIC_CODES = [*sorted(METRICS), "no_such_metric"]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n = draw(st.integers(1, 3))
    subs = [uid("sub") for _ in range(n)]
    orgs = [uid("org") for _ in range(n)]
    agg_keys = st.tuples(st.integers(0, n - 1), st.sampled_from(sorted(METRICS)), st.integers(0, 1))
    aggregates = draw(st.lists(agg_keys, max_size=6, unique=True))
    values = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False)
    return World(
        orgs=orgs,
        subs=subs,
        has_current=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        closed_first=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        aggregates=[
            (s, m, p, draw(values), draw(st.integers(0, 50)), draw(st.booleans()))
            for s, m, p in aggregates
        ],
        events=draw(
            st.lists(
                st.tuples(
                    st.integers(0, n - 1),
                    st.sampled_from(sorted(METRICS)),
                    st.integers(0, 1),
                    st.none() | values,
                ),
                max_size=8,
            )
        ),
    )


async def store(database_url: str, w: World) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for i, (sub, org) in enumerate(zip(w.subs, w.orgs, strict=True)):
                current = period_start(1) if w.has_current[i] else None
                await conn.execute(
                    "INSERT INTO usage.subscription (subscription_id, org_id, state,"
                    " current_period_start, current_period_end) VALUES ($1, $2, 'active', $3, $4)",
                    sub,
                    org,
                    current,
                    current + MONTH if current else None,
                )
                # Period 0 always exists; period 1 only while it is the current one.
                for p in range(2 if w.has_current[i] else 1):
                    await conn.execute(
                        "INSERT INTO usage.billing_period"
                        " (subscription_id, period_start, org_id, period_end, closed)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        sub,
                        period_start(p),
                        org,
                        period_start(p) + MONTH,
                        p == 0 and w.closed_first[i],
                    )
            for s, metric, p, value, count, frozen in w.aggregates:
                await conn.execute(
                    "INSERT INTO usage.usage_aggregate (subscription_id, metric_code,"
                    " period_start, org_id, aggregation, period_end, value, event_count, frozen)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    w.subs[s],
                    metric,
                    period_start(p),
                    w.orgs[s],
                    METRICS[metric][0],
                    period_start(p) + MONTH,
                    value,
                    count,
                    frozen,
                )
            for k, (s, metric, p, maybe) in enumerate(w.events):
                await conn.execute(
                    "INSERT INTO usage.usage_event (org_id, idempotency_key, metric_code,"
                    " subscription_id, period_start, event_time, value)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    w.orgs[s],
                    f"k{k}",
                    metric,
                    w.subs[s],
                    period_start(p),
                    period_start(p) + timedelta(hours=k % 3),  # ties broken by key
                    maybe,
                )
    finally:
        await conn.close()


@st.composite
def requests_in(draw: st.DrawFn, w: World) -> list[usage_api.GetAggregateRequest]:
    """Half the time only requests GetAggregate answers, so whole batches succeed."""
    found_only = draw(st.booleans(), label="found only")
    out = []
    for _ in range(draw(st.integers(1, 8))):
        s = draw(st.integers(0, len(w.subs) if not found_only else len(w.subs) - 1))
        sub = w.subs[s] if s < len(w.subs) else "sub-nobody"
        current = s < len(w.subs) and w.has_current[s]
        starts: list[datetime | None] = [period_start(0), *([None, period_start(1)] * current)]
        if not found_only:
            starts = [None, period_start(0), period_start(1), period_start(5)]
        orgs = ["", w.orgs[s] if s < len(w.subs) else "org-other"]
        metric = draw(st.sampled_from(sorted(METRICS) if found_only else METRIC_CODES))
        out.append(
            request(
                sub,
                metric,
                start=draw(st.sampled_from(starts)),
                org=draw(st.sampled_from(orgs if found_only else [*orgs, "org-other"])),
                values=draw(st.booleans()),
            )
        )
    return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_batch_answers_what_get_aggregate_answers_item_by_item(
    stack: Stack, data: st.DataObject
) -> None:
    stub, _, database_url = stack
    w = data.draw(worlds(), label="world")
    await store(database_url, w)
    items = data.draw(requests_in(w), label="requests")
    singles: list[usage_api.GetAggregateResponse | grpc.aio.AioRpcError] = []
    for item in items:
        try:
            singles.append(await stub.GetAggregate(item, timeout=10))
        except grpc.aio.AioRpcError as missing:
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            singles.append(missing)
    failed = [i for i, s in enumerate(singles) if isinstance(s, grpc.aio.AioRpcError)]
    if not failed:
        assert await batch(stub, items) == singles
        return
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await batch(stub, items)
    first = singles[failed[0]]
    assert isinstance(first, grpc.aio.AioRpcError)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"requests[{failed[0]}]: {first.details()}"
    reason, meta, _ = details(err.value)
    first_reason, first_meta, _ = details(first)
    assert (reason, meta) == (first_reason, {**first_meta, "index": str(failed[0])})
