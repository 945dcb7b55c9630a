"""Property, through the real service and database: any duplicate-laden stream
of events, split into any batches sent in any interleaving, aggregates exactly
like its distinct events."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally.usage.v1 import usage_pb2_grpc

from services.kit import migrations
from services.usage.domain import Aggregation, StoredEvent, fold
from tests.support.usage import METRICS, Seeder, aggregate, event, record_batch, uid, usage_stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
async def stack(
    database_url: str, nats_url: str
) -> AsyncIterator[tuple[usage_pb2_grpc.UsageServiceStub, Seeder]]:
    await migrations.upgrade_async("usage", database_url)
    async with usage_stack(database_url, nats_url) as (_runtime, stub, seeder, _bus):
        await seeder.metrics()
        yield stub, seeder


# A distinct event: (key, metric, minutes ago, value, user). Its duplicates are
# exact resends (what a retrying producer sends).
distinct_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10_000),
        st.sampled_from(sorted(METRICS)),
        st.integers(min_value=1, max_value=600),
        st.decimals(min_value=0, max_value=10_000, places=4, allow_nan=False),
        st.sampled_from(["ann", "bob", "cy"]),
    ),
    min_size=1,
    max_size=120,
    unique_by=lambda t: t[0],
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pool=distinct_events, data=st.data())
async def test_duplicate_laden_batches_aggregate_like_the_distinct_events(
    stack: tuple[usage_pb2_grpc.UsageServiceStub, Seeder], pool: list[Any], data: st.DataObject
) -> None:
    stub, seeder = stack
    org = uid("org")
    sub, _, _ = await seeder.subscription(org)
    sent = data.draw(
        st.lists(st.sampled_from(pool), min_size=len(pool), max_size=3 * len(pool)), label="sent"
    )
    sent = pool + sent  # every distinct event at least once, duplicates in any order
    sent = data.draw(st.permutations(sent), label="order")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(sent)), max_size=5), label="cuts"))
    batches = [sent[a:b] for a, b in itertools.pairwise([0, *cuts, len(sent)]) if b > a]
    concurrent = data.draw(st.booleans(), label="concurrent")

    def to_pb(item: Any) -> Any:
        key, metric, minutes, value, user = item
        aggregation, _prop = METRICS[metric]
        return event(
            org,
            metric,
            f"k{key}",
            str(value) if aggregation in ("sum", "max", "latest") else "",
            at=NOW - timedelta(minutes=minutes),
            properties={"user_id": user},
        )

    sends = [record_batch(stub, [to_pb(i) for i in b]) for b in batches]
    if concurrent:
        replies = await asyncio.gather(*sends)
    else:
        replies = [await s for s in sends]
    assert sum(r.accepted_count for r in replies) == len(pool)
    assert sum(r.rejected_count for r in replies) == 0

    for metric, (aggregation, _) in METRICS.items():
        mine = [i for i in pool if i[1] == metric]
        if not mine:
            continue
        expected = fold(
            Aggregation(aggregation),
            (
                StoredEvent(f"k{key}", NOW - timedelta(minutes=m), Decimal(value), user)
                for key, _, m, value, user in mine
            ),
        )
        assert await aggregate(stub, sub, metric) == (expected.value, expected.event_count), metric
