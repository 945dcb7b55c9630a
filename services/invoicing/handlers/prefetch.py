"""Reading a group of closed periods' usage in one call before they are billed.

The kit consumer applies several period closes in one unit of work. Each one
would ask usage for every charge's aggregate on its own; ``prefetch_usage``
asks for all of them at once, and the closes then read from its answer. What
it did not read (a version not known yet, a batch usage refused) is read one
by one as before, so the invoices are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tally.catalog.v1 import resources_pb2 as catalog_pb2

from services.invoicing.handlers.common import BatchUsageSource, UsageSource, wants_event_values
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.usage_client import Aggregate, AggregateKey


@dataclass(frozen=True)
class UsageRead:
    """A period whose usage lines will be built: ``usage_lines``' arguments."""

    subscription_id: str
    org_id: str
    package_version_id: str
    period_start: datetime


def usage_keys(
    version: catalog_pb2.PackageVersion,
    subscription_id: str,
    org_id: str,
    period_start: datetime | None,
) -> list[AggregateKey]:
    """The aggregates ``usage_lines`` reads for one period, in charge order."""
    return [
        AggregateKey(
            subscription_id,
            org_id,
            ch.metric_code,
            period_start,
            with_values=wants_event_values(ch),
        )
        for ch in version.charges
    ]


class PrefetchedUsage:
    """A usage source that answers from aggregates read beforehand."""

    def __init__(self, source: UsageSource, found: Mapping[AggregateKey, Aggregate]) -> None:
        self.source = source
        self.found = found

    async def aggregate(
        self,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime | None,
        *,
        with_values: bool = False,
    ) -> Aggregate:
        key = AggregateKey(subscription_id, org_id, metric_code, period_start, with_values)
        found = self.found.get(key)
        if found is not None:
            return found
        return await self.source.aggregate(
            subscription_id, org_id, metric_code, period_start, with_values=with_values
        )


async def prefetch_usage(
    uow: InvoicingUnitOfWork, source: BatchUsageSource, reads: Iterable[UsageRead]
) -> PrefetchedUsage:
    """Every aggregate the given periods' usage lines read, in one batch read."""
    wanted = list(reads)
    # Versions not known yet are left out: their close fails on its own and is retried.
    rows = await uow.repo.version_rows({r.package_version_id for r in wanted})
    versions = {k: catalog_pb2.PackageVersion.FromString(r.payload) for k, r in rows.items()}
    keys = [
        key
        for r in wanted
        if r.package_version_id in versions
        for key in usage_keys(
            versions[r.package_version_id], r.subscription_id, r.org_id, r.period_start
        )
    ]
    return PrefetchedUsage(source, await source.aggregates(keys) if keys else {})
