"""Use cases of billable metrics. Each runs inside the caller's unit of work and
never commits: ``run_mutation`` commits the change, its events and the stored
response together."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tally.events.v1 import catalog_events_pb2 as events

from services.catalog import wire
from services.catalog.domain import reasons
from services.catalog.domain.metrics import (
    MUTABLE_FIELDS,
    Metric,
    MetricInput,
    updated_definition,
    validate_new_metric,
)
from services.catalog.domain.values import MetricState
from services.catalog.handlers.common import Page, after_key, bounded_page_size, new_id
from services.catalog.uow import CatalogUnitOfWork
from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound, Violations
from services.kit.pagination import PageToken, next_page_token


@dataclass(frozen=True)
class CreateMetric:
    metric: MetricInput


@dataclass(frozen=True)
class UpdateMetric:
    metric_id: str
    changes: MetricInput
    # Mask fields already checked against MUTABLE_FIELDS; empty = all of them.
    fields: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ArchiveMetric:
    metric_id: str


@dataclass(frozen=True)
class ListMetrics:
    page_size: int = 0
    page_token: str = ""
    state: MetricState | None = None


def metric_not_found(metric_id: str) -> NotFound:
    return NotFound(
        f"no billable metric has id {metric_id!r}",
        reason=reasons.METRIC_NOT_FOUND,
        metadata={"metric_id": metric_id},
    )


async def _locked_metric(uow: CatalogUnitOfWork, metric_id: str) -> Metric:
    metric = await uow.repo.get_metric(metric_id, for_update=True)
    if metric is None:
        raise metric_not_found(metric_id)
    return metric


async def create_metric(uow: CatalogUnitOfWork, cmd: CreateMetric) -> Metric:
    v = Violations()
    definition = validate_new_metric(cmd.metric, v)
    v.raise_if_any()
    assert definition is not None
    code = cmd.metric.code
    await _check_names_free(uow, code, definition.aliases, "")
    now = uow.clock.now()
    metric = Metric(
        metric_id=new_id("met"),
        code=code,
        definition=definition,
        state=MetricState.ACTIVE,
        in_use=False,
        create_time=now,
        update_time=now,
        archive_time=None,
    )
    if not await uow.repo.add_metric(metric):
        raise metric_code_taken(code)
    uow.emit(
        events.MetricCreatedEvent(metric=wire.metric_message(metric)),
        aggregate_id=metric.metric_id,
    )
    return metric


async def _check_names_free(
    uow: CatalogUnitOfWork, code: str, aliases: tuple[str, ...], metric_id: str
) -> None:
    """An event's metric code must name one live metric: a new code or alias
    may not be another live metric's code or alias (field violations)."""
    await uow.repo.lock_metric_names()
    taken = await uow.repo.names_taken([*aliases, *([code] if code else [])], except_id=metric_id)
    v = Violations()
    for i, alias in enumerate(aliases):
        if alias in taken:
            v.add(f"metric.aliases[{i}]", f"is already a name of metric {taken[alias]!r}")
    # The same code as another metric stays ALREADY_EXISTS (add_metric); an
    # alias of one is a bad field.
    if code in taken and taken[code] != code:
        v.add("metric.code", f"is already an alias of metric {taken[code]!r}")
    v.raise_if_any()


def metric_code_taken(code: str) -> AlreadyExists:
    return AlreadyExists(
        f"a billable metric with code {code!r} already exists",
        reason=reasons.METRIC_CODE_TAKEN,
        metadata={"code": code},
    )


async def update_metric(uow: CatalogUnitOfWork, cmd: UpdateMetric) -> Metric:
    metric = await _locked_metric(uow, cmd.metric_id)
    v = Violations()
    definition = updated_definition(metric, cmd.changes, cmd.fields or MUTABLE_FIELDS, v)
    v.raise_if_any()
    assert definition is not None
    if definition == metric.definition:
        return metric  # nothing changed: no write, no event
    if definition.aliases != metric.definition.aliases:
        await _check_names_free(uow, "", definition.aliases, metric.metric_id)
    updated = replace(metric, definition=definition, update_time=uow.clock.now())
    await uow.repo.save_metric(updated)
    uow.emit(
        events.MetricUpdatedEvent(metric=wire.metric_message(updated)),
        aggregate_id=updated.metric_id,
    )
    return updated


async def archive_metric(uow: CatalogUnitOfWork, cmd: ArchiveMetric) -> Metric:
    """Archive unless a package someone can still subscribe to rates the metric.

    The rule: refused while a non-archived package's *current* published
    version charges it or limits a feature by it. Older versions pinned by
    existing subscriptions keep rating it (archiving only stops new use), and
    drafts do not count: publishing such a draft is refused instead.
    """
    metric = await _locked_metric(uow, cmd.metric_id)
    if metric.state is MetricState.ARCHIVED:
        raise FailedPrecondition(
            f"metric {metric.code!r} is already archived",
            reason=reasons.METRIC_ARCHIVED,
            metadata={"metric_id": metric.metric_id, "state": metric.state.value},
        )
    users = await uow.repo.active_packages_using(metric)
    if users:
        raise FailedPrecondition(
            f"metric {metric.code!r} is used by the current version of"
            f" package(s) {', '.join(users)}; publish versions without it or archive"
            " those packages first",
            reason=reasons.METRIC_USED_BY_ACTIVE_PACKAGE,
            metadata={"metric_id": metric.metric_id, "packages": ",".join(users)},
        )
    now = uow.clock.now()
    archived = replace(metric, state=MetricState.ARCHIVED, update_time=now, archive_time=now)
    await uow.repo.save_metric(archived)
    uow.emit(
        events.MetricArchivedEvent(metric=wire.metric_message(archived)),
        aggregate_id=archived.metric_id,
    )
    return archived


async def get_metric(uow: CatalogUnitOfWork, metric_id: str) -> Metric:
    metric = await uow.repo.get_metric(metric_id)
    if metric is None:
        raise metric_not_found(metric_id)
    return metric


async def list_metrics(uow: CatalogUnitOfWork, query: ListMetrics) -> Page[Metric]:
    size = bounded_page_size(query.page_size)
    filters = {"state": query.state.value if query.state else ""}
    token = PageToken.decode(query.page_token, filters)
    after = after_key(token, str)
    rows = await uow.repo.list_metrics(query.state, after, size + 1)
    return Page(
        items=rows[:size],
        next_page_token=next_page_token(rows, size, lambda r: [r.code], filters),
    )
