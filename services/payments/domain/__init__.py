"""The payments domain: pure rules, no I/O imports."""

from services.payments.domain.dunning import AfterFailure, after_failure
from services.payments.domain.keys import attempt_key, customer_key, refund_key, request_key
from services.payments.domain.model import Attempt, Outcome, Payment, Refund
from services.payments.domain.refunds import refundable
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

__all__ = [
    "OPEN_PAYMENT_STATES",
    "ActionReason",
    "AfterFailure",
    "Attempt",
    "AttemptState",
    "AttemptTrigger",
    "Outcome",
    "Payment",
    "PaymentState",
    "Refund",
    "RefundState",
    "after_failure",
    "attempt_key",
    "attempt_may_move",
    "customer_key",
    "payment_may_move",
    "refund_key",
    "refundable",
    "request_key",
]
