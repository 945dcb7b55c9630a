"""Payment and attempt states, and the transitions allowed between them.

Explicit tables rather than ad-hoc checks: provider events arrive late, twice
and out of order, so "may this outcome still change anything?" must have one
answer everywhere. A state never moves backwards: SUCCEEDED is terminal (only
refunds follow), and an outcome that would undo a newer one is ignored.
"""

from __future__ import annotations

from enum import StrEnum


class PaymentState(StrEnum):
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class AttemptState(StrEnum):
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class AttemptTrigger(StrEnum):
    INVOICE_FINALIZED = "INVOICE_FINALIZED"
    DUNNING_RETRY = "DUNNING_RETRY"
    ON_DEMAND = "ON_DEMAND"


class RefundState(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class ActionReason(StrEnum):
    NO_PAYMENT_METHOD = "NO_PAYMENT_METHOD"
    AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"


PS, AS = PaymentState, AttemptState

PAYMENT_TRANSITIONS: dict[PaymentState, frozenset[PaymentState]] = {
    PS.PROCESSING: frozenset(
        {PS.REQUIRES_ACTION, PS.RETRY_SCHEDULED, PS.SUCCEEDED, PS.FAILED, PS.CANCELED}
    ),
    PS.REQUIRES_ACTION: frozenset(
        {PS.PROCESSING, PS.RETRY_SCHEDULED, PS.SUCCEEDED, PS.FAILED, PS.CANCELED}
    ),
    PS.RETRY_SCHEDULED: frozenset(
        {PS.PROCESSING, PS.REQUIRES_ACTION, PS.SUCCEEDED, PS.FAILED, PS.CANCELED}
    ),
    PS.FAILED: frozenset({PS.PROCESSING, PS.REQUIRES_ACTION, PS.SUCCEEDED, PS.CANCELED}),
    PS.SUCCEEDED: frozenset(),
    # Money captured for a voided invoice must still show (and be refundable).
    PS.CANCELED: frozenset({PS.SUCCEEDED}),
}

ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AS.PROCESSING: frozenset({AS.REQUIRES_ACTION, AS.SUCCEEDED, AS.FAILED, AS.CANCELED}),
    AS.REQUIRES_ACTION: frozenset({AS.PROCESSING, AS.SUCCEEDED, AS.FAILED, AS.CANCELED}),
    # A captured charge is the truth even when a failure was recorded first
    # (the failure webhook may describe an earlier confirmation of the intent).
    AS.FAILED: frozenset({AS.SUCCEEDED}),
    AS.CANCELED: frozenset({AS.SUCCEEDED}),
    AS.SUCCEEDED: frozenset(),
}

# Payments that still want collecting: a retry, PayInvoice or a new default
# method may start an attempt for them.
OPEN_PAYMENT_STATES = frozenset({PS.REQUIRES_ACTION, PS.RETRY_SCHEDULED, PS.FAILED})


def payment_may_move(current: PaymentState, target: PaymentState) -> bool:
    return target in PAYMENT_TRANSITIONS[current]


def attempt_may_move(current: AttemptState, target: AttemptState) -> bool:
    return target in ATTEMPT_TRANSITIONS[current]
