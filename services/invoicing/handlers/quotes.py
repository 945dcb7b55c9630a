"""The price of a plan change before it is made (PreviewPlanChange).

The subscriptions service has checked the change (``ChangePlan`` with
``validate_only``: its errors, direction, effective instant and the
subscription after it); this prices its answer with the code the real change
runs: ``plan_change_invoice`` (what ``subscription.changed`` invoices at once)
and ``build_period_invoice`` on ``subscription_period`` (what the close
invoices; PreviewInvoice's own period), the change's lines counted as billed.
Read only: nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tally.subscriptions.v1 import subscriptions_pb2 as subs_api

from services.invoicing import domain as d
from services.invoicing.handlers.billing import (
    ImmediateChange,
    build_period_invoice,
    plan_change_invoice,
    subscription_period,
)
from services.invoicing.handlers.common import UsageSource, plans
from services.invoicing.repository import InvoicingUnitOfWork
from services.kit.errors import Unavailable
from services.kit.protoconv import from_timestamp


@dataclass(frozen=True)
class PlanChangeQuote:
    previous_version_id: str
    version_id: str
    immediate: bool
    due_now: d.Invoice | None
    next_invoice: d.Invoice


async def quote_plan_change(
    uow: InvoicingUnitOfWork,
    usage: UsageSource,
    checked: subs_api.ChangePlanResponse,
    now: datetime,
) -> PlanChangeQuote:
    sub = checked.subscription
    sid, org, previous = sub.subscription_id, sub.org_id, checked.previous_package_version_id
    immediate = not checked.HasField("schedule")
    target = sub.package_version_id if immediate else checked.schedule.target_package_version_id
    # A change keeps the period's bounds: the projection must have this very
    # period, on the version the change leaves.
    start = from_timestamp(
        sub.current_period_start_time, present=sub.HasField("current_period_start_time")
    )
    end = from_timestamp(
        sub.current_period_end_time, present=sub.HasField("current_period_end_time")
    )
    known = await uow.repo.subscription(sid)
    if (
        start is None
        or end is None
        or known is None
        or (known.package_version_id, known.current_period_start) != (previous, start)
    ):
        # The fees billed so far come from events this replica has not applied
        # yet (the subscription's creation, a rollover, an earlier change).
        raise Unavailable(
            message=f"invoicing has not caught up with subscription {sid} yet; retry",
            reason="SUBSCRIPTION_NOT_CURRENT",
            metadata={"subscription_id": sid},
        )
    changes = await uow.repo.plan_changes(sid, start, end)
    billed = await uow.repo.billed_fee_lines(sid, start, end)
    due_now: d.Invoice | None = None
    if immediate:
        at = from_timestamp(checked.effective_time, present=checked.HasField("effective_time"))
        assert at is not None  # subscriptions always answers it
        due_now = await plan_change_invoice(
            uow,
            ImmediateChange(
                subscription_id=sid,
                org_id=org,
                currency=sub.currency_code,
                previous_version_id=previous,
                version_id=target,
                effective_time=at,
                period_start=start,
                period_end=end,
                trial_end=from_timestamp(
                    sub.trial_end_time, present=sub.HasField("trial_end_time")
                ),
            ),
            billed,
            now,
        )
        if due_now is not None:
            due_now.invoice_id = ""
            billed = [*billed, *d.fees_within(due_now.lines, start, end)]
        changes = [*changes, (at, previous, target)]
    plan_map, _ = await plans(uow, {sub.package_version_id})
    closing = subscription_period(
        sub, plan_map[sub.package_version_id].interval, changes, upcoming=True
    )
    next_invoice = await build_period_invoice(
        uow,
        usage,
        subscription_id=sid,
        org_id=org,
        currency=sub.currency_code,
        period=closing,
        usage_version_id=sub.package_version_id,
        reason=d.InvoiceReason.PERIOD_CLOSE,
        now=now,
        billed=billed,
    )
    next_invoice.invoice_id = ""
    return PlanChangeQuote(previous, target, immediate, due_now, next_invoice)
