"""Payments, attempts and refunds, with the rules that move them.

Pure: the handlers load these from the repository, call the methods, save them
and emit what the methods report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.payments.domain.dunning import after_failure
from services.payments.domain.keys import attempt_key
from services.payments.domain.states import (
    OPEN_PAYMENT_STATES,
    ActionReason,
    AttemptState,
    AttemptTrigger,
    PaymentState,
    RefundState,
    attempt_may_move,
    payment_may_move,
)


class Outcome(StrEnum):
    """What an applied provider answer meant for the payment (what to emit)."""

    NONE = "NONE"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ACTION_REQUIRED = "ACTION_REQUIRED"


OUTCOME_STATES = {
    "succeeded": AttemptState.SUCCEEDED,
    "failed": AttemptState.FAILED,
    "requires_action": AttemptState.REQUIRES_ACTION,
}


@dataclass
class Attempt:
    attempt_id: str
    payment_id: str
    invoice_id: str
    org_id: str
    attempt_number: int
    trigger: AttemptTrigger
    amount_minor: int
    currency_code: str
    payment_method_id: str
    provider: str
    provider_payment_method_id: str
    provider_customer_id: str
    idempotency_key: str
    create_time: datetime
    state: AttemptState = AttemptState.PROCESSING
    provider_payment_intent_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    final_attempt: bool = False
    dispatched: bool = False
    lease_until: datetime | None = None
    complete_time: datetime | None = None


@dataclass
class Payment:
    payment_id: str
    org_id: str
    invoice_id: str
    invoice_number: str
    subscription_id: str
    currency_code: str
    amount_minor: int
    create_time: datetime
    update_time: datetime
    state: PaymentState = PaymentState.PROCESSING
    amount_refunded_minor: int = 0
    action_reason: ActionReason | None = None
    attempt_count: int = 0
    retries_used: int = 0
    next_retry_time: datetime | None = None
    payment_method_id: str = ""
    provider: str = ""
    provider_payment_intent_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    succeed_time: datetime | None = None
    dispute_id: str = ""
    dispute_amount_minor: int = 0
    dispute_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_PAYMENT_STATES

    def wait_for_action(self, reason: ActionReason, now: datetime) -> bool:
        if self.state is PaymentState.REQUIRES_ACTION and self.action_reason is reason:
            return False
        if self.attempt_count and not payment_may_move(self.state, PaymentState.REQUIRES_ACTION):
            return False
        self.state = PaymentState.REQUIRES_ACTION
        self.action_reason = reason
        self.next_retry_time = None
        self.update_time = now
        return True

    def start_attempt(
        self,
        attempt_id: str,
        trigger: AttemptTrigger,
        method: tuple[str, str, str, str],
        now: datetime,
    ) -> Attempt:
        """A new attempt; ``method`` is (method id, provider, provider method id, customer id)."""
        if self.attempt_count and not payment_may_move(self.state, PaymentState.PROCESSING):
            raise ValueError(f"payment {self.payment_id} is {self.state}: no new attempt")
        payment_method_id, provider, provider_method_id, customer_id = method
        self.attempt_count += 1
        self.state = PaymentState.PROCESSING
        self.action_reason = None
        self.next_retry_time = None
        self.payment_method_id = payment_method_id
        self.provider = provider
        self.provider_payment_intent_id = ""
        self.update_time = now
        return Attempt(
            attempt_id=attempt_id,
            payment_id=self.payment_id,
            invoice_id=self.invoice_id,
            org_id=self.org_id,
            attempt_number=self.attempt_count,
            trigger=trigger,
            amount_minor=self.amount_minor,
            currency_code=self.currency_code,
            payment_method_id=payment_method_id,
            provider=provider,
            provider_payment_method_id=provider_method_id,
            provider_customer_id=customer_id,
            idempotency_key=attempt_key(self.invoice_id, self.attempt_count),
            create_time=now,
        )

    def apply(
        self,
        attempt: Attempt,
        status: str,
        now: datetime,
        retry_days: tuple[int, ...],
        *,
        payment_intent_id: str = "",
        failure_code: str = "",
        failure_message: str = "",
    ) -> Outcome:
        """Apply a provider answer for ``attempt``; never moves anything backwards."""
        if payment_intent_id and not attempt.provider_payment_intent_id:
            attempt.provider_payment_intent_id = payment_intent_id
        attempt.dispatched = True
        latest = attempt.attempt_number == self.attempt_count
        if latest and attempt.provider_payment_intent_id:
            self.provider_payment_intent_id = attempt.provider_payment_intent_id
        target = OUTCOME_STATES.get(status)
        if target is None or not attempt_may_move(attempt.state, target):
            return Outcome.NONE
        attempt.state = target
        if target is AttemptState.SUCCEEDED:
            attempt.complete_time = now
            attempt.failure_code = attempt.failure_message = ""
            if not payment_may_move(self.state, PaymentState.SUCCEEDED):
                return Outcome.NONE
            self.state = PaymentState.SUCCEEDED
            self.succeed_time = now
            self.next_retry_time = None
            self.action_reason = None
            self.failure_code = self.failure_message = ""
            self.provider_payment_intent_id = attempt.provider_payment_intent_id
            self.payment_method_id = attempt.payment_method_id
            self.update_time = now
            return Outcome.SUCCEEDED
        if target is AttemptState.FAILED:
            attempt.complete_time = now
            attempt.failure_code = failure_code
            attempt.failure_message = failure_message
            if not latest or self.state is not PaymentState.PROCESSING:
                return Outcome.NONE
            after = after_failure(self.retries_used, retry_days, now)
            attempt.final_attempt = after.final
            self.retries_used = after.retries_used
            self.next_retry_time = after.next_retry_time
            self.state = PaymentState.FAILED if after.final else PaymentState.RETRY_SCHEDULED
            self.failure_code = failure_code
            self.failure_message = failure_message
            self.update_time = now
            return Outcome.FAILED
        # REQUIRES_ACTION: the bank wants the customer; no dunning until they act.
        attempt.failure_code = failure_code
        attempt.failure_message = failure_message
        if not latest or self.state is not PaymentState.PROCESSING:
            return Outcome.NONE
        self.state = PaymentState.REQUIRES_ACTION
        self.action_reason = ActionReason.AUTHENTICATION_REQUIRED
        self.update_time = now
        return Outcome.ACTION_REQUIRED

    def cancel(self, now: datetime) -> bool:
        if not payment_may_move(self.state, PaymentState.CANCELED):
            return False
        self.state = PaymentState.CANCELED
        self.next_retry_time = None
        self.update_time = now
        return True


@dataclass
class Refund:
    refund_id: str
    payment_id: str
    org_id: str
    invoice_id: str
    amount_minor: int
    currency_code: str
    reason: str
    credit_memo_id: str
    create_time: datetime
    state: RefundState = RefundState.PENDING
    provider_refund_id: str = ""
    complete_time: datetime | None = None

    def settle(self, status: str, provider_refund_id: str, now: datetime) -> bool:
        """Record the provider's answer; True when this refund just succeeded."""
        if provider_refund_id and not self.provider_refund_id:
            self.provider_refund_id = provider_refund_id
        if self.state is not RefundState.PENDING or status == "pending":
            return False
        self.state = RefundState.SUCCEEDED if status == "succeeded" else RefundState.FAILED
        self.complete_time = now
        return self.state is RefundState.SUCCEEDED
