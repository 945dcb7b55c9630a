"""The catalog over real gRPC, PostgreSQL and NATS: every RPC, its errors, its events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tally.catalog.v1 import catalog_pb2 as api
from tally.catalog.v1 import catalog_pb2_grpc
from tally.catalog.v1 import resources_pb2 as pb
from tally.events.v1 import catalog_events_pb2 as events

from services.kit import migrations
from services.kit.bus import EventBus
from services.kit.events import EventEnvelope
from services.kit.pagination import PageToken
from tests.support.catalog import metric, tiers, version
from tests.support.services import service_in_process

pytestmark = pytest.mark.integration

STREAM = "TALLY_CATALOG"
TIMEOUT = 10


@dataclass
class Catalog:
    stub: catalog_pb2_grpc.CatalogServiceStub
    bus: EventBus
    database_url: str


@pytest.fixture(scope="module")
async def catalog(database_url: str, nats_url: str) -> AsyncIterator[Catalog]:
    await migrations.upgrade_async("catalog", database_url)
    async with (
        service_in_process("catalog", database_url, nats_url, outbox_poll_seconds=0.05) as rt,
        grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        bus = await EventBus.connect(nats_url, name="catalog-tests")
        try:
            yield Catalog(catalog_pb2_grpc.CatalogServiceStub(channel), bus, database_url)
        finally:
            await bus.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass
class Failure:
    code: grpc.StatusCode
    reason: str
    violations: dict[str, str]


async def failure(call: Awaitable[Any]) -> Failure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    reason, violations = "", {}
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = {v.field: v.description for v in bad.field_violations}
    return Failure(caught.value.code(), reason, violations)


async def drained(c: Catalog) -> None:
    """Wait until the relay has published every committed event."""
    conn = await asyncpg.connect(c.database_url)
    try:
        for _ in range(200):
            pending = await conn.fetchval(
                "SELECT count(*) FROM catalog.outbox_event WHERE published_at IS NULL"
            )
            if pending == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("outbox not drained")


async def published(c: Catalog, subject: str, aggregate_id: str) -> list[Message]:
    """Every event on ``subject`` about ``aggregate_id`` in the stream, decoded."""
    await drained(c)
    sub = await c.bus.js.pull_subscribe(subject, durable=None, stream=STREAM)
    found: list[Message] = []
    try:
        while True:
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for msg in batch:
                envelope = EventEnvelope.from_message(msg.subject, msg.headers, msg.data)
                if envelope.aggregate_id == aggregate_id:
                    found.append(envelope.decode())
    finally:
        await sub.unsubscribe()
    return found


async def new_metric(c: Catalog, code: str | None = None, **fields: Any) -> pb.BillableMetric:
    reply = await c.stub.CreateMetric(
        api.CreateMetricRequest(metric=metric(code or unique("m"), **fields)), timeout=TIMEOUT
    )
    return reply.metric


def every_model(ids: list[str]) -> list[pb.Charge]:
    """One valid charge of each model, on the metrics ``ids`` (six of them)."""
    return [
        pb.Charge(metric_id=ids[0], standard=pb.StandardProperties(unit_amount="0.000125")),
        pb.Charge(
            metric_id=ids[1],
            display_name="Storage",
            graduated=pb.GraduatedProperties(
                tiers=tiers(("100", "0", "0"), ("1000", "0.5", "10"), (None, "0.25", "0"))
            ),
        ),
        pb.Charge(
            metric_id=ids[2],
            volume=pb.VolumeProperties(tiers=tiers(("10", "2", "0"), (None, "1", "5"))),
            minimum_amount="20",
        ),
        pb.Charge(
            metric_id=ids[3],
            package=pb.PackageProperties(package_size=1000, package_amount="5", free_units=100),
        ),
        pb.Charge(
            metric_id=ids[4],
            percentage=pb.PercentageProperties(
                rate="2.9",
                fixed_amount="0.30",
                free_units_per_events=10,
                free_units_per_total_aggregation="500",
                per_transaction_min_amount="0.5",
                per_transaction_max_amount="20",
            ),
        ),
        pb.Charge(
            metric_id=ids[5],
            graduated_percentage=pb.GraduatedPercentageProperties(
                tiers=[
                    pb.PercentageTier(up_to="10000", rate="3", flat_amount="0"),
                    pb.PercentageTier(rate="1.5", flat_amount="100"),
                ]
            ),
        ),
    ]


LIMITS = [
    pb.FeatureLimit(feature_key="seats", limit="5", enforcement=pb.LIMIT_ENFORCEMENT_HARD),
    pb.FeatureLimit(feature_key="sso", unlimited=True),
]


async def full_package(c: Catalog, code: str | None = None) -> tuple[pb.Package, list[str]]:
    ids = [(await new_metric(c)).metric_id for _ in range(6)]
    reply = await c.stub.CreatePackage(
        api.CreatePackageRequest(
            code=code or unique("pkg"),
            draft=version(charges=every_model(ids), feature_limits=LIMITS),
        ),
        timeout=TIMEOUT,
    )
    return reply.package, ids


async def all_metric_codes(c: Catalog) -> set[str]:
    codes: set[str] = set()
    token = ""
    while True:
        reply = await c.stub.ListMetrics(
            api.ListMetricsRequest(page_size=500, page_token=token), timeout=TIMEOUT
        )
        codes |= {m.code for m in reply.metrics}
        token = reply.next_page_token
        if not token:
            return codes


async def all_package_codes(c: Catalog, **filters: Any) -> list[str]:
    codes: list[str] = []
    token = ""
    while True:
        reply = await c.stub.ListPackages(
            api.ListPackagesRequest(page_size=500, page_token=token, **filters), timeout=TIMEOUT
        )
        codes += [p.code for p in reply.packages]
        token = reply.next_page_token
        if not token:
            return codes


# -- metrics -------------------------------------------------------------------


async def test_create_get_and_list_a_metric_and_its_event(catalog: Catalog) -> None:
    code = unique("api_calls")
    created = await new_metric(
        catalog,
        code,
        aggregation=pb.AGGREGATION_COUNT,
        description="API requests",
        rounding=pb.MetricRounding(function=pb.ROUNDING_FUNCTION_CEIL, precision=0),
    )
    assert created.metric_id.startswith("met_")
    assert created.state == pb.METRIC_STATE_ACTIVE
    assert not created.in_use
    assert created.rounding.function == pb.ROUNDING_FUNCTION_CEIL
    assert created.HasField("create_time") and not created.HasField("archive_time")

    got = await catalog.stub.GetMetric(
        api.GetMetricRequest(metric_id=created.metric_id), timeout=TIMEOUT
    )
    assert got.metric == created
    assert code in await all_metric_codes(catalog)

    [event] = await published(catalog, "tally.catalog.metric.created", created.metric_id)
    assert isinstance(event, events.MetricCreatedEvent)
    assert event.metric == created


async def test_bad_metric_names_every_field_and_leaves_nothing(catalog: Catalog) -> None:
    before = await all_metric_codes(catalog)
    bad = pb.BillableMetric(
        code="Not A Slug",
        aggregation=pb.AGGREGATION_COUNT,
        property_key="amount",
        rounding=pb.MetricRounding(precision=13),
    )
    f = await failure(catalog.stub.CreateMetric(api.CreateMetricRequest(metric=bad)))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f.reason == "INVALID_ARGUMENT"
    assert set(f.violations) == {
        "metric.code",
        "metric.name",
        "metric.property_key",
        "metric.rounding.precision",
    }
    f = await failure(
        catalog.stub.CreateMetric(
            api.CreateMetricRequest(metric=pb.BillableMetric(code="x", name="X"))
        )
    )
    assert set(f.violations) == {"metric.aggregation"}
    f = await failure(
        catalog.stub.CreateMetric(api.CreateMetricRequest(metric=metric("y_sum", property_key="")))
    )
    assert set(f.violations) == {"metric.property_key"}
    assert await all_metric_codes(catalog) == before


async def test_duplicate_metric_code_already_exists(catalog: Catalog) -> None:
    first = await new_metric(catalog)
    f = await failure(catalog.stub.CreateMetric(api.CreateMetricRequest(metric=metric(first.code))))
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "METRIC_CODE_TAKEN")


async def test_create_metric_retry_with_request_id_replays_one_event(catalog: Catalog) -> None:
    request = api.CreateMetricRequest(metric=metric(unique("m")), request_id=str(uuid.uuid4()))
    first = await catalog.stub.CreateMetric(request, timeout=TIMEOUT)
    again = await catalog.stub.CreateMetric(request, timeout=TIMEOUT)
    assert again == first
    assert (
        len(await published(catalog, "tally.catalog.metric.created", first.metric.metric_id)) == 1
    )

    other = api.CreateMetricRequest(metric=metric(unique("m")), request_id=request.request_id)
    f = await failure(catalog.stub.CreateMetric(other))
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")


async def test_unknown_and_missing_ids(catalog: Catalog) -> None:
    stub = catalog.stub
    cases: list[tuple[Awaitable[Any], str]] = [
        (stub.GetMetric(api.GetMetricRequest(metric_id="met_nope")), "METRIC_NOT_FOUND"),
        (
            stub.UpdateMetric(
                api.UpdateMetricRequest(metric=pb.BillableMetric(metric_id="met_nope", name="N"))
            ),
            "METRIC_NOT_FOUND",
        ),
        (stub.ArchiveMetric(api.ArchiveMetricRequest(metric_id="met_nope")), "METRIC_NOT_FOUND"),
        (stub.GetPackage(api.GetPackageRequest(package_id="pkg_nope")), "PACKAGE_NOT_FOUND"),
        (
            stub.UpdatePackage(api.UpdatePackageRequest(package_id="pkg_nope", draft=version())),
            "PACKAGE_NOT_FOUND",
        ),
        (
            stub.PublishPackage(api.PublishPackageRequest(package_id="pkg_nope")),
            "PACKAGE_NOT_FOUND",
        ),
        (
            stub.ArchivePackage(api.ArchivePackageRequest(package_id="pkg_nope")),
            "PACKAGE_NOT_FOUND",
        ),
        (
            stub.ListPackageVersions(api.ListPackageVersionsRequest(package_id="pkg_nope")),
            "PACKAGE_NOT_FOUND",
        ),
        (
            stub.GetPackageVersion(api.GetPackageVersionRequest(package_version_id="pkv_nope")),
            "PACKAGE_VERSION_NOT_FOUND",
        ),
    ]
    for call, reason in cases:
        f = await failure(call)
        assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, reason)
    f = await failure(stub.GetMetric(api.GetMetricRequest()))
    assert (f.code, set(f.violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {"metric_id"})
    f = await failure(stub.GetPackageVersion(api.GetPackageVersionRequest()))
    assert set(f.violations) == {"package_version_id"}


async def test_update_metric_before_and_after_use(catalog: Catalog) -> None:
    m = await new_metric(catalog)
    reply = await catalog.stub.UpdateMetric(
        api.UpdateMetricRequest(
            metric=pb.BillableMetric(
                metric_id=m.metric_id, aggregation=pb.AGGREGATION_MAX, property_key="gb"
            ),
            update_mask=FieldMask(paths=["aggregation", "property_key"]),
        ),
        timeout=TIMEOUT,
    )
    assert (reply.metric.aggregation, reply.metric.property_key) == (pb.AGGREGATION_MAX, "gb")
    assert reply.metric.name == m.name  # outside the mask: untouched
    [updated] = await published(catalog, "tally.catalog.metric.updated", m.metric_id)
    assert updated.metric == reply.metric  # type: ignore[attr-defined]

    f = await failure(
        catalog.stub.UpdateMetric(
            api.UpdateMetricRequest(
                metric=pb.BillableMetric(metric_id=m.metric_id, code="renamed"),
                update_mask=FieldMask(paths=["code", "name"]),
            )
        )
    )
    assert set(f.violations) == {"update_mask.paths[0]"}
    f = await failure(
        catalog.stub.UpdateMetric(
            api.UpdateMetricRequest(
                metric=pb.BillableMetric(metric_id=m.metric_id, code="renamed"),
                update_mask=FieldMask(paths=["name"]),
            )
        )
    )
    assert set(f.violations) == {"metric.code", "metric.name"}

    # Once a published version charges it, only name and description may change.
    pkg = await catalog.stub.CreatePackage(
        api.CreatePackageRequest(
            code=unique("pkg"),
            draft=version(
                charges=[
                    pb.Charge(
                        metric_id=m.metric_id, standard=pb.StandardProperties(unit_amount="1")
                    )
                ]
            ),
        ),
        timeout=TIMEOUT,
    )
    await catalog.stub.PublishPackage(
        api.PublishPackageRequest(package_id=pkg.package.package_id), timeout=TIMEOUT
    )
    got = await catalog.stub.GetMetric(api.GetMetricRequest(metric_id=m.metric_id))
    assert got.metric.in_use
    f = await failure(
        catalog.stub.UpdateMetric(
            api.UpdateMetricRequest(
                metric=pb.BillableMetric(metric_id=m.metric_id, aggregation=pb.AGGREGATION_SUM),
                update_mask=FieldMask(paths=["aggregation"]),
            )
        )
    )
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "METRIC_IN_USE")
    # The whole resource sent back with only the name changed is fine.
    whole = pb.BillableMetric()
    whole.CopyFrom(got.metric)
    whole.name = "Peak storage"
    reply = await catalog.stub.UpdateMetric(api.UpdateMetricRequest(metric=whole), timeout=TIMEOUT)
    assert reply.metric.name == "Peak storage"
    assert reply.metric.aggregation == pb.AGGREGATION_MAX


async def test_archive_metric_rules(catalog: Catalog) -> None:
    m = await new_metric(catalog)
    charge = pb.Charge(metric_id=m.metric_id, standard=pb.StandardProperties(unit_amount="1"))
    pkg = (
        await catalog.stub.CreatePackage(
            api.CreatePackageRequest(code=unique("pkg"), draft=version(charges=[charge])),
            timeout=TIMEOUT,
        )
    ).package
    # Only a draft uses it: archiving is allowed, but then the draft cannot publish.
    other = await new_metric(catalog)
    pkg2 = (
        await catalog.stub.CreatePackage(
            api.CreatePackageRequest(
                code=unique("pkg"),
                draft=version(
                    charges=[
                        pb.Charge(
                            metric_id=other.metric_id,
                            standard=pb.StandardProperties(unit_amount="1"),
                        )
                    ]
                ),
            ),
            timeout=TIMEOUT,
        )
    ).package
    await catalog.stub.ArchiveMetric(api.ArchiveMetricRequest(metric_id=other.metric_id))
    f = await failure(
        catalog.stub.PublishPackage(api.PublishPackageRequest(package_id=pkg2.package_id))
    )
    assert (f.code, f.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DRAFT_USES_ARCHIVED_METRIC",
    )

    await catalog.stub.PublishPackage(
        api.PublishPackageRequest(package_id=pkg.package_id), timeout=TIMEOUT
    )
    f = await failure(catalog.stub.ArchiveMetric(api.ArchiveMetricRequest(metric_id=m.metric_id)))
    assert (f.code, f.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "METRIC_USED_BY_ACTIVE_PACKAGE",
    )
    await catalog.stub.ArchivePackage(
        api.ArchivePackageRequest(package_id=pkg.package_id), timeout=TIMEOUT
    )
    archived = await catalog.stub.ArchiveMetric(
        api.ArchiveMetricRequest(metric_id=m.metric_id), timeout=TIMEOUT
    )
    assert archived.metric.state == pb.METRIC_STATE_ARCHIVED
    assert archived.metric.HasField("archive_time")
    [event] = await published(catalog, "tally.catalog.metric.archived", m.metric_id)
    assert event.metric == archived.metric  # type: ignore[attr-defined]

    f = await failure(catalog.stub.ArchiveMetric(api.ArchiveMetricRequest(metric_id=m.metric_id)))
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "METRIC_ARCHIVED")
    f = await failure(
        catalog.stub.UpdateMetric(
            api.UpdateMetricRequest(
                metric=pb.BillableMetric(metric_id=m.metric_id, name="x"),
                update_mask=FieldMask(paths=["name"]),
            )
        )
    )
    assert f.reason == "METRIC_ARCHIVED"
    # New versions may not use it.
    f = await failure(
        catalog.stub.CreatePackage(
            api.CreatePackageRequest(code=unique("pkg"), draft=version(charges=[charge]))
        )
    )
    assert f.violations.keys() == {"draft.charges[0].metric_id"}
    assert "archived" in f.violations["draft.charges[0].metric_id"]

    active = await catalog.stub.ListMetrics(
        api.ListMetricsRequest(state=pb.METRIC_STATE_ARCHIVED, page_size=500)
    )
    assert m.code in {x.code for x in active.metrics}
    assert all(x.state == pb.METRIC_STATE_ARCHIVED for x in active.metrics)


async def test_metric_pagination_walks_every_page(catalog: Catalog) -> None:
    prefix = unique("page")
    made = {(await new_metric(catalog, f"{prefix}_{i:02d}")).code for i in range(7)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await catalog.stub.ListMetrics(
            api.ListMetricsRequest(page_size=3, page_token=token), timeout=TIMEOUT
        )
        assert len(reply.metrics) <= 3
        seen += [m.code for m in reply.metrics]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert made <= set(seen)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert pages >= 3
    f = await failure(catalog.stub.ListMetrics(api.ListMetricsRequest(page_token="garbage!")))
    assert f.violations.keys() == {"page_token"}
    forged = PageToken(after=[1, 2]).encode({"state": ""})
    f = await failure(catalog.stub.ListMetrics(api.ListMetricsRequest(page_token=forged)))
    assert (f.code, f.violations.keys()) == (grpc.StatusCode.INVALID_ARGUMENT, {"page_token"})


# -- packages ------------------------------------------------------------------


async def test_create_package_with_every_charge_model(catalog: Catalog) -> None:
    package, ids = await full_package(catalog)
    assert package.package_id.startswith("pkg_")
    assert package.state == pb.PACKAGE_STATE_DRAFT
    assert not package.HasField("published_version")
    draft = package.draft_version
    assert (draft.version, draft.state) == (1, pb.PACKAGE_VERSION_STATE_DRAFT)
    assert draft.package_code == package.code
    assert [c.metric_id for c in draft.charges] == ids
    assert [c.WhichOneof("properties") for c in draft.charges] == [
        "standard",
        "graduated",
        "volume",
        "package",
        "percentage",
        "graduated_percentage",
    ]
    assert all(c.charge_id.startswith("chg_") for c in draft.charges)
    assert draft.charges[0].display_name  # defaulted to the metric's name
    assert draft.charges[1].graduated.tiers[1].flat_amount == "10"
    assert not draft.charges[1].graduated.tiers[2].HasField("up_to")
    assert draft.charges[2].minimum_amount == "20"
    assert draft.charges[4].percentage.per_transaction_max_amount == "20"
    assert draft.base_fee_amount == "49.00"
    assert [f.feature_key for f in draft.feature_limits] == ["seats", "sso"]

    got = await catalog.stub.GetPackage(
        api.GetPackageRequest(package_id=package.package_id), timeout=TIMEOUT
    )
    assert got.package == package
    # A customer cannot see a package that was never published.
    f = await failure(
        catalog.stub.GetPackage(
            api.GetPackageRequest(package_id=package.package_id, org_id="org_1")
        )
    )
    assert f.reason == "PACKAGE_NOT_FOUND"
    f = await failure(
        catalog.stub.GetPackageVersion(
            api.GetPackageVersionRequest(
                package_version_id=draft.package_version_id, org_id="org_1"
            )
        )
    )
    assert f.reason == "PACKAGE_VERSION_NOT_FOUND"
    admin = await catalog.stub.GetPackageVersion(
        api.GetPackageVersionRequest(package_version_id=draft.package_version_id)
    )
    assert admin.package_version == draft


async def test_bad_package_names_every_field_and_leaves_nothing(catalog: Catalog) -> None:
    before = await all_package_codes(catalog)
    m = await new_metric(catalog)
    draft = version(
        name="",
        currency_code="usd",
        billing_interval=pb.BILLING_INTERVAL_UNSPECIFIED,
        base_fee_amount="-1",
        trial_days=-3,
        charges=[
            pb.Charge(
                metric_id=m.metric_id,
                graduated=pb.GraduatedProperties(
                    tiers=tiers(("100", "1", "0"), ("50", "0.5", "0"), ("200", "0.1", "0"))
                ),
            ),
            pb.Charge(metric_id="met_missing", standard=pb.StandardProperties(unit_amount="1")),
            pb.Charge(
                metric_id=m.metric_id,
                volume=pb.VolumeProperties(tiers=tiers((None, "1", "0"), ("10", "1", "0"))),
            ),
            pb.Charge(
                metric_id=m.metric_id,
                package=pb.PackageProperties(package_size=0, package_amount="0.0000000000001"),
            ),
            pb.Charge(
                metric_id=m.metric_id,
                percentage=pb.PercentageProperties(
                    rate="101",
                    per_transaction_min_amount="5",
                    per_transaction_max_amount="1",
                ),
            ),
            pb.Charge(metric_id=m.metric_id),
        ],
        feature_limits=[
            pb.FeatureLimit(feature_key="seats", limit="-1"),
            pb.FeatureLimit(feature_key="seats", unlimited=True, metric_code="nope"),
        ],
    )
    f = await failure(
        catalog.stub.CreatePackage(api.CreatePackageRequest(code="Bad Code", draft=draft))
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {
        "code",
        "draft.name",
        "draft.currency_code",
        "draft.billing_interval",
        "draft.base_fee_amount",
        "draft.trial_days",
        "draft.charges[0].graduated.tiers[1].up_to",
        "draft.charges[0].graduated.tiers[2].up_to",
        "draft.charges[1].metric_id",
        "draft.charges[2].metric_id",
        "draft.charges[2].volume.tiers[0].up_to",
        "draft.charges[2].volume.tiers[1].up_to",
        "draft.charges[3].metric_id",
        "draft.charges[3].package.package_size",
        "draft.charges[3].package.package_amount",
        "draft.charges[4].metric_id",
        "draft.charges[4].percentage.rate",
        "draft.charges[4].percentage.per_transaction_max_amount",
        "draft.charges[5].metric_id",
        "draft.charges[5].properties",
        "draft.feature_limits[0].limit",
        "draft.feature_limits[0].enforcement",
        "draft.feature_limits[1].feature_key",
        "draft.feature_limits[1].metric_code",
    }
    assert "ISO 4217" in f.violations["draft.currency_code"]
    assert "12 decimal places" in f.violations["draft.charges[3].package.package_amount"]
    assert await all_package_codes(catalog) == before


async def test_duplicate_package_code_already_exists(catalog: Catalog) -> None:
    code = unique("pkg")
    await catalog.stub.CreatePackage(
        api.CreatePackageRequest(code=code, draft=version()), timeout=TIMEOUT
    )
    f = await failure(
        catalog.stub.CreatePackage(api.CreatePackageRequest(code=code, draft=version()))
    )
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "PACKAGE_CODE_TAKEN")


async def test_publish_emits_the_whole_version_once(catalog: Catalog) -> None:
    package, ids = await full_package(catalog)
    request = api.PublishPackageRequest(package_id=package.package_id, request_id=str(uuid.uuid4()))
    reply = await catalog.stub.PublishPackage(request, timeout=TIMEOUT)
    again = await catalog.stub.PublishPackage(request, timeout=TIMEOUT)
    assert again == reply
    assert reply.package.state == pb.PACKAGE_STATE_ACTIVE
    assert not reply.package.HasField("draft_version")
    v1 = reply.published_version
    assert (v1.version, v1.state) == (1, pb.PACKAGE_VERSION_STATE_PUBLISHED)
    assert v1.HasField("publish_time")
    assert reply.package.published_version == v1

    [event] = await published(catalog, "tally.catalog.package.published", package.package_id)
    assert isinstance(event, events.PackagePublishedEvent)
    assert event.package_version == v1
    assert event.previous_package_version_id == ""
    ev = event.package_version
    assert (ev.currency_code, ev.billing_interval) == ("USD", pb.BILLING_INTERVAL_MONTHLY)
    assert (ev.base_fee_amount, ev.base_fee_timing, ev.trial_days) == (
        "49.00",
        pb.BASE_FEE_TIMING_IN_ADVANCE,
        14,
    )
    assert all(c.metric_code for c in ev.charges)
    assert ev.charges[5].graduated_percentage.tiers[1].flat_amount == "100"
    assert ev.feature_limits[0].limit == "5"

    f = await failure(
        catalog.stub.PublishPackage(api.PublishPackageRequest(package_id=package.package_id))
    )
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_DRAFT_VERSION")

    # Metrics the published version charges are now in use.
    m = await catalog.stub.GetMetric(api.GetMetricRequest(metric_id=ids[0]))
    assert m.metric.in_use


async def test_versions_drafts_and_portal_visibility(catalog: Catalog) -> None:
    package, _ = await full_package(catalog)
    pid = package.package_id
    first = await catalog.stub.PublishPackage(
        api.PublishPackageRequest(package_id=pid), timeout=TIMEOUT
    )
    v1 = first.published_version

    # No draft: an update starts one from the published version, only the masked field changes.
    updated = await catalog.stub.UpdatePackage(
        api.UpdatePackageRequest(
            package_id=pid,
            draft=pb.PackageVersion(name="Growth 2026", currency_code="not used"),
            update_mask=FieldMask(paths=["name"]),
        ),
        timeout=TIMEOUT,
    )
    draft = updated.package.draft_version
    assert (draft.version, draft.state, draft.name) == (
        2,
        pb.PACKAGE_VERSION_STATE_DRAFT,
        "Growth 2026",
    )
    assert draft.currency_code == "USD"
    assert [c.charge_id for c in draft.charges] == [c.charge_id for c in v1.charges]
    assert updated.package.published_version == v1  # the published version did not move

    # Editing the draft again edits the same draft.
    again = await catalog.stub.UpdatePackage(
        api.UpdatePackageRequest(
            package_id=pid,
            draft=pb.PackageVersion(trial_days=0, charges=list(draft.charges[:2])),
            update_mask=FieldMask(paths=["trial_days", "charges"]),
        ),
        timeout=TIMEOUT,
    )
    draft2 = again.package.draft_version
    assert draft2.package_version_id == draft.package_version_id
    assert (draft2.trial_days, len(draft2.charges), draft2.name) == (0, 2, "Growth 2026")
    assert [c.charge_id for c in draft2.charges] == [c.charge_id for c in v1.charges[:2]]

    # Bad update: nothing changes.
    f = await failure(
        catalog.stub.UpdatePackage(
            api.UpdatePackageRequest(
                package_id=pid,
                draft=pb.PackageVersion(currency_code="XYZ"),
                update_mask=FieldMask(paths=["currency_code", "state"]),
            )
        )
    )
    assert set(f.violations) == {"update_mask.paths[1]"}
    f = await failure(
        catalog.stub.UpdatePackage(
            api.UpdatePackageRequest(
                package_id=pid,
                draft=pb.PackageVersion(currency_code="XYZ"),
                update_mask=FieldMask(paths=["currency_code"]),
            )
        )
    )
    assert set(f.violations) == {"draft.currency_code"}

    # Customers see the published version only; admins see the draft too.
    portal = await catalog.stub.GetPackage(api.GetPackageRequest(package_id=pid, org_id="org_1"))
    assert portal.package.published_version == v1
    assert not portal.package.HasField("draft_version")
    admin = await catalog.stub.GetPackage(api.GetPackageRequest(package_id=pid))
    assert admin.package.draft_version == draft2

    second = await catalog.stub.PublishPackage(
        api.PublishPackageRequest(package_id=pid), timeout=TIMEOUT
    )
    assert second.published_version.version == 2
    events_ = await published(catalog, "tally.catalog.package.published", pid)
    assert [e.package_version.version for e in events_] == [1, 2]  # type: ignore[attr-defined]
    assert events_[1].previous_package_version_id == v1.package_version_id  # type: ignore[attr-defined]

    # A third draft, then walk the versions newest first, one per page.
    await catalog.stub.UpdatePackage(
        api.UpdatePackageRequest(
            package_id=pid,
            draft=pb.PackageVersion(description="next"),
            update_mask=FieldMask(paths=["description"]),
        ),
        timeout=TIMEOUT,
    )
    seen: list[tuple[int, int]] = []
    token = ""
    while True:
        page = await catalog.stub.ListPackageVersions(
            api.ListPackageVersionsRequest(package_id=pid, page_size=1, page_token=token),
            timeout=TIMEOUT,
        )
        seen += [(v.version, v.state) for v in page.package_versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [
        (3, pb.PACKAGE_VERSION_STATE_DRAFT),
        (2, pb.PACKAGE_VERSION_STATE_PUBLISHED),
        (1, pb.PACKAGE_VERSION_STATE_PUBLISHED),
    ]
    # Published versions stay readable by customers.
    old = await catalog.stub.GetPackageVersion(
        api.GetPackageVersionRequest(package_version_id=v1.package_version_id, org_id="org_1")
    )
    assert old.package_version == v1


async def test_archive_package_and_list_filters(catalog: Catalog) -> None:
    eur = (
        await catalog.stub.CreatePackage(
            api.CreatePackageRequest(
                code=unique("eur"), draft=version(currency_code="EUR", base_fee_amount="0")
            ),
            timeout=TIMEOUT,
        )
    ).package
    await catalog.stub.PublishPackage(api.PublishPackageRequest(package_id=eur.package_id))
    gone = (
        await catalog.stub.CreatePackage(
            api.CreatePackageRequest(code=unique("gone"), draft=version()), timeout=TIMEOUT
        )
    ).package
    v1 = (
        await catalog.stub.PublishPackage(api.PublishPackageRequest(package_id=gone.package_id))
    ).published_version
    never = (
        await catalog.stub.CreatePackage(
            api.CreatePackageRequest(code=unique("never"), draft=version()), timeout=TIMEOUT
        )
    ).package

    archived = await catalog.stub.ArchivePackage(
        api.ArchivePackageRequest(package_id=gone.package_id, request_id="archive-1"),
        timeout=TIMEOUT,
    )
    assert archived.package.state == pb.PACKAGE_STATE_ARCHIVED
    assert archived.package.HasField("archive_time")
    assert archived.package.published_version == v1  # still readable
    again = await catalog.stub.ArchivePackage(
        api.ArchivePackageRequest(package_id=gone.package_id, request_id="archive-1")
    )
    assert again == archived
    [event] = await published(catalog, "tally.catalog.package.archived", gone.package_id)
    assert isinstance(event, events.PackageArchivedEvent)
    assert (event.package_code, event.latest_package_version_id) == (
        gone.code,
        v1.package_version_id,
    )

    for call in (
        catalog.stub.ArchivePackage(api.ArchivePackageRequest(package_id=gone.package_id)),
        catalog.stub.UpdatePackage(
            api.UpdatePackageRequest(package_id=gone.package_id, draft=version())
        ),
        catalog.stub.PublishPackage(api.PublishPackageRequest(package_id=gone.package_id)),
    ):
        f = await failure(call)
        assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PACKAGE_ARCHIVED")

    portal = await all_package_codes(catalog, org_id="org_1")
    assert eur.code in portal and gone.code not in portal and never.code not in portal
    admin = await all_package_codes(catalog)
    assert {eur.code, gone.code, never.code} <= set(admin)
    assert admin == sorted(admin)
    assert await all_package_codes(catalog, currency_code="EUR") == [eur.code]
    archived_codes = await all_package_codes(catalog, state=pb.PACKAGE_STATE_ARCHIVED)
    assert gone.code in archived_codes and eur.code not in archived_codes
    assert await all_package_codes(catalog, org_id="org_1", state=pb.PACKAGE_STATE_DRAFT) == []
    # Customers' lists never carry drafts.
    reply = await catalog.stub.ListPackages(api.ListPackagesRequest(org_id="org_1", page_size=500))
    assert not any(p.HasField("draft_version") for p in reply.packages)


async def test_package_pagination_walks_every_page(catalog: Catalog) -> None:
    made = set()
    for _ in range(5):
        reply = await catalog.stub.CreatePackage(
            api.CreatePackageRequest(code=unique("walk"), draft=version()), timeout=TIMEOUT
        )
        made.add(reply.package.code)
    seen: list[str] = []
    token = ""
    while True:
        page = await catalog.stub.ListPackages(
            api.ListPackagesRequest(page_size=2, page_token=token, state=pb.PACKAGE_STATE_DRAFT),
            timeout=TIMEOUT,
        )
        seen += [p.code for p in page.packages]
        token = page.next_page_token
        if not token:
            break
    assert made <= set(seen)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    # A token is bound to the filters it was issued for.
    first = await catalog.stub.ListPackages(
        api.ListPackagesRequest(page_size=1, state=pb.PACKAGE_STATE_DRAFT)
    )
    f = await failure(
        catalog.stub.ListPackages(
            api.ListPackagesRequest(page_size=1, page_token=first.next_page_token)
        )
    )
    assert f.violations.keys() == {"page_token"}


async def test_concurrent_writers_take_turns(catalog: Catalog) -> None:
    code = unique("race")
    results = await asyncio.gather(
        *(
            catalog.stub.CreateMetric(api.CreateMetricRequest(metric=metric(code)), timeout=TIMEOUT)
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, api.CreateMetricResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 3
    assert {e.code() for e in lost} == {grpc.StatusCode.ALREADY_EXISTS}

    package, _ = await full_package(catalog)
    results = await asyncio.gather(
        *(
            catalog.stub.PublishPackage(
                api.PublishPackageRequest(package_id=package.package_id), timeout=TIMEOUT
            )
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, api.PublishPackageResponse) for r in results) == 1
    assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.FAILED_PRECONDITION
    }
    assert len(await published(catalog, "tally.catalog.package.published", package.package_id)) == 1
