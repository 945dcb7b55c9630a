"""Building invoices: a closed period, a manual run, a preview, a plan change now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.subscriptions.v1 import resources_pb2 as subs_pb2

from services.invoicing import domain as d
from services.invoicing import protomap
from services.invoicing.handlers.common import (
    UsageSource,
    line_id,
    new_id,
    plans,
    profile_snapshot,
    wants_event_values,
)
from services.invoicing.handlers.lifecycle import add_finalized
from services.invoicing.metrics import invoice_entered
from services.invoicing.rating import rate
from services.invoicing.rating.wire import charge_from_proto
from services.invoicing.repository import InvoicingUnitOfWork, PeriodAlreadyInvoiced
from services.invoicing.settings import Policy
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.protoconv import from_timestamp

# ------------------------------------------------------------------ building


async def usage_lines(
    usage: UsageSource,
    version: catalog_pb2.PackageVersion,
    subscription_id: str,
    org_id: str,
    currency: str,
    period_start: datetime | None,
    period_end: datetime | None,
) -> list[d.Line]:
    lines: list[d.Line] = []
    for ch in version.charges:
        charge = charge_from_proto(ch, currency)
        model = ch.WhichOneof("properties") or ""
        percentage = wants_event_values(ch)
        agg = await usage.aggregate(
            subscription_id, org_id, ch.metric_code, period_start, with_values=percentage
        )
        if percentage:
            rating = rate(charge, events=list(agg.event_values))
            quantity = sum(agg.event_values, Decimal(0))
        else:
            rating = rate(charge, quantity=agg.value)
            quantity = agg.value
        lines.append(
            d.Line(
                line_id=line_id(),
                kind=d.LineKind.USAGE,
                description=ch.display_name or ch.metric_code,
                amount_minor=rating.amount_minor,
                unrounded=rating.amount,
                quantity=quantity,
                unit_amount=charge.unit_amount if model == "standard" else None,
                charge_id=ch.charge_id,
                metric_code=ch.metric_code,
                package_version_id=version.package_version_id,
                period_start=period_start,
                period_end=period_end,
                details=[protomap.step_dict(s) for s in rating.details],
            )
        )
    return lines


async def build_period_invoice(
    uow: InvoicingUnitOfWork,
    usage: UsageSource,
    *,
    subscription_id: str,
    org_id: str,
    currency: str,
    period: d.ClosedPeriod,
    usage_version_id: str,
    reason: d.InvoiceReason,
    now: datetime,
    billed: list[d.Line] | None = None,
) -> d.Invoice:
    """``billed``: the fee lines already invoiced inside the period, when the
    caller read them (``period_invoice_and_fees``)."""
    if billed is None:
        billed = await uow.repo.billed_fee_lines(
            subscription_id, period.period_start, period.period_end
        )
    ids = {s.package_version_id for s in period.segments} | {usage_version_id}
    ids |= {li.package_version_id for li in billed}
    if period.next_version_id:
        ids.add(period.next_version_id)
    ids.discard("")
    plan_map, versions = await plans(uow, ids)
    lines = d.base_fee_lines(period, plan_map, billed, currency, line_id)
    lines += await usage_lines(
        usage,
        versions[usage_version_id],
        subscription_id,
        org_id,
        currency,
        period.period_start,
        period.period_end,
    )
    profile, tax_rate = await profile_snapshot(uow, org_id)
    inv = d.Invoice(
        invoice_id=new_id("inv"),
        org_id=org_id,
        subscription_id=subscription_id,
        reason=reason,
        currency_code=currency,
        period_start=period.period_start,
        period_end=period.period_end,
        create_time=now,
        update_time=now,
        lines=lines,
        tax_rate=tax_rate,
        billing_profile=profile,
    )
    inv.retax(line_id())
    return inv


async def close_period(
    uow: InvoicingUnitOfWork,
    usage: UsageSource,
    policy: Policy,
    *,
    subscription_id: str,
    org_id: str,
    currency: str,
    period: d.ClosedPeriod,
    usage_version_id: str,
    now: datetime,
    reason: d.InvoiceReason = d.InvoiceReason.PERIOD_CLOSE,
) -> tuple[d.Invoice, bool]:
    """The period's invoice; (existing, False) when the period is already invoiced."""
    existing, billed = await uow.repo.period_invoice_and_fees(
        subscription_id, period.period_start, period.period_end
    )
    if existing is not None:
        return existing, False
    inv = await build_period_invoice(
        uow,
        usage,
        subscription_id=subscription_id,
        org_id=org_id,
        currency=currency,
        period=period,
        usage_version_id=usage_version_id,
        reason=reason,
        now=now,
        billed=billed,
    )
    inv.grace_period_end = now + policy.grace_period
    added: d.Invoice | None = inv
    if policy.grace_period <= timedelta(0):
        added = await add_finalized(uow, inv, now, policy)
    else:
        try:
            await uow.repo.add_invoice(inv)
            invoice_entered(uow, "draft")
        except PeriodAlreadyInvoiced:
            added = None
    if added is None:
        # A concurrent run won the unique index: answer its invoice.
        found = await uow.repo.period_invoice(subscription_id, period.period_start)
        if found is None:
            raise PeriodAlreadyInvoiced(subscription_id)
        return found, False
    return added, True


# ------------------------------------------------------------------ manual runs and previews


def current_period(
    sub: Any,
    plan: d.Plan,
    *,
    upcoming: bool,
    changes: Sequence[tuple[datetime, str, str]] = (),
) -> d.ClosedPeriod:
    """The projection's current period as its close would see it so far
    (``subscription_period`` on the row's subscription)."""
    payload = subs_pb2.Subscription.FromString(sub.payload)
    return subscription_period(payload, plan.interval, changes, upcoming=upcoming)


def subscription_period(
    sub: subs_pb2.Subscription,
    interval: d.Interval,
    changes: Sequence[tuple[datetime, str, str]],
    *,
    upcoming: bool,
) -> d.ClosedPeriod:
    """A subscription's current period as its close would see it so far: one
    segment per version between the immediate plan changes (``changes``, from
    ``InvoicingRepository.plan_changes``), trial up to the trial end.
    ``upcoming`` adds the next in-advance fee: of the version a pending plan
    change moves to, none when the subscription ends with the period."""
    start = from_timestamp(
        sub.current_period_start_time, present=sub.HasField("current_period_start_time")
    )
    end = from_timestamp(
        sub.current_period_end_time, present=sub.HasField("current_period_end_time")
    )
    if start is None or end is None:
        raise FailedPrecondition(
            message=f"subscription {sub.subscription_id} has no open period",
            reason="NO_OPEN_PERIOD",
        )
    trial_end = from_timestamp(sub.trial_end_time, present=sub.HasField("trial_end_time"))
    ends = sub.state == subs_pb2.SUBSCRIPTION_STATE_CANCELED or sub.cancel_at_period_end
    next_version = next(
        (
            e.target_package_version_id
            for e in sub.pending_schedules
            if e.action == subs_pb2.SCHEDULE_ACTION_CHANGE_PLAN
        ),
        sub.package_version_id,
    )
    return d.open_period(
        start,
        end,
        sub.package_version_id,
        changes,
        trial_end,
        interval,
        next_version_id=None if not upcoming or ends else next_version,
    )


async def _open_period(uow: InvoicingUnitOfWork, sub: Any, *, upcoming: bool) -> d.ClosedPeriod:
    """``current_period`` with the plan changes recorded inside it."""
    plan_map, _ = await plans(uow, {sub.package_version_id})
    changes: list[tuple[datetime, str, str]] = []
    if sub.current_period_start is not None and sub.current_period_end is not None:
        changes = await uow.repo.plan_changes(
            sub.subscription_id, sub.current_period_start, sub.current_period_end
        )
    return current_period(sub, plan_map[sub.package_version_id], upcoming=upcoming, changes=changes)


async def _subscription(uow: InvoicingUnitOfWork, subscription_id: str, org_id: str) -> Any:
    sub = await uow.repo.subscription(subscription_id)
    if sub is None or (org_id and sub.org_id != org_id):
        raise NotFound(
            message=f"subscription {subscription_id} not found", reason="SUBSCRIPTION_NOT_FOUND"
        )
    return sub


async def run_billing(
    uow: InvoicingUnitOfWork,
    usage: UsageSource,
    policy: Policy,
    org_id: str,
    subscription_id: str,
    period_start: datetime,
    now: datetime,
) -> tuple[d.Invoice, bool]:
    existing = await uow.repo.period_invoice(subscription_id, period_start)
    if existing is not None:
        if existing.org_id != org_id:
            raise NotFound(
                message=f"subscription {subscription_id} not found",
                reason="SUBSCRIPTION_NOT_FOUND",
            )
        return existing, False
    sub = await _subscription(uow, subscription_id, org_id)
    if sub.current_period_start != period_start:
        raise NotFound(
            message=(
                f"period starting {period_start.isoformat()} is neither invoiced nor the"
                " subscription's current period"
            ),
            reason="PERIOD_NOT_FOUND",
        )
    period = await _open_period(uow, sub, upcoming=False)
    return await close_period(
        uow,
        usage,
        policy,
        subscription_id=subscription_id,
        org_id=org_id,
        currency=sub.currency_code,
        period=period,
        usage_version_id=sub.package_version_id,
        now=now,
        reason=d.InvoiceReason.MANUAL,
    )


async def preview(
    uow: InvoicingUnitOfWork, usage: UsageSource, org_id: str, subscription_id: str, now: datetime
) -> d.Invoice:
    if not subscription_id:
        found = await uow.repo.latest_subscription_of(org_id)
        if found is None:
            raise NotFound(
                message=f"org {org_id} has no subscription", reason="SUBSCRIPTION_NOT_FOUND"
            )
        subscription_id = found
    sub = await _subscription(uow, subscription_id, org_id)
    # The same segments and base-fee rules as the close (build_period_invoice),
    # so the preview shows what the close will invoice if nothing else changes.
    period = await _open_period(uow, sub, upcoming=True)
    inv = await build_period_invoice(
        uow,
        usage,
        subscription_id=subscription_id,
        org_id=sub.org_id,
        currency=sub.currency_code,
        period=period,
        usage_version_id=sub.package_version_id,
        reason=d.InvoiceReason.PERIOD_CLOSE,
        now=now,
    )
    inv.invoice_id = ""
    return inv


# ------------------------------------------------------------------ immediate plan change


@dataclass(frozen=True)
class ImmediateChange:
    subscription_id: str
    org_id: str
    currency: str
    previous_version_id: str
    version_id: str
    effective_time: datetime
    period_start: datetime
    period_end: datetime
    trial_end: datetime | None


async def plan_change_invoice(
    uow: InvoicingUnitOfWork, cmd: ImmediateChange, billed: Sequence[d.Line], now: datetime
) -> d.Invoice | None:
    """The invoice an immediate plan change issues at once (``d.plan_change_lines``
    on the period's fee lines billed so far, and tax), not stored; None when it
    bills nothing."""
    plan_map, _ = await plans(uow, {cmd.previous_version_id, cmd.version_id})
    lines = d.plan_change_lines(
        plan_map[cmd.previous_version_id],
        plan_map[cmd.version_id],
        billed,
        cmd.effective_time,
        cmd.period_start,
        cmd.period_end,
        cmd.trial_end,
        cmd.currency,
        line_id,
    )
    if not lines:
        return None
    profile, tax_rate = await profile_snapshot(uow, cmd.org_id)
    inv = d.Invoice(
        invoice_id=new_id("inv"),
        org_id=cmd.org_id,
        subscription_id=cmd.subscription_id,
        reason=d.InvoiceReason.PLAN_CHANGE,
        currency_code=cmd.currency,
        period_start=cmd.effective_time,
        period_end=cmd.period_end,
        create_time=now,
        update_time=now,
        lines=lines,
        tax_rate=tax_rate,
        billing_profile=profile,
    )
    inv.retax(line_id())
    return inv


async def change_plan_now(
    uow: InvoicingUnitOfWork, policy: Policy, cmd: ImmediateChange, now: datetime
) -> d.Invoice | None:
    """An immediate plan change invoices at once what in-advance fees it moves
    (``plan_change_invoice``). The period close trues up the rest (elapsed
    seconds of a version nobody billed in advance, usage)."""
    # Remembered for PreviewInvoice / RunBilling of the open period, whatever
    # this change invoices (an arrears-only change invoices nothing now).
    await uow.repo.record_plan_change(
        cmd.subscription_id, cmd.effective_time, cmd.previous_version_id, cmd.version_id
    )
    billed = await uow.repo.billed_fee_lines(cmd.subscription_id, cmd.period_start, cmd.period_end)
    inv = await plan_change_invoice(uow, cmd, billed, now)
    if inv is None:
        return None
    inv.grace_period_end = now + policy.grace_period
    if policy.grace_period <= timedelta(0):
        # None: this change was already invoiced (a replayed event).
        return await add_finalized(uow, inv, now, policy)
    try:
        await uow.repo.add_invoice(inv)
        invoice_entered(uow, "draft")
    except PeriodAlreadyInvoiced:
        return None  # this change was already invoiced (a replayed event)
    return inv
