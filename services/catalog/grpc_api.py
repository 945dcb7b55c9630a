"""gRPC adapter of the catalog: proto -> command -> handler -> proto.

Thin on purpose: request shapes are mapped (``wire``), the rules live in the
domain and run in the handlers, where the metric facts they need are at hand,
so one INVALID_ARGUMENT names every bad field at once. Mutations go through
``run_mutation`` (one transaction, AIP-155 replay); reads use a unit of work
that is never committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from tally.catalog.v1 import catalog_pb2 as api
from tally.catalog.v1 import catalog_pb2_grpc

from services.catalog import wire
from services.catalog.domain import drafts as draft_rules
from services.catalog.domain import metrics as metric_rules
from services.catalog.handlers import metrics as mh
from services.catalog.handlers import packages as ph
from services.catalog.uow import CatalogUnitOfWork
from services.kit.errors import Violations
from services.kit.idempotency import run_mutation
from services.kit.rpc.registry import add_servicer
from services.kit.runtime import ServiceContext

R = TypeVar("R", bound=Message)

# Sub-paths of a message field a mask may name; the whole field is what changes.
_METRIC_MASK_ALIASES = {"rounding.function": "rounding", "rounding.precision": "rounding"}


def _mask_fields(
    mask: FieldMask,
    allowed: frozenset[str],
    v: Violations,
    aliases: dict[str, str] | None = None,
) -> frozenset[str]:
    fields: set[str] = set()
    for i, path in enumerate(mask.paths):
        name = (aliases or {}).get(path, path)
        if name in allowed:
            fields.add(name)
        else:
            v.add(
                f"update_mask.paths[{i}]",
                f"{path!r} cannot be updated; updatable: {', '.join(sorted(allowed))}",
            )
    return frozenset(fields)


def _package_response(view: ph.PackageView) -> Any:
    return wire.package_message(view.package, view.published, view.draft)


class CatalogApi(catalog_pb2_grpc.CatalogServiceServicer):  # type: ignore[misc]
    def __init__(self, ctx: ServiceContext, uow: Callable[[], CatalogUnitOfWork]) -> None:
        self.ctx = ctx
        self.uow = uow

    async def _mutate(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        work: Callable[[CatalogUnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_mutation(self.uow, self.ctx.requests, method, request, response_type, work)

    # -- metrics ---------------------------------------------------------------

    async def CreateMetric(
        self, request: api.CreateMetricRequest, context: grpc.aio.ServicerContext
    ) -> api.CreateMetricResponse:
        cmd = mh.CreateMetric(wire.metric_input(request.metric))

        async def work(uow: CatalogUnitOfWork) -> api.CreateMetricResponse:
            metric = await mh.create_metric(uow, cmd)
            return api.CreateMetricResponse(metric=wire.metric_message(metric))

        return await self._mutate("CreateMetric", request, api.CreateMetricResponse, work)

    async def GetMetric(
        self, request: api.GetMetricRequest, context: grpc.aio.ServicerContext
    ) -> api.GetMetricResponse:
        v = Violations()
        v.require(request.metric_id, "metric_id")
        v.raise_if_any()
        async with self.uow() as uow:
            metric = await mh.get_metric(uow, request.metric_id)
        return api.GetMetricResponse(metric=wire.metric_message(metric))

    async def ListMetrics(
        self, request: api.ListMetricsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListMetricsResponse:
        query = mh.ListMetrics(
            page_size=request.page_size,
            page_token=request.page_token,
            state=wire.METRIC_STATES.get(request.state),
        )
        async with self.uow() as uow:
            page = await mh.list_metrics(uow, query)
        return api.ListMetricsResponse(
            metrics=[wire.metric_message(m) for m in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateMetric(
        self, request: api.UpdateMetricRequest, context: grpc.aio.ServicerContext
    ) -> api.UpdateMetricResponse:
        v = Violations()
        v.require(request.metric.metric_id, "metric.metric_id")
        fields = _mask_fields(
            request.update_mask, metric_rules.MUTABLE_FIELDS, v, _METRIC_MASK_ALIASES
        )
        v.raise_if_any()
        cmd = mh.UpdateMetric(
            metric_id=request.metric.metric_id,
            changes=wire.metric_input(request.metric),
            fields=fields,
        )

        async def work(uow: CatalogUnitOfWork) -> api.UpdateMetricResponse:
            metric = await mh.update_metric(uow, cmd)
            return api.UpdateMetricResponse(metric=wire.metric_message(metric))

        return await self._mutate("UpdateMetric", request, api.UpdateMetricResponse, work)

    async def ArchiveMetric(
        self, request: api.ArchiveMetricRequest, context: grpc.aio.ServicerContext
    ) -> api.ArchiveMetricResponse:
        v = Violations()
        v.require(request.metric_id, "metric_id")
        v.raise_if_any()
        cmd = mh.ArchiveMetric(request.metric_id)

        async def work(uow: CatalogUnitOfWork) -> api.ArchiveMetricResponse:
            metric = await mh.archive_metric(uow, cmd)
            return api.ArchiveMetricResponse(metric=wire.metric_message(metric))

        return await self._mutate("ArchiveMetric", request, api.ArchiveMetricResponse, work)

    # -- packages --------------------------------------------------------------

    async def CreatePackage(
        self, request: api.CreatePackageRequest, context: grpc.aio.ServicerContext
    ) -> api.CreatePackageResponse:
        cmd = ph.CreatePackage(code=request.code, draft=wire.version_input(request.draft))

        async def work(uow: CatalogUnitOfWork) -> api.CreatePackageResponse:
            view = await ph.create_package(uow, cmd)
            return api.CreatePackageResponse(package=_package_response(view))

        return await self._mutate("CreatePackage", request, api.CreatePackageResponse, work)

    async def UpdatePackage(
        self, request: api.UpdatePackageRequest, context: grpc.aio.ServicerContext
    ) -> api.UpdatePackageResponse:
        v = Violations()
        v.require(request.package_id, "package_id")
        fields = _mask_fields(request.update_mask, draft_rules.MUTABLE_FIELDS, v)
        v.raise_if_any()
        cmd = ph.UpdatePackage(
            package_id=request.package_id,
            draft=wire.version_input(request.draft),
            fields=fields,
        )

        async def work(uow: CatalogUnitOfWork) -> api.UpdatePackageResponse:
            view = await ph.update_package(uow, cmd)
            return api.UpdatePackageResponse(package=_package_response(view))

        return await self._mutate("UpdatePackage", request, api.UpdatePackageResponse, work)

    async def PublishPackage(
        self, request: api.PublishPackageRequest, context: grpc.aio.ServicerContext
    ) -> api.PublishPackageResponse:
        v = Violations()
        v.require(request.package_id, "package_id")
        v.raise_if_any()
        cmd = ph.PublishPackage(request.package_id)

        async def work(uow: CatalogUnitOfWork) -> api.PublishPackageResponse:
            view, version = await ph.publish_package(uow, cmd)
            return api.PublishPackageResponse(
                package=_package_response(view),
                published_version=wire.version_message(version),
            )

        return await self._mutate("PublishPackage", request, api.PublishPackageResponse, work)

    async def ArchivePackage(
        self, request: api.ArchivePackageRequest, context: grpc.aio.ServicerContext
    ) -> api.ArchivePackageResponse:
        v = Violations()
        v.require(request.package_id, "package_id")
        v.raise_if_any()
        cmd = ph.ArchivePackage(request.package_id)

        async def work(uow: CatalogUnitOfWork) -> api.ArchivePackageResponse:
            view = await ph.archive_package(uow, cmd)
            return api.ArchivePackageResponse(package=_package_response(view))

        return await self._mutate("ArchivePackage", request, api.ArchivePackageResponse, work)

    async def GetPackage(
        self, request: api.GetPackageRequest, context: grpc.aio.ServicerContext
    ) -> api.GetPackageResponse:
        v = Violations()
        v.require(request.package_id, "package_id")
        v.raise_if_any()
        async with self.uow() as uow:
            view = await ph.get_package(uow, request.package_id, request.org_id)
        return api.GetPackageResponse(package=_package_response(view))

    async def ListPackages(
        self, request: api.ListPackagesRequest, context: grpc.aio.ServicerContext
    ) -> api.ListPackagesResponse:
        query = ph.ListPackages(
            page_size=request.page_size,
            page_token=request.page_token,
            state=wire.PACKAGE_STATES.get(request.state),
            currency_code=request.currency_code,
            org_id=request.org_id,
        )
        async with self.uow() as uow:
            page = await ph.list_packages(uow, query)
        return api.ListPackagesResponse(
            packages=[_package_response(view) for view in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetPackageVersion(
        self, request: api.GetPackageVersionRequest, context: grpc.aio.ServicerContext
    ) -> api.GetPackageVersionResponse:
        v = Violations()
        v.require(request.package_version_id, "package_version_id")
        v.raise_if_any()
        async with self.uow() as uow:
            version = await ph.get_package_version(uow, request.package_version_id, request.org_id)
        return api.GetPackageVersionResponse(package_version=wire.version_message(version))

    async def ListPackageVersions(
        self, request: api.ListPackageVersionsRequest, context: grpc.aio.ServicerContext
    ) -> api.ListPackageVersionsResponse:
        v = Violations()
        v.require(request.package_id, "package_id")
        v.raise_if_any()
        query = ph.ListPackageVersions(
            package_id=request.package_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        async with self.uow() as uow:
            page = await ph.list_package_versions(uow, query)
        return api.ListPackageVersionsResponse(
            package_versions=[wire.version_message(version) for version in page.items],
            next_page_token=page.next_page_token,
        )


def uow_factory(ctx: ServiceContext) -> Callable[[], CatalogUnitOfWork]:
    def make() -> CatalogUnitOfWork:
        return CatalogUnitOfWork(ctx.database, ctx.outbox, on_events_committed=ctx.relay.wake)

    return make


def register(server: grpc.aio.Server, ctx: ServiceContext) -> Sequence[str]:
    api_ = CatalogApi(ctx, uow_factory(ctx))
    return [add_servicer(server, api_, api, catalog_pb2_grpc, "CatalogService")]
