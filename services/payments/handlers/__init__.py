"""Use cases of payments: each takes a PaymentsUnitOfWork and never commits.

``run_mutation`` (RPCs), the kit consumer (events), the webhook route or a job
opened the unit of work and commits it once. Provider calls happen between
use cases, never inside one (services/payments/dispatch.py).
"""

from services.payments.handlers.collection import (
    INVOICE_FINALIZED,
    INVOICE_PAID,
    INVOICE_UNCOLLECTIBLE,
    INVOICE_VOID,
    FinalizedInvoice,
    invoice_closed,
    invoice_finalized,
    mark_dispatch_failed,
    pay_invoice,
    record_outcome,
    resume_waiting,
    start_attempt,
    start_due_retries,
)
from services.payments.handlers.common import Policy, get_method, get_payment, new_id
from services.payments.handlers.methods import detach, make_default, record_customer, record_method
from services.payments.handlers.provider_events import Applied, apply_provider_event
from services.payments.handlers.refunds import request_refund, settle_refund

__all__ = [
    "INVOICE_FINALIZED",
    "INVOICE_PAID",
    "INVOICE_UNCOLLECTIBLE",
    "INVOICE_VOID",
    "Applied",
    "FinalizedInvoice",
    "Policy",
    "apply_provider_event",
    "detach",
    "get_method",
    "get_payment",
    "invoice_closed",
    "invoice_finalized",
    "make_default",
    "mark_dispatch_failed",
    "new_id",
    "pay_invoice",
    "record_customer",
    "record_method",
    "record_outcome",
    "request_refund",
    "resume_waiting",
    "settle_refund",
    "start_attempt",
    "start_due_retries",
]
