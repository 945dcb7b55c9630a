"""A clean, printable HTML page of an invoice (served as google.api.HttpBody)."""

from __future__ import annotations

from html import escape

from services.invoicing import domain as d
from services.invoicing.rating import format_amount

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;margin:2.5em auto;
max-width:52em;padding:0 1em}h1{font-size:1.6em;margin:0}table{width:100%;border-collapse:collapse;
margin-top:1.5em}th,td{padding:.45em .3em;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;white-space:nowrap}.meta{display:flex;justify-content:space-between;
margin-top:1.2em}.tot td{border:none}.grand td{font-weight:bold;border-top:2px solid #222}
@media print{body{margin:0}}
"""


def _addr(profile: dict[str, object]) -> str:
    raw = profile.get("address")
    a: dict[str, object] = raw if isinstance(raw, dict) else {}
    parts = [
        a.get("line1"),
        a.get("line2"),
        " ".join(str(a.get(k) or "") for k in ("postal_code", "city")).strip(),
        a.get("region"),
        a.get("country_code"),
    ]
    return "<br>".join(escape(str(p)) for p in parts if p)


def render_html(inv: d.Invoice) -> bytes:
    c = inv.currency_code

    def amt(minor: int) -> str:
        return f"{escape(format_amount(minor, c))} {escape(c)}"

    p = inv.billing_profile
    title = f"Invoice {inv.number}" if inv.number else "Draft invoice"
    rows = "".join(
        f"<tr><td>{escape(li.description)}</td>"
        f"<td class=n>{escape(str(li.quantity.normalize()))}</td>"
        f"<td class=n>{amt(li.amount_minor)}</td></tr>"
        for li in inv.lines
        if li.kind is not d.LineKind.TAX
    )
    totals = [("Subtotal", inv.subtotal)]
    if inv.tax_rate:
        totals.append((f"Tax ({inv.tax_rate.normalize():f} %)", inv.tax))
    if inv.credit_applied:
        totals.append(("Credit applied", -inv.credit_applied))
    totals.append(("Total", inv.total))
    if inv.amount_credited:
        totals.append(("Credited", -inv.amount_credited))
    if inv.amount_paid:
        totals.append(("Paid", -inv.amount_paid))
    total_rows = "".join(
        f"<tr class='tot{' grand' if label == 'Total' else ''}'><td></td>"
        f"<td class=n>{escape(label)}</td>"
        f"<td class=n>{amt(v)}</td></tr>"
        for label, v in totals
    )
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<div class="meta"><div><strong>{escape(str(p.get("legal_name") or inv.org_id))}</strong>
<br>{_addr(p)}
{"<br>Tax id: " + escape(str(p["tax_id"])) if p.get("tax_id") else ""}</div>
<div>Status: {escape(inv.state.value)}<br>
Period: {inv.period_start:%Y-%m-%d} to {inv.period_end:%Y-%m-%d}<br>
{("Issued: " + f"{inv.finalize_time:%Y-%m-%d}") if inv.finalize_time else ""}<br>
Amount due: <strong>{amt(inv.amount_due)}</strong></div></div>
<table><thead><tr><th>Description</th><th class=n>Qty</th><th class=n>Amount</th></tr></thead>
<tbody>{rows}{total_rows}</tbody></table></body></html>"""
    return html.encode()
