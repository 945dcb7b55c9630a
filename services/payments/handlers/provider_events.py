"""Applying one provider event (webhook or sync) exactly once.

The provider_event row is the inbox: it is written in the same transaction as
the effect, so a duplicated webhook, or a webhook and a sync seeing the same
event, change things once. The state tables then make sure a late or
out-of-order event never moves a payment backwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from services.payments import domain as d
from services.payments.handlers.collection import record_outcome
from services.payments.handlers.common import Policy
from services.payments.handlers.methods import record_method
from services.payments.handlers.refunds import settle_refund
from services.payments.provider import ProviderEvent
from services.payments.provider.base import (
    KIND_CHARGE_REFUNDED,
    KIND_DISPUTE_CREATED,
    KIND_SETUP_SUCCEEDED,
)
from services.payments.repository import PaymentsUnitOfWork

log = logging.getLogger(__name__)

META_ATTEMPT = "tally_attempt_id"
META_REFUND = "tally_refund_id"


@dataclass
class Applied:
    new: bool = False
    changed_payment_ids: list[str] = field(default_factory=list)
    started: list[d.Attempt] = field(default_factory=list)


async def apply_provider_event(
    uow: PaymentsUnitOfWork, event: ProviderEvent, source: str, now: datetime, policy: Policy
) -> Applied:
    result = Applied()
    if not await uow.repo.claim_event(
        event.event_id, policy.provider, event.kind, event.created, source
    ):
        return result
    result.new = True
    if event.charge is not None:
        await _payment_intent(uow, event, now, policy, result)
    elif event.kind == KIND_CHARGE_REFUNDED:
        await _refunded(uow, event, now, result)
    elif event.kind == KIND_DISPUTE_CREATED:
        await _disputed(uow, event, now, result)
    elif event.kind == KIND_SETUP_SUCCEEDED:
        await _setup_succeeded(uow, event, now, policy, result)
    else:
        log.info("payments: ignoring provider event %s (%s)", event.event_id, event.kind)
    return result


async def _payment_intent(
    uow: PaymentsUnitOfWork, event: ProviderEvent, now: datetime, policy: Policy, result: Applied
) -> None:
    charge = event.charge
    assert charge is not None
    attempt = await uow.repo.attempt_by_intent(event.payment_intent_id)
    if attempt is None and event.metadata.get(META_ATTEMPT):
        # The webhook can beat transaction 2, which stores the intent id.
        attempt = await uow.repo.attempt(event.metadata[META_ATTEMPT])
    if attempt is None:
        log.info("payments: %s for unknown intent %s", event.kind, event.payment_intent_id)
        return
    applied = await record_outcome(
        uow,
        attempt.attempt_id,
        charge.status,
        now,
        policy,
        payment_intent_id=event.payment_intent_id,
        failure_code=charge.failure_code,
        failure_message=charge.failure_message,
    )
    if applied is not None and applied[2] is not d.Outcome.NONE:
        result.changed_payment_ids.append(applied[0].payment_id)


async def _refunded(
    uow: PaymentsUnitOfWork, event: ProviderEvent, now: datetime, result: Applied
) -> None:
    for r in event.refunds:
        refund = await uow.repo.refund_by_provider_id(r.provider_refund_id)
        if refund is None and r.metadata.get(META_REFUND):
            refund = await uow.repo.refund(r.metadata[META_REFUND])
        if refund is None:
            log.warning(
                "payments: refund %s was not made by Tally; not recorded", r.provider_refund_id
            )
            continue
        was = refund.state
        settled = await settle_refund(uow, refund.refund_id, r.status, r.provider_refund_id, now)
        if settled is not None and settled[1].state is not was:
            result.changed_payment_ids.append(settled[0].payment_id)


async def _disputed(
    uow: PaymentsUnitOfWork, event: ProviderEvent, now: datetime, result: Applied
) -> None:
    attempt = await uow.repo.attempt_by_intent(event.payment_intent_id)
    if attempt is None:
        log.warning(
            "payments: dispute %s on unknown intent %s", event.object_id, event.payment_intent_id
        )
        return
    payment = await uow.repo.payment(attempt.payment_id, lock=True)
    if payment is None or payment.dispute_id == event.object_id:
        return
    payment.dispute_id = event.object_id
    payment.dispute_amount_minor = event.dispute_amount_minor
    payment.dispute_reason = event.dispute_reason
    payment.update_time = now
    await uow.repo.save_payment(payment)
    log.warning(
        "payments: payment %s (invoice %s) disputed: %s, %d",
        payment.payment_id,
        payment.invoice_id,
        event.dispute_reason,
        event.dispute_amount_minor,
    )
    result.changed_payment_ids.append(payment.payment_id)


async def _setup_succeeded(
    uow: PaymentsUnitOfWork, event: ProviderEvent, now: datetime, policy: Policy, result: Applied
) -> None:
    method = event.payment_method
    org_id = await uow.repo.org_of_customer(event.customer_id) if event.customer_id else None
    if method is None or not method.payment_method_id or org_id is None:
        log.info("payments: setup intent %s not for a Tally customer", event.object_id)
        return
    if await uow.repo.method_by_provider_id(method.payment_method_id) is not None:
        return  # AttachPaymentMethod recorded it already
    _, started = await record_method(uow, org_id, method, False, now, policy)
    result.started.extend(started)
