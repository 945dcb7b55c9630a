"""The invoicing domain: pure rules, no I/O imports."""

from services.invoicing.domain.building import (
    ClosedPeriod,
    base_fee_lines,
    billed_seconds,
    fees_within,
    open_period,
    open_period_segments,
    plan_change_lines,
)
from services.invoicing.domain.invoices import Invoice, invoice_number, round_to_minor
from services.invoicing.domain.periods import (
    minus_interval,
    nominal_seconds,
    plus_interval,
    prorate,
    seconds_between,
)
from services.invoicing.domain.values import (
    Interval,
    InvoiceReason,
    InvoiceState,
    Line,
    LineKind,
    Plan,
    Segment,
    SegmentKind,
    Settlement,
)

__all__ = [
    "ClosedPeriod",
    "Interval",
    "Invoice",
    "InvoiceReason",
    "InvoiceState",
    "Line",
    "LineKind",
    "Plan",
    "Segment",
    "SegmentKind",
    "Settlement",
    "base_fee_lines",
    "billed_seconds",
    "fees_within",
    "invoice_number",
    "minus_interval",
    "nominal_seconds",
    "open_period",
    "open_period_segments",
    "plan_change_lines",
    "plus_interval",
    "prorate",
    "round_to_minor",
    "seconds_between",
]
