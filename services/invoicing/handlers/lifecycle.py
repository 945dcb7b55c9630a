"""Invoice lifecycle: finalize, void, uncollectible, adjustments, credit memos,
payments, billing profiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tally.events.v1 import invoicing_events_pb2 as ev

from services.invoicing import domain as d
from services.invoicing import protomap
from services.invoicing.handlers.common import get_invoice, line_id, new_id, profile_snapshot
from services.invoicing.metrics import invoice_entered
from services.invoicing.repository import InvoicingUnitOfWork, PeriodAlreadyInvoiced
from services.invoicing.settings import Policy
from services.kit.errors import InvalidArgument


async def finalize(
    uow: InvoicingUnitOfWork, invoice_id: str, now: datetime, policy: Policy
) -> d.Invoice:
    inv = await get_invoice(uow, invoice_id, lock=True)
    if inv.state is not d.InvoiceState.DRAFT:
        inv.finalize(0, now, 0)  # raises INVOICE_NOT_DRAFT
    # Refresh the profile snapshot and the tax at finalization.
    inv.billing_profile, inv.tax_rate = await profile_snapshot(uow, inv.org_id)
    inv.retax(line_id())
    consumed = await _number(uow, inv, now, policy)
    await _settle_balance(uow, inv, consumed, now)
    await uow.repo.save_invoice(inv)
    _emit_finalized(uow, inv)
    return inv


async def add_finalized(
    uow: InvoicingUnitOfWork, inv: d.Invoice, now: datetime, policy: Policy
) -> d.Invoice | None:
    """Finalize a draft this unit of work just built and insert it finalized.

    The draft's profile snapshot was read in this transaction, so it is the one
    ``finalize`` would read again: one insert replaces insert, re-read, update.
    None when the unique period index already holds an invoice (a replay or a
    concurrent run): the number taken is given back, so none is skipped.
    """
    consumed = await _number(uow, inv, now, policy)
    try:
        await uow.repo.add_invoice(inv)
    except PeriodAlreadyInvoiced:
        await uow.repo.release_sequence(inv.org_id)
        return None
    await _settle_balance(uow, inv, consumed, now)
    invoice_entered(uow, "draft")
    _emit_finalized(uow, inv)
    return inv


async def _number(uow: InvoicingUnitOfWork, inv: d.Invoice, now: datetime, policy: Policy) -> int:
    """Number the draft and apply the credit balance; returns the credit consumed.

    Counter then balance, both locked to commit: one order for every
    finalization, so an org's concurrent closes queue instead of deadlocking.
    """
    sequence = await uow.repo.next_sequence(inv.org_id)
    balance_row = await uow.repo.balance(inv.org_id, inv.currency_code, lock=True)
    available = balance_row.balance_minor if balance_row is not None else 0
    consumed = inv.finalize(sequence, now, available)
    inv.due_time = now + policy.payment_terms
    return consumed


async def _settle_balance(
    uow: InvoicingUnitOfWork, inv: d.Invoice, consumed: int, now: datetime
) -> None:
    if consumed:
        await uow.repo.add_balance(inv.org_id, inv.currency_code, -consumed, now)
    if inv.gross < 0:
        # Credits larger than charges: the excess goes back to the balance.
        await uow.repo.add_balance(inv.org_id, inv.currency_code, -inv.gross, now)


def _emit_finalized(uow: InvoicingUnitOfWork, inv: d.Invoice) -> None:
    invoice_entered(uow, "finalized")
    profile = inv.billing_profile
    uow.emit(
        ev.InvoiceFinalizedEvent(
            invoice=protomap.invoice_pb(inv),
            customer_email=str(profile.get("invoice_email", "")),
            customer_name=str(profile.get("legal_name", "")),
            payment_description=f"Tally invoice {inv.number}",
        ),
        aggregate_id=inv.invoice_id,
    )
    if inv.state is d.InvoiceState.PAID:
        _emit_paid(uow, inv, "")


def _emit_paid(uow: InvoicingUnitOfWork, inv: d.Invoice, payment_id: str) -> None:
    invoice_entered(uow, "paid")
    uow.emit(
        ev.InvoicePaidEvent(
            invoice_id=inv.invoice_id,
            org_id=inv.org_id,
            subscription_id=inv.subscription_id,
            number=inv.number,
            amount_paid=protomap.money(inv.amount_paid, inv.currency_code),
            payment_id=payment_id,
            paid_time=protomap.ts(inv.paid_time),
        ),
        aggregate_id=inv.invoice_id,
    )


async def finalize_due(
    uow: InvoicingUnitOfWork, now: datetime, policy: Policy, limit: int = 100
) -> int:
    ids = await uow.repo.due_drafts(now, limit)
    for invoice_id in ids:
        await finalize(uow, invoice_id, now, policy)
    return len(ids)


async def void(uow: InvoicingUnitOfWork, invoice_id: str, reason: str, now: datetime) -> d.Invoice:
    inv = await get_invoice(uow, invoice_id, lock=True)
    inv.void(reason, now)
    await uow.repo.save_invoice(inv)
    invoice_entered(uow, "voided")
    uow.emit(
        ev.InvoiceVoidedEvent(
            invoice_id=inv.invoice_id,
            org_id=inv.org_id,
            subscription_id=inv.subscription_id,
            number=inv.number,
            reason=reason,
            void_time=protomap.ts(now),
        ),
        aggregate_id=inv.invoice_id,
    )
    return inv


async def mark_uncollectible(
    uow: InvoicingUnitOfWork, invoice_id: str, reason: str, now: datetime
) -> d.Invoice:
    inv = await get_invoice(uow, invoice_id, lock=True)
    inv.mark_uncollectible(reason, now)
    await uow.repo.save_invoice(inv)
    invoice_entered(uow, "uncollectible")
    uow.emit(
        ev.InvoiceMarkedUncollectibleEvent(
            invoice_id=inv.invoice_id,
            org_id=inv.org_id,
            subscription_id=inv.subscription_id,
            number=inv.number,
            reason=reason,
            uncollectible_time=protomap.ts(now),
        ),
        aggregate_id=inv.invoice_id,
    )
    return inv


async def add_adjustment(
    uow: InvoicingUnitOfWork,
    invoice_id: str,
    description: str,
    amount_minor: int,
    currency: str,
    now: datetime,
) -> d.Invoice:
    inv = await get_invoice(uow, invoice_id, lock=True)
    if currency != inv.currency_code:
        raise InvalidArgument.field(
            "amount.currency_code",
            f"must be the invoice's currency {inv.currency_code}",
        )
    exact = protomap.minor_to_decimal(amount_minor, currency)
    inv.add_adjustment(
        d.Line(
            line_id=line_id(),
            kind=d.LineKind.ADJUSTMENT,
            description=description,
            amount_minor=amount_minor,
            unrounded=exact,
        ),
        line_id(),
    )
    inv.update_time = now
    await uow.repo.save_invoice(inv)
    return inv


@dataclass(frozen=True)
class MemoLine:
    invoice_line_id: str
    description: str
    amount_minor: int


async def issue_credit_memo(
    uow: InvoicingUnitOfWork,
    invoice_id: str,
    lines: Sequence[MemoLine],
    reason: int,
    memo: str,
    settlement: d.Settlement | None,
    now: datetime,
) -> tuple[dict[str, Any], d.Invoice]:
    inv = await get_invoice(uow, invoice_id, lock=True)
    previous = await uow.repo.memos_of(inv.invoice_id)
    credited: dict[str, int] = {}
    for row in previous:
        for ml in row.lines:
            if ml["invoice_line_id"]:
                credited[ml["invoice_line_id"]] = credited.get(ml["invoice_line_id"], 0) + int(
                    ml["amount_minor"]
                )
    chosen = inv.plan_credit(
        [(li.invoice_line_id, li.amount_minor) for li in lines], credited, settlement
    )
    amount = sum(li.amount_minor for li in lines)
    settled = inv.apply_credit(amount, chosen, now)
    await uow.repo.save_invoice(inv)
    if chosen is d.Settlement.CREDIT_BALANCE:
        await uow.repo.add_balance(inv.org_id, inv.currency_code, amount, now)
    values = {
        "credit_memo_id": new_id("cm"),
        "invoice_id": inv.invoice_id,
        "org_id": inv.org_id,
        "number": f"{inv.number}-CM{len(previous) + 1}",
        "currency_code": inv.currency_code,
        "lines": [
            {
                "invoice_line_id": li.invoice_line_id,
                "description": li.description,
                "amount_minor": li.amount_minor,
            }
            for li in lines
        ],
        "amount_minor": amount,
        "reason": reason,
        "memo": memo,
        "settlement": chosen.value,
        "create_time": now,
    }
    await uow.repo.add_memo(values)
    refund = chosen is d.Settlement.REFUND
    uow.emit(
        ev.CreditMemoIssuedEvent(
            credit_memo=protomap.memo_pb(values),
            subscription_id=inv.subscription_id,
            payment_id=inv.payment_id if refund else "",
            refund_amount=protomap.money(amount if refund else 0, inv.currency_code),
        ),
        aggregate_id=inv.invoice_id,
    )
    if settled:
        _emit_paid(uow, inv, "")
    return values, inv


# ------------------------------------------------------------------ payments


async def payment_succeeded(
    uow: InvoicingUnitOfWork, invoice_id: str, amount_minor: int, payment_id: str, now: datetime
) -> None:
    inv = await uow.repo.invoice(invoice_id, lock=True)
    if inv is None:
        return  # not ours (or unknown): acknowledged, changes nothing
    if inv.pay(amount_minor, payment_id, now):
        _emit_paid(uow, inv, payment_id)
    await uow.repo.save_invoice(inv)


async def payment_failed(
    uow: InvoicingUnitOfWork, invoice_id: str, failure: str, now: datetime
) -> None:
    inv = await uow.repo.invoice(invoice_id, lock=True)
    if inv is None or inv.state is not d.InvoiceState.FINALIZED:
        return
    inv.status_reason = f"payment failed: {failure}"
    inv.update_time = now
    await uow.repo.save_invoice(inv)


async def payment_refunded(
    uow: InvoicingUnitOfWork, invoice_id: str, amount_minor: int, credit_memo_id: str, now: datetime
) -> None:
    inv = await uow.repo.invoice(invoice_id, lock=True)
    if inv is None:
        return
    if not credit_memo_id:
        # A refund made outside a credit memo is recorded as a memo-less credit.
        inv.amount_credited += amount_minor
    inv.status_reason = f"refunded {amount_minor}"
    inv.update_time = now
    await uow.repo.save_invoice(inv)


# ------------------------------------------------------------------ profiles


async def update_profile(
    uow: InvoicingUnitOfWork, org_id: str, changes: Mapping[str, Any], now: datetime
) -> Any:
    row = await uow.repo.profile(org_id, lock=True)
    values: dict[str, Any] = {
        "org_id": org_id,
        "legal_name": "",
        "address": {},
        "tax_id": "",
        "tax_rate": Decimal(0),
        "invoice_email": "",
        "create_time": now,
    }
    if row is not None:
        values.update(
            legal_name=row.legal_name,
            address=row.address,
            tax_id=row.tax_id,
            tax_rate=row.tax_rate,
            invoice_email=row.invoice_email,
            create_time=row.create_time,
        )
    values.update(changes)
    values["update_time"] = now
    return await uow.repo.save_profile(values)


async def credit_balance(
    uow: InvoicingUnitOfWork, org_id: str, currency: str
) -> tuple[int, datetime | None]:
    row = await uow.repo.balance(org_id, currency)
    return (0, None) if row is None else (row.balance_minor, row.update_time)
