"""SQL for the payments schema (SQLAlchemy 2 async): tables, repository, unit of work."""

from services.payments.repository.store import Means, PaymentsRepository, PaymentsUnitOfWork
from services.payments.repository.tables import (
    SCHEMA,
    customer_table,
    invoice_table,
    metadata,
    payment_attempt_table,
    payment_method_table,
    payment_table,
    provider_event_table,
    refund_table,
    sync_state_table,
)

__all__ = [
    "SCHEMA",
    "Means",
    "PaymentsRepository",
    "PaymentsUnitOfWork",
    "customer_table",
    "invoice_table",
    "metadata",
    "payment_attempt_table",
    "payment_method_table",
    "payment_table",
    "provider_event_table",
    "refund_table",
    "sync_state_table",
]
