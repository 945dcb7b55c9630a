"""Collecting invoices: payments, their attempts and the outcomes of attempts.

Only "transaction 1" (create the attempt) and "transaction 2" (record what
the provider said) live here; the provider call between them is the
dispatcher's (services/payments/dispatch.py), never inside a transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial

from services.kit.errors import FailedPrecondition, NotFound
from services.payments import domain as d
from services.payments.handlers.common import (
    Policy,
    emit_action_required,
    emit_outcome,
    get_method,
    new_id,
)
from services.payments.metrics import record_attempt
from services.payments.repository import Means, PaymentsUnitOfWork

log = logging.getLogger(__name__)

INVOICE_FINALIZED = "FINALIZED"
INVOICE_PAID = "PAID"
INVOICE_VOID = "VOID"
INVOICE_UNCOLLECTIBLE = "UNCOLLECTIBLE"


@dataclass(frozen=True)
class FinalizedInvoice:
    invoice_id: str
    org_id: str
    subscription_id: str
    number: str
    currency_code: str
    amount_due_minor: int
    description: str


def _begin(
    payment: d.Payment,
    trigger: d.AttemptTrigger,
    means: Means,
    now: datetime,
    policy: Policy,
    caller_dispatches: bool,
) -> tuple[d.Attempt | None, bool]:
    """In memory: the new attempt, or (None, whether that is news) when the
    payment must wait for a payment method."""
    if means.method is None or means.customer_id is None:
        return None, payment.wait_for_action(d.ActionReason.NO_PAYMENT_METHOD, now)
    attempt = payment.start_attempt(new_id("pa"), trigger, (*means.method, means.customer_id), now)
    if caller_dispatches:
        attempt.lease_until = now + policy.dispatch_lease
    return attempt, False


async def start_attempt(
    uow: PaymentsUnitOfWork,
    payment: d.Payment,
    trigger: d.AttemptTrigger,
    now: datetime,
    policy: Policy,
    payment_method_id: str = "",
    *,
    caller_dispatches: bool = True,
) -> d.Attempt | None:
    """Transaction 1 of an attempt; None (and action_required) when there is no method.

    ``caller_dispatches``: the caller sends it right after its commit, so the
    attempt starts leased to it and the dispatcher job leaves it alone (until
    the lease runs out: a crash before sending).
    """
    if payment_method_id:
        method = await get_method(uow, payment_method_id, payment.org_id)
        means = Means(
            await uow.repo.customer_id(payment.org_id),
            (method.payment_method_id, method.provider, method.provider_payment_method_id),
        )
    else:
        means = await uow.repo.means(payment.org_id)
    attempt, waiting = _begin(payment, trigger, means, now, policy, caller_dispatches)
    if attempt is None:
        if waiting:
            emit_action_required(uow, payment, d.ActionReason.NO_PAYMENT_METHOD)
        await uow.repo.save_payment(payment)
        return None
    await uow.repo.insert_attempt(attempt)
    await uow.repo.save_payment(payment)
    return attempt


async def invoice_finalized(
    uow: PaymentsUnitOfWork, inv: FinalizedInvoice, now: datetime, policy: Policy
) -> d.Attempt | None:
    invoice = {
        "invoice_id": inv.invoice_id,
        "org_id": inv.org_id,
        "subscription_id": inv.subscription_id,
        "number": inv.number,
        "currency_code": inv.currency_code,
        "amount_due_minor": inv.amount_due_minor,
        "state": INVOICE_FINALIZED,
        "description": inv.description,
        "update_time": now,
    }
    if inv.amount_due_minor <= 0:
        await uow.repo.upsert_invoice(invoice)
        return None  # settled by credits: nothing to collect
    means = await uow.repo.upsert_invoice_reading_means(invoice)
    payment = d.Payment(
        payment_id=new_id("pay"),
        org_id=inv.org_id,
        invoice_id=inv.invoice_id,
        invoice_number=inv.number,
        subscription_id=inv.subscription_id,
        currency_code=inv.currency_code,
        amount_minor=inv.amount_due_minor,
        create_time=now,
        update_time=now,
    )
    # Decided before the insert, so the payment is written once, in its final state.
    attempt, waiting = _begin(
        payment, d.AttemptTrigger.INVOICE_FINALIZED, means, now, policy, caller_dispatches=False
    )
    if not await uow.repo.insert_payment(payment, attempt):
        return None  # this invoice is already being collected
    if waiting:
        emit_action_required(uow, payment, d.ActionReason.NO_PAYMENT_METHOD)
    return attempt


async def invoice_closed(
    uow: PaymentsUnitOfWork, invoice_id: str, state: str, by_payment_id: str, now: datetime
) -> None:
    """invoice.paid / voided / marked_uncollectible: stop collecting unless we were the payer."""
    await uow.repo.set_invoice_state(invoice_id, state, now)
    payment = await uow.repo.payment_of_invoice(invoice_id, lock=True)
    if payment is None or payment.payment_id == by_payment_id:
        return
    if payment.cancel(now):
        await uow.repo.save_payment(payment)


async def pay_invoice(
    uow: PaymentsUnitOfWork,
    invoice_id: str,
    org_id: str,
    payment_method_id: str,
    now: datetime,
    policy: Policy,
) -> tuple[d.Payment, d.Attempt]:
    """PayInvoice's transaction 1: a new ON_DEMAND attempt."""
    inv = await uow.repo.invoice(invoice_id)
    if inv is None or (org_id and inv.org_id != org_id):
        raise NotFound(message=f"invoice {invoice_id} not found", reason="INVOICE_NOT_FOUND")
    if inv.state != INVOICE_FINALIZED or inv.amount_due_minor <= 0:
        raise FailedPrecondition(
            message=f"invoice {invoice_id} is {inv.state.lower()} with"
            f" {inv.amount_due_minor} due: nothing to pay",
            reason="INVOICE_NOT_PAYABLE",
            metadata={"state": inv.state},
        )
    payment = await uow.repo.payment_of_invoice(invoice_id, lock=True)
    if payment is None:
        raise FailedPrecondition(
            message=f"invoice {invoice_id} has no payment", reason="INVOICE_NOT_PAYABLE"
        )
    if payment.state is d.PaymentState.SUCCEEDED or payment.state is d.PaymentState.CANCELED:
        raise FailedPrecondition(
            message=f"payment {payment.payment_id} is {payment.state.lower()}",
            reason="INVOICE_NOT_PAYABLE",
            metadata={"state": payment.state.value},
        )
    if payment.state is d.PaymentState.PROCESSING:
        raise FailedPrecondition(
            message=f"payment {payment.payment_id} has an attempt in flight",
            reason="PAYMENT_IN_PROGRESS",
        )
    attempt = await start_attempt(
        uow, payment, d.AttemptTrigger.ON_DEMAND, now, policy, payment_method_id
    )
    if attempt is None:
        raise FailedPrecondition(
            message=f"organisation {inv.org_id} has no default payment method",
            reason="NO_PAYMENT_METHOD",
        )
    return payment, attempt


async def record_outcome(
    uow: PaymentsUnitOfWork,
    attempt_id: str,
    status: str,
    now: datetime,
    policy: Policy,
    *,
    payment_intent_id: str = "",
    failure_code: str = "",
    failure_message: str = "",
) -> tuple[d.Payment, d.Attempt, d.Outcome] | None:
    """Transaction 2 (and every webhook or sync): apply a provider answer once."""
    # Payment first, then attempt: every path locks in this order.
    payment = await uow.repo.payment_of_attempt(attempt_id)
    attempt = None if payment is None else await uow.repo.attempt(attempt_id)
    if payment is None or attempt is None:
        return None
    loaded = (replace(payment), replace(attempt))
    outcome = payment.apply(
        attempt,
        status,
        now,
        policy.retry_days,
        payment_intent_id=payment_intent_id,
        failure_code=failure_code,
        failure_message=failure_message,
    )
    if _captured_twice(payment, attempt, outcome):
        log.error(
            "payments: invoice %s captured twice (%s and %s): refund one",
            payment.invoice_id,
            payment.provider_payment_intent_id,
            attempt.provider_payment_intent_id,
        )
    if (payment, attempt) != loaded:
        # A repeated answer (the webhooks after transaction 2) usually changes nothing.
        await uow.repo.save_attempt_and_payment(attempt, payment)
    emit_outcome(uow, payment, attempt, outcome, now)
    if outcome is not d.Outcome.NONE:
        # Counted once the outcome is durable: a rolled-back webhook is no attempt.
        uow.after_commit(partial(record_attempt, outcome.value.lower()))
    return payment, attempt, outcome


def _captured_twice(payment: d.Payment, attempt: d.Attempt, outcome: d.Outcome) -> bool:
    return (
        outcome is d.Outcome.NONE
        and attempt.state is d.AttemptState.SUCCEEDED
        and payment.state is d.PaymentState.SUCCEEDED
        and payment.provider_payment_intent_id not in ("", attempt.provider_payment_intent_id)
    )


async def mark_dispatch_failed(
    uow: PaymentsUnitOfWork, attempt_id: str, code: str, message: str, now: datetime, policy: Policy
) -> tuple[d.Payment, d.Attempt, d.Outcome] | None:
    """The provider refused the attempt outright (not a decline): it failed."""
    return await record_outcome(
        uow,
        attempt_id,
        "failed",
        now,
        policy,
        failure_code=code or "provider_error",
        failure_message=message,
    )


async def start_due_retries(
    uow: PaymentsUnitOfWork, now: datetime, policy: Policy, limit: int = 100
) -> list[d.Attempt]:
    """Dunning: a new attempt for every payment whose retry time has come."""
    started: list[d.Attempt] = []
    for payment_id in await uow.repo.due_retries(now, limit):
        payment = await uow.repo.payment(payment_id, lock=True)
        if payment is None:
            continue
        attempt = await start_attempt(uow, payment, d.AttemptTrigger.DUNNING_RETRY, now, policy)
        if attempt is not None:
            started.append(attempt)
    return started


async def resume_waiting(
    uow: PaymentsUnitOfWork, org_id: str, now: datetime, policy: Policy
) -> list[d.Attempt]:
    """The org has a default method again: collect what waited for one."""
    started: list[d.Attempt] = []
    for payment_id in await uow.repo.waiting_for_method(org_id):
        payment = await uow.repo.payment(payment_id, lock=True)
        if payment is None or payment.action_reason is not d.ActionReason.NO_PAYMENT_METHOD:
            continue
        attempt = await start_attempt(uow, payment, d.AttemptTrigger.ON_DEMAND, now, policy)
        if attempt is not None:
            started.append(attempt)
    return started
