"""Domain <-> protobuf for invoicing, shared by responses and event payloads."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tally.catalog.v1 import resources_pb2 as catalog_pb2
from tally.invoicing.v1 import resources_pb2 as pb
from tally.subscriptions.v1 import resources_pb2 as subs_pb2
from tally.type.v1 import money_pb2

from services.invoicing import domain as d
from services.invoicing.rating import RatingDetail, decimal_text, minor_to_decimal
from services.kit.protoconv import from_timestamp, to_timestamp

__all__ = ["minor_to_decimal"]

INTERVALS = {
    catalog_pb2.BILLING_INTERVAL_WEEKLY: d.Interval.WEEKLY,
    catalog_pb2.BILLING_INTERVAL_MONTHLY: d.Interval.MONTHLY,
    catalog_pb2.BILLING_INTERVAL_YEARLY: d.Interval.YEARLY,
}
SEGMENT_KINDS = {
    subs_pb2.SEGMENT_KIND_TRIAL: d.SegmentKind.TRIAL,
    subs_pb2.SEGMENT_KIND_ACTIVE: d.SegmentKind.ACTIVE,
    subs_pb2.SEGMENT_KIND_PAUSED: d.SegmentKind.PAUSED,
}
STATES = {
    d.InvoiceState.DRAFT: pb.INVOICE_STATE_DRAFT,
    d.InvoiceState.FINALIZED: pb.INVOICE_STATE_FINALIZED,
    d.InvoiceState.PAID: pb.INVOICE_STATE_PAID,
    d.InvoiceState.VOID: pb.INVOICE_STATE_VOID,
    d.InvoiceState.UNCOLLECTIBLE: pb.INVOICE_STATE_UNCOLLECTIBLE,
}
STATE_FROM_PB = {v: k for k, v in STATES.items()}
REASONS = {
    d.InvoiceReason.SUBSCRIPTION_START: pb.INVOICE_REASON_SUBSCRIPTION_START,
    d.InvoiceReason.PERIOD_CLOSE: pb.INVOICE_REASON_PERIOD_CLOSE,
    d.InvoiceReason.PLAN_CHANGE: pb.INVOICE_REASON_PLAN_CHANGE,
    d.InvoiceReason.CANCELLATION: pb.INVOICE_REASON_CANCELLATION,
    d.InvoiceReason.MANUAL: pb.INVOICE_REASON_MANUAL,
}
KINDS = {
    d.LineKind.BASE_FEE: pb.INVOICE_LINE_KIND_BASE_FEE,
    d.LineKind.USAGE: pb.INVOICE_LINE_KIND_USAGE,
    d.LineKind.PRORATION_CREDIT: pb.INVOICE_LINE_KIND_PRORATION_CREDIT,
    d.LineKind.MINIMUM_COMMITMENT: pb.INVOICE_LINE_KIND_MINIMUM_COMMITMENT,
    d.LineKind.ADJUSTMENT: pb.INVOICE_LINE_KIND_ADJUSTMENT,
    d.LineKind.TAX: pb.INVOICE_LINE_KIND_TAX,
}
SETTLEMENTS = {
    d.Settlement.REDUCE_AMOUNT_DUE: pb.CREDIT_MEMO_SETTLEMENT_REDUCE_AMOUNT_DUE,
    d.Settlement.CREDIT_BALANCE: pb.CREDIT_MEMO_SETTLEMENT_CREDIT_BALANCE,
    d.Settlement.REFUND: pb.CREDIT_MEMO_SETTLEMENT_REFUND,
}
SETTLEMENT_FROM_PB = {v: k for k, v in SETTLEMENTS.items()}


def ts(value: datetime | None) -> Timestamp | None:
    return to_timestamp(value)


def money(minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=minor)


def _text(value: Decimal | None) -> str:
    return "" if value is None else decimal_text(value)


# ------------------------------------------------------------------ projections


def version_row(v: catalog_pb2.PackageVersion) -> dict[str, Any]:
    if v.billing_interval not in INTERVALS:
        raise ValueError(f"version {v.package_version_id}: unknown billing interval")
    return {
        "package_version_id": v.package_version_id,
        "package_id": v.package_id,
        "package_code": v.package_code,
        "name": v.name,
        "currency_code": v.currency_code,
        "billing_interval": INTERVALS[v.billing_interval].value,
        "base_fee": Decimal(v.base_fee_amount or "0"),
        "base_fee_timing": (
            "in_arrears"
            if v.base_fee_timing == catalog_pb2.BASE_FEE_TIMING_IN_ARREARS
            else "in_advance"
        ),
        "trial_days": v.trial_days,
        "payload": v.SerializeToString(),
    }


def plan_of(row: Any) -> d.Plan:
    return d.Plan(
        package_version_id=row.package_version_id,
        package_code=row.package_code,
        name=row.name,
        currency_code=row.currency_code,
        interval=d.Interval(row.billing_interval),
        base_fee=Decimal(row.base_fee),
        in_advance=row.base_fee_timing == "in_advance",
        trial_days=row.trial_days,
    )


def subscription_row(sub: subs_pb2.Subscription) -> dict[str, Any]:
    return {
        "subscription_id": sub.subscription_id,
        "org_id": sub.org_id,
        "package_version_id": sub.package_version_id,
        "state": subs_pb2.SubscriptionState.Name(sub.state),
        "currency_code": sub.currency_code,
        "current_period_start": from_timestamp(
            sub.current_period_start_time, present=sub.HasField("current_period_start_time")
        ),
        "current_period_end": from_timestamp(
            sub.current_period_end_time, present=sub.HasField("current_period_end_time")
        ),
        "payload": sub.SerializeToString(),
        "update_time": from_timestamp(sub.update_time, present=sub.HasField("update_time"))
        or datetime.fromtimestamp(0).astimezone(),
    }


def segments_of(period: subs_pb2.BillingPeriod) -> tuple[d.Segment, ...]:
    out = []
    for s in period.segments:
        start = from_timestamp(s.start_time)
        end = from_timestamp(s.end_time)
        assert start is not None and end is not None
        out.append(
            d.Segment(
                s.package_version_id, SEGMENT_KINDS.get(s.kind, d.SegmentKind.ACTIVE), start, end
            )
        )
    return tuple(out)


# ------------------------------------------------------------------ invoices


def step_dict(step: RatingDetail) -> dict[str, Any]:
    return {
        "description": step.description,
        "tier": step.tier,
        "quantity": _text(step.quantity),
        "unit_amount": _text(step.unit_amount),
        "flat_amount": _text(step.flat_amount),
        "rate": _text(step.rate),
        "amount": decimal_text(step.amount),
    }


def line_pb(li: d.Line, currency: str) -> pb.InvoiceLine:
    out = pb.InvoiceLine(
        line_id=li.line_id,
        kind=KINDS[li.kind],
        description=li.description,
        charge_id=li.charge_id,
        metric_code=li.metric_code,
        package_version_id=li.package_version_id,
        quantity=decimal_text(li.quantity),
        unit_amount=_text(li.unit_amount),
        unrounded_amount=decimal_text(li.unrounded),
        amount=money(li.amount_minor, currency),
        period_start_time=ts(li.period_start),
        period_end_time=ts(li.period_end),
        details=[pb.RatingStep(**s) for s in li.details],
    )
    if li.prorated and li.full_amount is not None:
        out.proration.CopyFrom(
            pb.Proration(
                seconds_used=li.seconds_used,
                seconds_in_period=li.seconds_in_period,
                full_amount=decimal_text(li.full_amount),
            )
        )
    return out


def profile_dict(row: Any) -> dict[str, Any]:
    return {
        "org_id": row.org_id,
        "legal_name": row.legal_name,
        "address": dict(row.address),
        "tax_id": row.tax_id,
        "tax_rate": decimal_text(Decimal(row.tax_rate)),
        "invoice_email": row.invoice_email,
    }


def profile_pb(data: dict[str, Any], row: Any = None) -> pb.BillingProfile:
    out = pb.BillingProfile(
        org_id=str(data.get("org_id", "")),
        legal_name=str(data.get("legal_name", "")),
        address=pb.PostalAddress(**dict(data.get("address") or {})),
        tax_id=str(data.get("tax_id", "")),
        tax_rate=str(data.get("tax_rate", "0")),
        invoice_email=str(data.get("invoice_email", "")),
    )
    if row is not None:
        out.create_time.FromDatetime(row.create_time)
        out.update_time.FromDatetime(row.update_time)
    return out


def invoice_pb(inv: d.Invoice, *, lines: bool = True) -> pb.Invoice:
    c = inv.currency_code
    ordered = [li for li in inv.lines if li.kind is not d.LineKind.TAX] + [
        li for li in inv.lines if li.kind is d.LineKind.TAX
    ]
    return pb.Invoice(
        invoice_id=inv.invoice_id,
        org_id=inv.org_id,
        subscription_id=inv.subscription_id,
        number=inv.number,
        sequence_number=inv.sequence_number,
        state=STATES[inv.state],
        reason=REASONS[inv.reason],
        currency_code=c,
        period_start_time=ts(inv.period_start),
        period_end_time=ts(inv.period_end),
        lines=[line_pb(li, c) for li in ordered] if lines else [],
        subtotal=money(inv.subtotal, c),
        tax_rate=decimal_text(inv.tax_rate),
        tax=money(inv.tax, c),
        credit_applied=money(inv.credit_applied, c),
        total=money(inv.total, c),
        amount_paid=money(inv.amount_paid, c),
        amount_credited=money(inv.amount_credited, c),
        amount_due=money(inv.amount_due, c),
        billing_profile=profile_pb(inv.billing_profile),
        create_time=ts(inv.create_time),
        update_time=ts(inv.update_time),
        grace_period_end_time=ts(inv.grace_period_end)
        if inv.state is d.InvoiceState.DRAFT
        else None,
        finalize_time=ts(inv.finalize_time),
        due_time=ts(inv.due_time),
        paid_time=ts(inv.paid_time),
        void_time=ts(inv.void_time),
        uncollectible_time=ts(inv.uncollectible_time),
    )


def memo_pb(values: Any) -> pb.CreditMemo:
    m: dict[str, Any] = dict(values) if isinstance(values, dict) else dict(values._mapping)

    def get(key: str) -> Any:
        return m[key]

    c = get("currency_code")
    return pb.CreditMemo(
        credit_memo_id=get("credit_memo_id"),
        invoice_id=get("invoice_id"),
        org_id=get("org_id"),
        number=get("number"),
        currency_code=c,
        lines=[
            pb.CreditMemoLine(
                invoice_line_id=li["invoice_line_id"],
                description=li["description"],
                amount=money(int(li["amount_minor"]), c),
            )
            for li in get("lines")
        ],
        amount=money(int(get("amount_minor")), c),
        reason=get("reason"),
        memo=get("memo"),
        settlement=SETTLEMENTS[d.Settlement(get("settlement"))],
        create_time=ts(get("create_time")),
    )
