"""Refunds: never above what was captured minus earlier refunds."""

from __future__ import annotations

from datetime import datetime

from services.kit.errors import FailedPrecondition
from services.payments import domain as d
from services.payments import protomap
from services.payments.handlers.common import get_payment, new_id
from services.payments.repository import PaymentsUnitOfWork


async def request_refund(
    uow: PaymentsUnitOfWork,
    payment_id: str,
    org_id: str,
    amount_minor: int | None,
    reason: str,
    credit_memo_id: str,
    now: datetime,
) -> tuple[d.Payment, d.Refund]:
    """Transaction 1: a PENDING refund, counted against the refundable amount at once."""
    payment = await get_payment(uow, payment_id, org_id, lock=True)
    if payment.state is not d.PaymentState.SUCCEEDED:
        raise FailedPrecondition(
            message=f"payment {payment_id} is {payment.state.lower()}: nothing captured to refund",
            reason="PAYMENT_NOT_CAPTURED",
            metadata={"state": payment.state.value},
        )
    refunds = await uow.repo.refunds_of(payment_id)
    left = d.refundable(payment.amount_minor, [(r.state, r.amount_minor) for r in refunds])
    amount = left if amount_minor is None else amount_minor
    if amount <= 0 or amount > left:
        raise FailedPrecondition(
            message=f"payment {payment_id} has {left} {payment.currency_code} (minor units) left"
            f" to refund; {amount} asked",
            reason="REFUND_EXCEEDS_REFUNDABLE",
            metadata={"refundable_minor": str(left)},
        )
    refund = d.Refund(
        refund_id=new_id("rf"),
        payment_id=payment_id,
        org_id=payment.org_id,
        invoice_id=payment.invoice_id,
        amount_minor=amount,
        currency_code=payment.currency_code,
        reason=reason,
        credit_memo_id=credit_memo_id,
        create_time=now,
    )
    await uow.repo.insert_refund(refund)
    return payment, refund


async def settle_refund(
    uow: PaymentsUnitOfWork, refund_id: str, status: str, provider_refund_id: str, now: datetime
) -> tuple[d.Payment, d.Refund] | None:
    """Transaction 2 (and charge.refunded): the provider's answer, applied once."""
    found = await uow.repo.refund(refund_id)
    if found is None:
        return None
    payment = await uow.repo.payment(found.payment_id, lock=True)
    refund = await uow.repo.refund(refund_id)
    if payment is None or refund is None:
        return None
    if refund.settle(status, provider_refund_id, now):
        payment.amount_refunded_minor += refund.amount_minor
        payment.update_time = now
        await uow.repo.save_payment(payment)
        uow.emit(protomap.refunded_event(payment, refund), aggregate_id=payment.payment_id)
    await uow.repo.save_refund(refund)
    return payment, refund
