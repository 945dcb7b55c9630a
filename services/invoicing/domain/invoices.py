"""The Invoice aggregate and the credit memo rules. Pure Python.

Money on an invoice is integer minor units; every line was rounded once when
it was built. ``total = subtotal + tax - credit_applied`` and never below zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.invoicing.domain.values import InvoiceReason, InvoiceState, Line, LineKind, Settlement
from services.invoicing.rating import round_to_minor
from services.kit.currency import minor_units
from services.kit.errors import FailedPrecondition, InvalidArgument

__all__ = ["Invoice", "invoice_number", "round_to_minor"]


def invoice_number(org_id: str, sequence: int) -> str:
    """``ACME-000042``: the org id's first 8 letters/digits (upper case), then the sequence."""
    tag = re.sub(r"[^A-Za-z0-9]", "", org_id).upper()[:8] or "ORG"
    return f"{tag}-{sequence:06d}"


def _illegal(
    inv: Invoice, action: str, reason: str = "INVOICE_STATE_CONFLICT"
) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"invoice {inv.invoice_id} is {inv.state.value}: cannot {action}",
        reason=reason,
        metadata={"current_state": inv.state.value, "action": action},
    )


@dataclass
class Invoice:
    invoice_id: str
    org_id: str
    subscription_id: str
    reason: InvoiceReason
    currency_code: str
    period_start: datetime
    period_end: datetime
    create_time: datetime
    state: InvoiceState = InvoiceState.DRAFT
    lines: list[Line] = field(default_factory=list)
    tax_rate: Decimal = Decimal(0)
    number: str = ""
    sequence_number: int = 0
    credit_applied: int = 0
    amount_paid: int = 0
    amount_credited: int = 0
    credited_to_due: int = 0
    billing_profile: dict[str, object] = field(default_factory=dict)
    update_time: datetime | None = None
    grace_period_end: datetime | None = None
    finalize_time: datetime | None = None
    due_time: datetime | None = None
    paid_time: datetime | None = None
    void_time: datetime | None = None
    uncollectible_time: datetime | None = None
    payment_id: str = ""
    status_reason: str = ""

    # ------------------------------------------------------------ totals

    @property
    def subtotal(self) -> int:
        return sum(li.amount_minor for li in self.lines if li.kind is not LineKind.TAX)

    @property
    def tax(self) -> int:
        return sum(li.amount_minor for li in self.lines if li.kind is LineKind.TAX)

    @property
    def gross(self) -> int:
        return self.subtotal + self.tax

    @property
    def total(self) -> int:
        return max(self.gross - self.credit_applied, 0)

    @property
    def outstanding(self) -> int:
        """What is still unpaid and uncredited, whatever the state."""
        return max(self.total - self.amount_paid - self.credited_to_due, 0)

    @property
    def amount_due(self) -> int:
        if self.state in (InvoiceState.PAID, InvoiceState.VOID, InvoiceState.UNCOLLECTIBLE):
            return 0
        return self.outstanding

    def retax(self, new_line_id: str) -> None:
        """Recompute the tax line from the other lines (drafts only)."""
        self.lines = [li for li in self.lines if li.kind is not LineKind.TAX]
        if self.tax_rate == 0:
            return
        exact = Decimal(self.subtotal) * self.tax_rate / Decimal(100)
        exact = exact.scaleb(-minor_units(self.currency_code))
        self.lines.append(
            Line(
                line_id=new_line_id,
                kind=LineKind.TAX,
                description=f"Tax ({self.tax_rate.normalize():f} %)",
                amount_minor=round_to_minor(exact, self.currency_code),
                unrounded=exact,
            )
        )

    # ------------------------------------------------------------ transitions

    def add_adjustment(self, line: Line, tax_line_id: str) -> None:
        if self.state is not InvoiceState.DRAFT:
            raise _illegal(self, "adjust", "INVOICE_NOT_DRAFT")
        self.lines.append(line)
        self.retax(tax_line_id)

    def finalize(self, sequence: int, now: datetime, credit_available: int) -> int:
        """Number it and freeze it; returns the credit balance consumed.

        A negative gross (credits larger than charges) finalizes at zero; the
        caller returns the excess to the credit balance.
        """
        if self.state is not InvoiceState.DRAFT:
            raise _illegal(self, "finalize", "INVOICE_NOT_DRAFT")
        self.state = InvoiceState.FINALIZED
        self.sequence_number = sequence
        self.number = invoice_number(self.org_id, sequence)
        self.finalize_time = now
        self.due_time = now
        self.update_time = now
        self.credit_applied = min(max(self.gross, 0), max(credit_available, 0))
        if self.total == 0:
            self.state = InvoiceState.PAID
            self.paid_time = now
        return self.credit_applied

    def pay(self, amount: int, payment_id: str, now: datetime) -> bool:
        """Apply a captured payment; True when this made the invoice paid."""
        if self.state not in (InvoiceState.FINALIZED, InvoiceState.UNCOLLECTIBLE):
            return False
        self.amount_paid += amount
        self.payment_id = payment_id
        self.update_time = now
        if self.amount_paid + self.credited_to_due >= self.total:
            self.state = InvoiceState.PAID
            self.paid_time = now
            return True
        return False

    def void(self, reason: str, now: datetime) -> None:
        if self.state is InvoiceState.PAID:
            raise _illegal(self, "void", "INVOICE_ALREADY_PAID")
        if (
            self.state is not InvoiceState.FINALIZED
            and self.state is not InvoiceState.UNCOLLECTIBLE
        ):
            raise _illegal(self, "void", "INVOICE_NOT_FINALIZED")
        self.state = InvoiceState.VOID
        self.void_time = now
        self.update_time = now
        self.status_reason = reason

    def mark_uncollectible(self, reason: str, now: datetime) -> None:
        if self.state is not InvoiceState.FINALIZED:
            raise _illegal(self, "mark uncollectible", "INVOICE_NOT_FINALIZED")
        self.state = InvoiceState.UNCOLLECTIBLE
        self.uncollectible_time = now
        self.update_time = now
        self.status_reason = reason

    # ------------------------------------------------------------ credit memos

    def creditable(self) -> int:
        """What remains uncredited of the invoice's total."""
        return max(self.total - self.amount_credited, 0)

    def plan_credit(
        self,
        requested: list[tuple[str, int]],
        credited_by_line: dict[str, int],
        settlement: Settlement | None,
    ) -> Settlement:
        """Check a credit memo (line id or "", amount) list; returns the settlement."""
        if self.state in (InvoiceState.DRAFT, InvoiceState.VOID):
            raise _illegal(self, "issue a credit memo", "INVOICE_NOT_CREDITABLE")
        by_id = {li.line_id: li for li in self.lines}
        per_line: dict[str, int] = {}
        for i, (line_id, amount) in enumerate(requested):
            if not line_id:
                continue
            line = by_id.get(line_id)
            if line is None:
                raise InvalidArgument.field(
                    f"lines[{i}].invoice_line_id", "is not a line of this invoice"
                )
            per_line[line_id] = per_line.get(line_id, 0) + amount
        for line_id, amount in per_line.items():
            left = by_id[line_id].amount_minor - credited_by_line.get(line_id, 0)
            if amount > left:
                raise FailedPrecondition(
                    message=f"line {line_id}: {amount} is above what remains ({max(left, 0)})",
                    reason="CREDIT_EXCEEDS_REMAINING",
                    metadata={"invoice_line_id": line_id, "remaining_minor": str(max(left, 0))},
                )
        amount = sum(a for _, a in requested)
        if amount > self.creditable():
            raise FailedPrecondition(
                message=f"credit {amount} is above what remains ({self.creditable()})",
                reason="CREDIT_EXCEEDS_REMAINING",
                metadata={"remaining_minor": str(self.creditable())},
            )
        paid = self.state is InvoiceState.PAID
        chosen = settlement or (Settlement.CREDIT_BALANCE if paid else Settlement.REDUCE_AMOUNT_DUE)
        if chosen is Settlement.REDUCE_AMOUNT_DUE and paid:
            raise _illegal(self, "reduce the amount due of a paid invoice", "INVOICE_ALREADY_PAID")
        if chosen is Settlement.REFUND and (not paid or not self.payment_id):
            raise _illegal(self, "refund without a captured payment", "INVOICE_NOT_PAID")
        if chosen is Settlement.REDUCE_AMOUNT_DUE and amount > self.outstanding:
            raise FailedPrecondition(
                message=f"credit {amount} is above the amount due ({self.outstanding})",
                reason="CREDIT_EXCEEDS_REMAINING",
                metadata={"remaining_minor": str(self.outstanding)},
            )
        return chosen

    def apply_credit(self, amount: int, settlement: Settlement, now: datetime) -> bool:
        """Record an issued memo; True when it settled the invoice (now paid)."""
        self.amount_credited += amount
        self.update_time = now
        if settlement is Settlement.REDUCE_AMOUNT_DUE:
            self.credited_to_due += amount
            if self.state is InvoiceState.FINALIZED and self.amount_due == 0:
                self.state = InvoiceState.PAID
                self.paid_time = now
                return True
        return False
