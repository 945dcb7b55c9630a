"""One verification run: the ledger snapshot, then payments through its API."""

from __future__ import annotations

from collections.abc import Mapping

from services.verify.findings import Report
from services.verify.ledger import check_ledger
from services.verify.payments import check_payments


async def verify(
    database_url: str,
    *,
    payments_addr: str | None = None,
    schemas: Mapping[str, str] | None = None,
    settle_seconds: float = 60.0,
) -> Report:
    """Read-only: never writes, never calls a mutating RPC."""
    report = Report()
    snapshot = await check_ledger(
        database_url, report, schemas=schemas, settle_seconds=settle_seconds
    )
    if payments_addr:
        await check_payments(payments_addr, snapshot.invoices, snapshot.now, settle_seconds, report)
    else:
        report.notes.append("no payments address: payment checks skipped")
    return report
