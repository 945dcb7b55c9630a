"""SQL for the invoicing schema (SQLAlchemy 2 async): tables, repository, unit of work."""

from services.invoicing.repository.store import (
    InvoicingRepository,
    InvoicingUnitOfWork,
    PeriodAlreadyInvoiced,
)
from services.invoicing.repository.tables import (
    PERIOD_UNIQUE_INDEX,
    SCHEMA,
    billing_profile_table,
    credit_balance_table,
    credit_memo_table,
    invoice_counter_table,
    invoice_table,
    metadata,
    package_version_table,
    plan_change_table,
    subscription_table,
)

__all__ = [
    "PERIOD_UNIQUE_INDEX",
    "SCHEMA",
    "InvoicingRepository",
    "InvoicingUnitOfWork",
    "PeriodAlreadyInvoiced",
    "billing_profile_table",
    "credit_balance_table",
    "credit_memo_table",
    "invoice_counter_table",
    "invoice_table",
    "metadata",
    "package_version_table",
    "plan_change_table",
    "subscription_table",
]
