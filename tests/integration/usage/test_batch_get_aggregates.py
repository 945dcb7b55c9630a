"""GetAggregate and BatchGetAggregates over real gRPC: request order, event
values, the errors, and a property that both answer what a model of the stored
rows says, the batch exactly what GetAggregate answers item by item."""

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


Expected = str | tuple[Decimal, int, bool, datetime, list[Decimal]]


def expected(w: World, r: usage_api.GetAggregateRequest) -> Expected:
    """The model's answer to ``r``: a NOT_FOUND reason, or (value, event count,
    frozen, period start, event values), worked out from ``w`` alone."""
    if r.subscription_id not in w.subs:
        return "SUBSCRIPTION_NOT_FOUND"
    s = w.subs.index(r.subscription_id)
    if r.org_id and r.org_id != w.orgs[s]:
        return "SUBSCRIPTION_NOT_FOUND"
    if r.HasField("period_start_time"):
        start: datetime | None = r.period_start_time.ToDatetime(tzinfo=UTC)
    else:
        start = period_start(1) if w.has_current[s] else None
    periods = [period_start(0), *([period_start(1)] * w.has_current[s])]
    if start not in periods:
        return "PERIOD_NOT_FOUND"
    p = periods.index(start)
    stored = [a for a in w.aggregates if a[:3] == (s, r.metric_code, p)]
    if stored:
        value, count, frozen = stored[0][3:]
    elif r.metric_code in METRICS:
        value, count, frozen = Decimal(0), 0, p == 0 and w.closed_first[s]
    else:
        return "METRIC_NOT_FOUND"
    # Events are stored at period start + (k mod 3) hours under key "k<k>".
    mine = [
        (k % 3, k, v)
        for k, (es, m, ep, v) in enumerate(w.events)
        if (es, m, ep) == (s, r.metric_code, p)
    ]
    values = [
        Decimal(1) if v is None else v for _, _, v in sorted(mine, key=lambda e: (e[0], f"k{e[1]}"))
    ]
    return value, count, frozen, period_start(p), values if r.include_event_values else []


def answered(reply: usage_api.GetAggregateResponse) -> Expected:
    a = reply.aggregate
    return (
        Decimal(a.value),
        a.event_count,
        a.frozen,
        a.period_start_time.ToDatetime(tzinfo=UTC),
        [Decimal(v) for v in reply.event_values],
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_both_answer_what_the_stored_rows_say(stack: Stack, data: st.DataObject) -> None:
    stub, _, database_url = stack
    w = data.draw(worlds(), label="world")
    await store(database_url, w)
    items = data.draw(requests_in(w), label="requests")
    wanted = [expected(w, item) for item in items]
    singles: list[usage_api.GetAggregateResponse | grpc.aio.AioRpcError] = []
    for item, want in zip(items, wanted, strict=True):
        try:
            single = await stub.GetAggregate(item, timeout=10)
        except grpc.aio.AioRpcError as missing:
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            assert details(missing)[0] == want
            singles.append(missing)
            continue
        assert (single.aggregate.subscription_id, single.aggregate.metric_code) == (
            item.subscription_id,
            item.metric_code,
        )
        assert answered(single) == want
        singles.append(single)
    failed = [i for i, want in enumerate(wanted) if isinstance(want, str)]
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
