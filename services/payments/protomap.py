"""Domain <-> protobuf for payments, shared by responses and event payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally.events.v1 import payments_events_pb2 as ev
from tally.payments.v1 import resources_pb2 as pb
from tally.type.v1 import money_pb2

from services.kit.protoconv import to_timestamp
from services.payments import domain as d

PAYMENT_STATES = {
    d.PaymentState.PROCESSING: pb.PAYMENT_STATE_PROCESSING,
    d.PaymentState.REQUIRES_ACTION: pb.PAYMENT_STATE_REQUIRES_ACTION,
    d.PaymentState.RETRY_SCHEDULED: pb.PAYMENT_STATE_RETRY_SCHEDULED,
    d.PaymentState.SUCCEEDED: pb.PAYMENT_STATE_SUCCEEDED,
    d.PaymentState.FAILED: pb.PAYMENT_STATE_FAILED,
    d.PaymentState.CANCELED: pb.PAYMENT_STATE_CANCELED,
}
PAYMENT_STATE_FROM_PB = {v: k for k, v in PAYMENT_STATES.items()}
ATTEMPT_STATES = {
    d.AttemptState.PROCESSING: pb.ATTEMPT_STATE_PROCESSING,
    d.AttemptState.REQUIRES_ACTION: pb.ATTEMPT_STATE_REQUIRES_ACTION,
    d.AttemptState.SUCCEEDED: pb.ATTEMPT_STATE_SUCCEEDED,
    d.AttemptState.FAILED: pb.ATTEMPT_STATE_FAILED,
    d.AttemptState.CANCELED: pb.ATTEMPT_STATE_CANCELED,
}
TRIGGERS = {
    d.AttemptTrigger.INVOICE_FINALIZED: pb.ATTEMPT_TRIGGER_INVOICE_FINALIZED,
    d.AttemptTrigger.DUNNING_RETRY: pb.ATTEMPT_TRIGGER_DUNNING_RETRY,
    d.AttemptTrigger.ON_DEMAND: pb.ATTEMPT_TRIGGER_ON_DEMAND,
}
REFUND_STATES = {
    d.RefundState.PENDING: pb.REFUND_STATE_PENDING,
    d.RefundState.SUCCEEDED: pb.REFUND_STATE_SUCCEEDED,
    d.RefundState.FAILED: pb.REFUND_STATE_FAILED,
}
ACTION_REASONS = {
    d.ActionReason.NO_PAYMENT_METHOD: pb.ACTION_REQUIRED_REASON_NO_PAYMENT_METHOD,
    d.ActionReason.AUTHENTICATION_REQUIRED: pb.ACTION_REQUIRED_REASON_AUTHENTICATION_REQUIRED,
}
ACTION_MESSAGES = {
    d.ActionReason.NO_PAYMENT_METHOD: "Add a payment method to pay this invoice.",
    d.ActionReason.AUTHENTICATION_REQUIRED: "Your bank asks you to confirm this payment.",
}
PROVIDERS = {"stripe": pb.PAYMENT_PROVIDER_STRIPE}
METHOD_TYPES = {
    "card": pb.PAYMENT_METHOD_TYPE_CARD,
    "sepa_debit": pb.PAYMENT_METHOD_TYPE_SEPA_DEBIT,
    "us_bank_account": pb.PAYMENT_METHOD_TYPE_US_BANK_ACCOUNT,
}


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency_code=currency)


def provider_pb(name: str) -> int:
    return PROVIDERS.get(name, pb.PAYMENT_PROVIDER_UNSPECIFIED)


def method_pb(row: Any) -> pb.PaymentMethod:
    m = pb.PaymentMethod(
        payment_method_id=row.payment_method_id,
        org_id=row.org_id,
        provider=provider_pb(row.provider),  # type: ignore[arg-type]
        provider_payment_method_id=row.provider_payment_method_id,
        type=METHOD_TYPES.get(row.type, pb.PAYMENT_METHOD_TYPE_OTHER),  # type: ignore[arg-type]
        is_default=bool(row.is_default) and row.detached_time is None,
        create_time=to_timestamp(row.create_time),
    )
    if row.type == "card":
        m.card.CopyFrom(
            pb.CardDetails(
                brand=row.brand,
                last4=row.last4,
                exp_month=row.exp_month,
                exp_year=row.exp_year,
                country_code=row.country,
            )
        )
    return m


def payment_pb(p: d.Payment) -> pb.Payment:
    return pb.Payment(
        payment_id=p.payment_id,
        org_id=p.org_id,
        invoice_id=p.invoice_id,
        invoice_number=p.invoice_number,
        subscription_id=p.subscription_id,
        amount=money(p.amount_minor, p.currency_code),
        amount_refunded=money(p.amount_refunded_minor, p.currency_code),
        state=PAYMENT_STATES[p.state],  # type: ignore[arg-type]
        attempt_count=p.attempt_count,
        next_retry_time=to_timestamp(p.next_retry_time),
        payment_method_id=p.payment_method_id,
        provider=provider_pb(p.provider),  # type: ignore[arg-type]
        provider_payment_intent_id=p.provider_payment_intent_id,
        failure_code=p.failure_code,
        failure_message=p.failure_message,
        create_time=to_timestamp(p.create_time),
        update_time=to_timestamp(p.update_time),
        succeed_time=to_timestamp(p.succeed_time),
    )


def attempt_pb(a: d.Attempt) -> pb.PaymentAttempt:
    return pb.PaymentAttempt(
        attempt_id=a.attempt_id,
        payment_id=a.payment_id,
        invoice_id=a.invoice_id,
        org_id=a.org_id,
        attempt_number=a.attempt_number,
        trigger=TRIGGERS[a.trigger],  # type: ignore[arg-type]
        state=ATTEMPT_STATES[a.state],  # type: ignore[arg-type]
        amount=money(a.amount_minor, a.currency_code),
        payment_method_id=a.payment_method_id,
        provider_payment_intent_id=a.provider_payment_intent_id,
        idempotency_key=a.idempotency_key,
        failure_code=a.failure_code,
        failure_message=a.failure_message,
        final_attempt=a.final_attempt,
        create_time=to_timestamp(a.create_time),
        complete_time=to_timestamp(a.complete_time),
    )


def refund_pb(r: d.Refund) -> pb.Refund:
    return pb.Refund(
        refund_id=r.refund_id,
        payment_id=r.payment_id,
        org_id=r.org_id,
        invoice_id=r.invoice_id,
        amount=money(r.amount_minor, r.currency_code),
        state=REFUND_STATES[r.state],  # type: ignore[arg-type]
        reason=r.reason,
        credit_memo_id=r.credit_memo_id,
        provider_refund_id=r.provider_refund_id,
        create_time=to_timestamp(r.create_time),
        complete_time=to_timestamp(r.complete_time),
    )


def succeeded_event(p: d.Payment, a: d.Attempt) -> ev.PaymentSucceededEvent:
    return ev.PaymentSucceededEvent(
        payment_id=p.payment_id,
        attempt_id=a.attempt_id,
        attempt_number=a.attempt_number,
        org_id=p.org_id,
        invoice_id=p.invoice_id,
        subscription_id=p.subscription_id,
        amount=money(a.amount_minor, a.currency_code),
        provider_payment_intent_id=a.provider_payment_intent_id,
        succeed_time=to_timestamp(p.succeed_time),
    )


def failed_event(p: d.Payment, a: d.Attempt, now: datetime) -> ev.PaymentFailedEvent:
    return ev.PaymentFailedEvent(
        payment_id=p.payment_id,
        attempt_id=a.attempt_id,
        attempt_number=a.attempt_number,
        final_attempt=a.final_attempt,
        org_id=p.org_id,
        invoice_id=p.invoice_id,
        subscription_id=p.subscription_id,
        amount=money(a.amount_minor, a.currency_code),
        failure_code=a.failure_code,
        failure_message=a.failure_message,
        next_retry_time=to_timestamp(p.next_retry_time),
        fail_time=to_timestamp(a.complete_time or now),
    )


def action_required_event(
    p: d.Payment, reason: d.ActionReason, detail: str = ""
) -> ev.PaymentActionRequiredEvent:
    return ev.PaymentActionRequiredEvent(
        org_id=p.org_id,
        invoice_id=p.invoice_id,
        subscription_id=p.subscription_id,
        payment_id=p.payment_id,
        amount=money(p.amount_minor, p.currency_code),
        reason=ACTION_REASONS[reason],  # type: ignore[arg-type]
        message=detail or ACTION_MESSAGES[reason],
    )


def refunded_event(p: d.Payment, r: d.Refund) -> ev.PaymentRefundedEvent:
    return ev.PaymentRefundedEvent(
        refund_id=r.refund_id,
        payment_id=p.payment_id,
        org_id=p.org_id,
        invoice_id=p.invoice_id,
        subscription_id=p.subscription_id,
        amount=money(r.amount_minor, r.currency_code),
        total_refunded=money(p.amount_refunded_minor, p.currency_code),
        credit_memo_id=r.credit_memo_id,
        refund_time=to_timestamp(r.complete_time),
    )
