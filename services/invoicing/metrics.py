"""``billing.invoice.processed{state}``: invoices entering a state.

Counted only once the transaction that moved the invoice commits, so a retried
or rolled-back use case is never counted.
"""

from __future__ import annotations

from opentelemetry import metrics

from services.kit.uow import UnitOfWork

_processed = metrics.get_meter("tally.invoicing").create_counter(
    "billing.invoice.processed",
    unit="{invoice}",
    description="Invoices that entered a state: draft, finalized, paid, voided, uncollectible",
)


def invoice_entered(uow: UnitOfWork, state: str) -> None:
    uow.after_commit(lambda: _processed.add(1, {"state": state}))
