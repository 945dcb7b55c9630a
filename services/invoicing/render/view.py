"""What a rendered invoice shows, computed once from the invoice: every text,
number and formatted amount of the page. The HTML and the PDF only lay it out,
so the two documents can never disagree on a figure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.invoicing import domain as d
from services.invoicing.rating import decimal_text, format_amount


@dataclass(frozen=True)
class LineView:
    description: str
    quantity: str
    amount: str


@dataclass(frozen=True)
class TotalView:
    label: str
    amount: str
    grand: bool = False


@dataclass(frozen=True)
class InvoiceView:
    """Plain, unescaped text: each renderer escapes for its own markup."""

    title: str
    draft: bool
    filename_stem: str
    bill_to: str
    address: tuple[str, ...]
    tax_id: str
    status: str
    period: str
    issued: str  # "" until finalized
    amount_due: str
    lines: tuple[LineView, ...]
    totals: tuple[TotalView, ...]


def money(minor: int, currency: str) -> str:
    """``4900 USD`` -> ``49.00 USD``, at the currency's own minor unit."""
    return f"{format_amount(minor, currency)} {currency}"


def _address(profile: dict[str, object]) -> tuple[str, ...]:
    raw = profile.get("address")
    a: dict[str, object] = raw if isinstance(raw, dict) else {}
    parts = [
        a.get("line1"),
        a.get("line2"),
        " ".join(str(a.get(k) or "") for k in ("postal_code", "city")).strip(),
        a.get("region"),
        a.get("country_code"),
    ]
    return tuple(str(p) for p in parts if p)


def _filename_stem(inv: d.Invoice) -> str:
    # The name travels in a Content-Disposition header: keep it to characters
    # that need no quoting in any header or file system.
    stem = inv.number or f"draft-{inv.invoice_id}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def invoice_view(inv: d.Invoice) -> InvoiceView:
    c = inv.currency_code
    totals = [TotalView("Subtotal", money(inv.subtotal, c))]
    if inv.tax_rate:
        totals.append(TotalView(f"Tax ({inv.tax_rate.normalize():f} %)", money(inv.tax, c)))
    if inv.credit_applied:
        totals.append(TotalView("Credit applied", money(-inv.credit_applied, c)))
    totals.append(TotalView("Total", money(inv.total, c), grand=True))
    if inv.amount_credited:
        totals.append(TotalView("Credited", money(-inv.amount_credited, c)))
    if inv.amount_paid:
        totals.append(TotalView("Paid", money(-inv.amount_paid, c)))
    p = inv.billing_profile
    return InvoiceView(
        title=f"Invoice {inv.number}" if inv.number else "Draft invoice",
        draft=inv.state is d.InvoiceState.DRAFT,
        filename_stem=_filename_stem(inv),
        bill_to=str(p.get("legal_name") or inv.org_id),
        address=_address(p),
        tax_id=str(p.get("tax_id") or ""),
        status=inv.state.value,
        period=f"{inv.period_start:%Y-%m-%d} to {inv.period_end:%Y-%m-%d}",
        issued=f"{inv.finalize_time:%Y-%m-%d}" if inv.finalize_time else "",
        amount_due=money(inv.amount_due, c),
        # Tax is a total, not a line of what was sold.
        lines=tuple(
            LineView(li.description, decimal_text(li.quantity), money(li.amount_minor, c))
            for li in inv.lines
            if li.kind is not d.LineKind.TAX
        ),
        totals=tuple(totals),
    )
