"""Other systems' names for metrics and subscriptions (metric aliases,
subscription external ids) across catalog, subscriptions and usage, through
their gRPC APIs.

The catalog keeps a metric's aliases unique among live metrics' codes and
aliases (field violations otherwise) and announces them in its metric events;
the usage service learns them from those events and counts an event named by
an alias into the metric's aggregate, while a name nothing answers to lands in
the rejection feed as UNKNOWN_METRIC.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from tally.catalog.v1 import catalog_pb2 as catalog_api
from tally.catalog.v1 import catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as catalog
from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from tally.usage.v1 import resources_pb2 as usage
from tally.usage.v1 import usage_pb2 as usage_api
from tally.usage.v1 import usage_pb2_grpc

from tests.support.catalog import publish_per_call_package
from tests.support.gateway import services_for_gateway
from tests.support.subscriptions import details
from tests.support.usage import aggregate, eventually, record_batch

pytestmark = pytest.mark.integration

TIMEOUT = 10
REJECTED = usage.USAGE_EVENT_STATUS_REJECTED


@dataclass
class Apis:
    catalog: catalog_pb2_grpc.CatalogServiceStub
    subscriptions: subscriptions_pb2_grpc.SubscriptionsServiceStub
    usage: usage_pb2_grpc.UsageServiceStub


@pytest.fixture(scope="module")
async def apis(database_url: str, nats_url: str) -> AsyncIterator[Apis]:
    async with services_for_gateway(database_url, nats_url) as settings:
        channels = [
            grpc.aio.insecure_channel(addr)
            for addr in (settings.catalog_addr, settings.subscriptions_addr, settings.usage_addr)
        ]
        yield Apis(
            catalog_pb2_grpc.CatalogServiceStub(channels[0]),
            subscriptions_pb2_grpc.SubscriptionsServiceStub(channels[1]),
            usage_pb2_grpc.UsageServiceStub(channels[2]),
        )
        for channel in channels:
            await channel.close()


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


async def _set_aliases(apis: Apis, metric_id: str, aliases: list[str]) -> catalog.BillableMetric:
    reply: catalog_api.UpdateMetricResponse = await apis.catalog.UpdateMetric(
        catalog_api.UpdateMetricRequest(
            metric=catalog.BillableMetric(metric_id=metric_id, aliases=aliases),
            update_mask=FieldMask(paths=["aliases"]),
        ),
        timeout=TIMEOUT,
    )
    return reply.metric


async def _refused(call: object) -> dict[str, str]:
    """The field violations of an INVALID_ARGUMENT answer."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return details(caught.value)[2]


async def test_an_event_named_by_an_alias_counts_into_the_metric(
    apis: Apis, database_url: str
) -> None:
    s = _suffix()
    code, alias, dotted = f"calls_{s}", f"API Request {s}", f"api.request.{s}"
    metric, package = await publish_per_call_package(
        apis.catalog, metric_code=code, package_code=f"pkg_{s}", timeout=TIMEOUT, trial_days=0
    )
    # Aliases change while the metric is in use: they only route events.
    updated = await _set_aliases(apis, metric.metric_id, [alias, dotted])
    assert list(updated.aliases) == [alias, dotted]
    got = await apis.catalog.GetMetric(
        catalog_api.GetMetricRequest(metric_id=metric.metric_id), timeout=TIMEOUT
    )
    assert list(got.metric.aliases) == [alias, dotted]

    org = f"org_alias_{s}"
    sub = await _subscribe(apis, org, package.package_id)
    batch = [
        usage.UsageEvent(org_id=org, metric_code=code, idempotency_key=f"{s}-by-code"),
        usage.UsageEvent(org_id=org, metric_code=alias, idempotency_key=f"{s}-by-alias"),
        usage.UsageEvent(org_id=org, metric_code=dotted, idempotency_key=f"{s}-by-dotted"),
        # The same key under another name of the same metric is the same event.
        usage.UsageEvent(org_id=org, metric_code=code, idempotency_key=f"{s}-by-alias"),
    ]
    reply = await _eventually_recorded(apis, batch)
    assert [r.status for r in reply.results] == [
        usage.USAGE_EVENT_STATUS_ACCEPTED,
        usage.USAGE_EVENT_STATUS_ACCEPTED,
        usage.USAGE_EVENT_STATUS_ACCEPTED,
        usage.USAGE_EVENT_STATUS_DUPLICATE,
    ]
    assert await aggregate(apis.usage, sub, code) == (Decimal(3), 3)

    # An alias taken away stops routing: that name is now an unknown metric, kept in the feed.
    await _set_aliases(apis, metric.metric_id, [dotted])
    gone = usage.UsageEvent(org_id=org, metric_code=alias, idempotency_key=f"{s}-gone")
    unknown = usage.UsageEvent(org_id=org, metric_code=f"nope {s}", idempotency_key=f"{s}-nope")
    await _usage_knows(database_url, code, [dotted])
    late = (await record_batch(apis.usage, [gone])).results[0]
    assert late.status == REJECTED
    assert late.reason == usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC
    other = await record_batch(apis.usage, [unknown])
    assert other.results[0].reason == usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC
    feed = await apis.usage.ListRejectedEvents(
        # The warm-up's NO_ACTIVE_SUBSCRIPTION answers are in the feed too.
        usage_api.ListRejectedEventsRequest(
            org_id=org, reason=usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC
        ),
        timeout=TIMEOUT,
    )
    assert sorted((r.idempotency_key, r.metric_code, r.reason) for r in feed.rejected_events) == [
        (f"{s}-gone", alias, usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC),
        (f"{s}-nope", f"nope {s}", usage.USAGE_REJECTION_REASON_UNKNOWN_METRIC),
    ]
    assert await aggregate(apis.usage, sub, code) == (Decimal(3), 3)


async def test_a_name_another_live_metric_answers_to_is_refused(apis: Apis) -> None:
    s = _suffix()
    first = await _create(apis, f"first_{s}", [f"First {s}"])
    refused = await _refused(
        apis.catalog.CreateMetric(
            catalog_api.CreateMetricRequest(
                metric=_metric(f"second_{s}", [f"ok {s}", f"First {s}", f"first_{s}"])
            ),
            timeout=TIMEOUT,
        )
    )
    assert set(refused) == {"metric.aliases[1]", "metric.aliases[2]"}
    assert f"first_{s}" in refused["metric.aliases[1]"]
    # A code may not be another metric's alias either.
    second = await _create(apis, f"second_{s}", [f"x{s}_alias"])
    assert set(
        await _refused(
            apis.catalog.CreateMetric(
                catalog_api.CreateMetricRequest(metric=_metric(f"x{s}_alias", [])),
                timeout=TIMEOUT,
            )
        )
    ) == {"metric.code"}
    # Updating into another metric's name is refused; the metric keeps its own.
    assert set(
        await _refused(
            apis.catalog.UpdateMetric(
                catalog_api.UpdateMetricRequest(
                    metric=catalog.BillableMetric(
                        metric_id=second.metric_id, aliases=[f"x{s}_alias", f"First {s}"]
                    ),
                    update_mask=FieldMask(paths=["aliases"]),
                ),
                timeout=TIMEOUT,
            )
        )
    ) == {"metric.aliases[1]"}
    # Bad spellings and repeats, each named.
    assert set(
        await _refused(
            apis.catalog.CreateMetric(
                catalog_api.CreateMetricRequest(
                    metric=_metric(f"third_{s}", ["", " pad", f"third_{s}", "a\tb", "r", "r"])
                ),
                timeout=TIMEOUT,
            )
        )
    ) == {f"metric.aliases[{i}]" for i in (0, 1, 2, 3, 5)}
    # Once the first metric is archived its names are free again.
    await apis.catalog.ArchiveMetric(
        catalog_api.ArchiveMetricRequest(metric_id=first.metric_id), timeout=TIMEOUT
    )
    again = await _create(apis, f"fourth_{s}", [f"First {s}"])
    assert list(again.aliases) == [f"First {s}"]


async def test_an_event_naming_a_subscription_by_external_id_counts_into_it(apis: Apis) -> None:
    s = _suffix()
    code, org, external = f"ext_{s}", f"org_ext_{s}", f"Lago Sub/{s}"
    _, package = await publish_per_call_package(
        apis.catalog, metric_code=code, package_code=f"pkg_ext_{s}", timeout=TIMEOUT, trial_days=0
    )
    sub = await _subscribe(apis, org, package.package_id, external_id=external)
    got = await apis.subscriptions.GetSubscription(
        subscriptions_pb2.GetSubscriptionRequest(subscription_id=sub, org_id=org), timeout=TIMEOUT
    )
    assert got.subscription.external_id == external

    # One meaning per org: a second live subscription with it is refused, a
    # malformed one names the field.
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await apis.subscriptions.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id=org,
                package_id=package.package_id,
                external_id=external,
                allow_multiple=True,
            ),
            timeout=TIMEOUT,
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(taken.value)[0] == "SUBSCRIPTION_EXTERNAL_ID_TAKEN"
    bad = await _refused(
        apis.subscriptions.CreateSubscription(
            subscriptions_pb2.CreateSubscriptionRequest(
                org_id=org, package_id=package.package_id, external_id=" padded"
            ),
            timeout=TIMEOUT,
        )
    )
    assert set(bad) == {"external_id"}

    def named(key: str, external_id: str, **kw: str) -> usage.UsageEvent:
        return usage.UsageEvent(
            org_id=org,
            metric_code=code,
            idempotency_key=f"{s}-{key}",
            external_subscription_id=external_id,
            **kw,
        )

    reply = await _eventually_recorded(apis, [named("by-ext", external), named("by-id", sub)])
    assert [r.status for r in reply.results] == [usage.USAGE_EVENT_STATUS_ACCEPTED] * 2
    misses = await record_batch(
        apis.usage,
        [
            named("nobody", f"nobody-{s}"),
            # Another org's external id names nothing here.
            usage.UsageEvent(
                org_id=f"other_{s}",
                metric_code=code,
                idempotency_key=f"{s}-other",
                external_subscription_id=external,
            ),
            named("mismatch", external, subscription_id=f"sub-{s}"),
        ],
    )
    assert [(r.status, r.reason) for r in misses.results] == [
        (REJECTED, usage.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION)
    ] * 3
    assert await aggregate(apis.usage, sub, code) == (Decimal(2), 2)
    feed = await apis.usage.ListRejectedEvents(
        usage_api.ListRejectedEventsRequest(
            org_id=org, reason=usage.USAGE_REJECTION_REASON_UNKNOWN_SUBSCRIPTION
        ),
        timeout=TIMEOUT,
    )
    found = {r.idempotency_key: r.message for r in feed.rejected_events}
    assert set(found) == {f"{s}-nobody", f"{s}-mismatch"}
    assert f"nobody-{s}" in found[f"{s}-nobody"]


def _metric(code: str, aliases: list[str]) -> catalog.BillableMetric:
    return catalog.BillableMetric(
        code=code, name=code, aggregation=catalog.AGGREGATION_COUNT, aliases=aliases
    )


async def _create(apis: Apis, code: str, aliases: list[str]) -> catalog.BillableMetric:
    reply: catalog_api.CreateMetricResponse = await apis.catalog.CreateMetric(
        catalog_api.CreateMetricRequest(metric=_metric(code, aliases)), timeout=TIMEOUT
    )
    return reply.metric


async def _subscribe(apis: Apis, org: str, package_id: str, external_id: str = "") -> str:
    """Subscribe once the subscriptions service has learnt the package from its event."""
    made: list[str] = []

    async def subscribed() -> bool:
        try:
            reply = await apis.subscriptions.CreateSubscription(
                subscriptions_pb2.CreateSubscriptionRequest(
                    org_id=org,
                    package_id=package_id,
                    request_id=f"sub-{org}",
                    external_id=external_id,
                ),
                timeout=TIMEOUT,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            return False
        made.append(reply.subscription.subscription_id)
        return True

    await eventually(subscribed, what="the subscription")
    return made[-1]


async def _eventually_recorded(
    apis: Apis, batch: list[usage.UsageEvent]
) -> usage_api.RecordUsageBatchResponse:
    """The batch once usage has learnt the metric, its aliases and the subscription
    (a rejected event is not stored, so sending again is safe)."""
    replies: list[usage_api.RecordUsageBatchResponse] = []

    async def recorded() -> bool:
        replies.append(await record_batch(apis.usage, batch))
        return all(r.status != REJECTED for r in replies[-1].results)

    await eventually(recorded, what="every event counted")
    return replies[-1]


async def _usage_knows(database_url: str, code: str, aliases: list[str]) -> None:
    """Wait for the usage service's projection to hold the catalog's latest
    aliases: an event sent before would still count under the old ones."""

    async def known() -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            held = await conn.fetchval("SELECT aliases FROM usage.metric WHERE code = $1", code)
        finally:
            await conn.close()
        return list(held or []) == aliases

    await eventually(known, what=f"usage learnt the aliases of {code}")
