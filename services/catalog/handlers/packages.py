"""Use cases of packages and their versions. Like the metric use cases, none of
them commits; mutations lock the package row first so two editors of one
package take turns instead of racing for the draft."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tally.events.v1 import catalog_events_pb2 as events

from services.catalog import wire
from services.catalog.domain import reasons
from services.catalog.domain.drafts import (
    MUTABLE_FIELDS,
    VersionInput,
    as_input,
    merge,
    referenced_metrics,
    validate_version,
)
from services.catalog.domain.packages import (
    Package,
    PackageVersion,
    ensure_metrics_active,
    ensure_not_archived,
    ensure_publishable,
)
from services.catalog.domain.values import PackageState, VersionState, check_slug
from services.catalog.handlers.common import Page, after_key, bounded_page_size, new_id
from services.catalog.uow import CatalogUnitOfWork
from services.kit.errors import AlreadyExists, NotFound, Violations
from services.kit.pagination import PageToken, next_page_token


@dataclass(frozen=True)
class PackageView:
    """A package as the API shows it: its latest published version and its draft."""

    package: Package
    published: PackageVersion | None
    draft: PackageVersion | None


@dataclass(frozen=True)
class CreatePackage:
    code: str
    draft: VersionInput


@dataclass(frozen=True)
class UpdatePackage:
    package_id: str
    draft: VersionInput
    # Mask fields already checked against MUTABLE_FIELDS; empty = all of them.
    fields: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PublishPackage:
    package_id: str


@dataclass(frozen=True)
class ArchivePackage:
    package_id: str


@dataclass(frozen=True)
class ListPackages:
    page_size: int = 0
    page_token: str = ""
    state: PackageState | None = None
    currency_code: str = ""
    # A customer organisation is asking (portal): active packages, no drafts.
    org_id: str = ""


@dataclass(frozen=True)
class ListPackageVersions:
    package_id: str
    page_size: int = 0
    page_token: str = ""


def package_not_found(package_id: str) -> NotFound:
    return NotFound(
        f"no package has id {package_id!r}",
        reason=reasons.PACKAGE_NOT_FOUND,
        metadata={"package_id": package_id},
    )


def version_not_found(version_id: str) -> NotFound:
    return NotFound(
        f"no package version has id {version_id!r}",
        reason=reasons.PACKAGE_VERSION_NOT_FOUND,
        metadata={"package_version_id": version_id},
    )


async def _locked_package(uow: CatalogUnitOfWork, package_id: str) -> Package:
    package = await uow.repo.get_package(package_id, for_update=True)
    if package is None:
        raise package_not_found(package_id)
    return package


async def _published(uow: CatalogUnitOfWork, package: Package) -> PackageVersion | None:
    if package.published_version_id is None:
        return None
    return await uow.repo.get_version(package.published_version_id)


async def create_package(uow: CatalogUnitOfWork, cmd: CreatePackage) -> PackageView:
    v = Violations()
    check_slug(cmd.code, "code", v)
    ids, codes = referenced_metrics(cmd.draft)
    by_id, by_code = await uow.repo.metric_refs(ids, codes)
    content = validate_version(
        cmd.draft,
        path="draft",
        metrics_by_id=by_id,
        metrics_by_code=by_code,
        charge_ids={},
        new_charge_id=lambda: new_id("chg"),
        v=v,
    )
    v.raise_if_any()
    assert content is not None
    now = uow.clock.now()
    package = Package(
        package_id=new_id("pkg"),
        code=cmd.code,
        state=PackageState.DRAFT,
        published_version_id=None,
        create_time=now,
        update_time=now,
        archive_time=None,
    )
    if not await uow.repo.add_package(package):
        raise AlreadyExists(
            f"a package with code {cmd.code!r} already exists",
            reason=reasons.PACKAGE_CODE_TAKEN,
            metadata={"code": cmd.code},
        )
    draft = PackageVersion(
        package_version_id=new_id("pkv"),
        package_id=package.package_id,
        package_code=package.code,
        version=1,
        state=VersionState.DRAFT,
        content=content,
        create_time=now,
        update_time=now,
        publish_time=None,
    )
    await uow.repo.add_version(draft)
    return PackageView(package, None, draft)


async def update_package(uow: CatalogUnitOfWork, cmd: UpdatePackage) -> PackageView:
    package = await _locked_package(uow, cmd.package_id)
    ensure_not_archived(package)
    draft = await uow.repo.draft_of(package.package_id)
    published = await _published(uow, package)
    base = draft or published
    if base is None:  # a package is born with a draft and publishing leaves a version
        raise RuntimeError(f"package {package.package_id} has neither draft nor version")
    merged = merge(as_input(base.content), cmd.draft, cmd.fields or MUTABLE_FIELDS)
    ids, codes = referenced_metrics(merged)
    by_id, by_code = await uow.repo.metric_refs(ids, codes)
    # A charge keeps its id across versions while it rates the same metric.
    charge_ids = {
        c.metric_id: c.charge_id
        for version in (published, draft)
        if version is not None
        for c in version.content.charges
    }
    v = Violations()
    content = validate_version(
        merged,
        path="draft",
        metrics_by_id=by_id,
        metrics_by_code=by_code,
        charge_ids=charge_ids,
        new_charge_id=lambda: new_id("chg"),
        v=v,
    )
    v.raise_if_any()
    assert content is not None
    now = uow.clock.now()
    if draft is not None:
        draft = replace(draft, content=content, update_time=now)
        await uow.repo.save_draft(draft)
    else:
        draft = PackageVersion(
            package_version_id=new_id("pkv"),
            package_id=package.package_id,
            package_code=package.code,
            version=await uow.repo.latest_version_number(package.package_id) + 1,
            state=VersionState.DRAFT,
            content=content,
            create_time=now,
            update_time=now,
            publish_time=None,
        )
        await uow.repo.add_version(draft)
    package = replace(package, update_time=now)
    await uow.repo.save_package(package)
    return PackageView(package, published, draft)


async def publish_package(
    uow: CatalogUnitOfWork, cmd: PublishPackage
) -> tuple[PackageView, PackageVersion]:
    package = await _locked_package(uow, cmd.package_id)
    draft = ensure_publishable(package, await uow.repo.draft_of(package.package_id))
    # Locked FOR SHARE: a metric cannot be archived while this publication commits.
    by_id, by_code = await uow.repo.metric_refs(
        draft.content.metric_ids(), draft.content.limit_metric_codes()
    )
    ensure_metrics_active(draft, {**by_id, **by_code})
    now = uow.clock.now()
    await uow.repo.publish(draft, now)
    version = replace(draft, state=VersionState.PUBLISHED, publish_time=now, update_time=now)
    previous = package.published_version_id
    package = replace(
        package,
        state=PackageState.ACTIVE,
        published_version_id=version.package_version_id,
        update_time=now,
    )
    await uow.repo.save_package(package)
    uow.emit(
        events.PackagePublishedEvent(
            package_version=wire.version_message(version),
            previous_package_version_id=previous or "",
        ),
        aggregate_id=package.package_id,
    )
    return PackageView(package, version, None), version


async def archive_package(uow: CatalogUnitOfWork, cmd: ArchivePackage) -> PackageView:
    package = await _locked_package(uow, cmd.package_id)
    ensure_not_archived(package)
    now = uow.clock.now()
    package = replace(package, state=PackageState.ARCHIVED, update_time=now, archive_time=now)
    await uow.repo.save_package(package)
    event = events.PackageArchivedEvent(
        package_id=package.package_id,
        package_code=package.code,
        latest_package_version_id=package.published_version_id or "",
    )
    event.archive_time.FromDatetime(now)
    uow.emit(event, aggregate_id=package.package_id)
    return PackageView(
        package, await _published(uow, package), await uow.repo.draft_of(package.package_id)
    )


async def get_package(uow: CatalogUnitOfWork, package_id: str, org_id: str = "") -> PackageView:
    package = await uow.repo.get_package(package_id)
    if package is None or (org_id and package.published_version_id is None):
        # A customer must not learn that an unpublished package exists.
        raise package_not_found(package_id)
    draft = None if org_id else await uow.repo.draft_of(package_id)
    return PackageView(package, await _published(uow, package), draft)


async def list_packages(uow: CatalogUnitOfWork, query: ListPackages) -> Page[PackageView]:
    size = bounded_page_size(query.page_size)
    portal = bool(query.org_id)
    filters = {
        "state": query.state.value if query.state else "",
        "currency_code": query.currency_code,
        "portal": portal,
    }
    token = PageToken.decode(query.page_token, filters)
    if portal and query.state not in (None, PackageState.ACTIVE):
        return Page(items=[], next_page_token="")
    states = [PackageState.ACTIVE] if portal else [query.state] if query.state else []
    rows = await uow.repo.list_packages(
        states=states,
        currency_code=query.currency_code,
        after_code=after_key(token, str),
        limit=size + 1,
    )
    page = rows[:size]
    published = await uow.repo.versions_by_id(p.published_version_id or "" for p in page)
    drafts = {} if portal else await uow.repo.drafts_of(p.package_id for p in page)
    return Page(
        items=[
            PackageView(
                p,
                published.get(p.published_version_id or ""),
                drafts.get(p.package_id),
            )
            for p in page
        ],
        next_page_token=next_page_token(rows, size, lambda r: [r.code], filters),
    )


async def get_package_version(
    uow: CatalogUnitOfWork, version_id: str, org_id: str = ""
) -> PackageVersion:
    version = await uow.repo.get_version(version_id)
    if version is None or (org_id and version.state is VersionState.DRAFT):
        raise version_not_found(version_id)
    return version


async def list_package_versions(
    uow: CatalogUnitOfWork, query: ListPackageVersions
) -> Page[PackageVersion]:
    if await uow.repo.get_package(query.package_id) is None:
        raise package_not_found(query.package_id)
    size = bounded_page_size(query.page_size)
    filters = {"package_id": query.package_id}
    token = PageToken.decode(query.page_token, filters)
    before = after_key(token, int)
    rows = await uow.repo.list_versions(query.package_id, before, size + 1)
    return Page(
        items=rows[:size],
        next_page_token=next_page_token(rows, size, lambda r: [r.version], filters),
    )
