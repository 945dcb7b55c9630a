"""Shared by the use cases: the usage source, ids, plans, the profile
snapshot, loading an invoice."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.subscriptions.v1 import subscriptions_pb2 as subs_api

from services.invoicing import domain as d
from services.invoicing import protomap
from services.invoicing.repository import InvoicingUnitOfWork
from services.invoicing.usage_client import Aggregate, AggregateKey
from services.kit.errors import FailedPrecondition, NotFound

PERCENTAGE_MODELS = ("percentage", "graduated_percentage")


class UsageSource(Protocol):
    async def aggregate(
        self,
        subscription_id: str,
        org_id: str,
        metric_code: str,
        period_start: datetime | None,
        *,
        with_values: bool = False,
    ) -> Aggregate: ...


@runtime_checkable
class BatchUsageSource(UsageSource, Protocol):
    """A usage source that also reads many aggregates at once; keys it leaves
    out of its answer are read one by one."""

    async def aggregates(self, keys: Sequence[AggregateKey]) -> dict[AggregateKey, Aggregate]: ...


class PlanChangeChecker(Protocol):
    """The subscriptions service's ChangePlan with validate_only: its answer, or
    its refusal as the same TallyError."""

    async def validate_change(
        self, request: subs_api.ChangePlanRequest
    ) -> subs_api.ChangePlanResponse: ...


def wants_event_values(charge: catalog_pb2.Charge) -> bool:
    """The percentage models rate each event, so they read every event's value."""
    return (charge.WhichOneof("properties") or "") in PERCENTAGE_MODELS


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def line_id() -> str:
    return new_id("il")


# ------------------------------------------------------------------ projections


async def record_package_version(uow: InvoicingUnitOfWork, v: catalog_pb2.PackageVersion) -> None:
    await uow.repo.upsert_version(protomap.version_row(v))


async def record_subscription(uow: InvoicingUnitOfWork, values: dict[str, Any]) -> None:
    await uow.repo.upsert_subscription(values)


async def plans(
    uow: InvoicingUnitOfWork, ids: set[str]
) -> tuple[dict[str, d.Plan], dict[str, catalog_pb2.PackageVersion]]:
    rows = await uow.repo.version_rows(ids)
    missing = ids - rows.keys()
    if missing:
        # Catalog events may still be on their way: raise so the kit retries.
        raise FailedPrecondition(
            message=f"package versions not known yet: {sorted(missing)}",
            reason="PACKAGE_VERSION_UNKNOWN",
        )
    return (
        {k: protomap.plan_of(r) for k, r in rows.items()},
        {k: catalog_pb2.PackageVersion.FromString(r.payload) for k, r in rows.items()},
    )


async def profile_snapshot(uow: InvoicingUnitOfWork, org_id: str) -> tuple[dict[str, Any], Decimal]:
    row = await uow.repo.profile(org_id)
    if row is None:
        return {"org_id": org_id}, Decimal(0)
    return protomap.profile_dict(row), Decimal(row.tax_rate)


async def get_invoice(
    uow: InvoicingUnitOfWork, invoice_id: str, org_id: str = "", *, lock: bool = False
) -> d.Invoice:
    inv = await uow.repo.invoice(invoice_id, lock=lock)
    if inv is None or (org_id and inv.org_id != org_id):
        raise NotFound(message=f"invoice {invoice_id} not found", reason="INVOICE_NOT_FOUND")
    return inv
