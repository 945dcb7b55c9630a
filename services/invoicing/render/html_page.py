"""The invoice as a clean, printable HTML page, laid out from its view."""

from __future__ import annotations

from html import escape

from services.invoicing.render.view import InvoiceView

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;margin:2.5em auto;
max-width:52em;padding:0 1em}h1{font-size:1.6em;margin:0}table{width:100%;border-collapse:collapse;
margin-top:1.5em}th,td{padding:.45em .3em;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;white-space:nowrap}.meta{display:flex;justify-content:space-between;
margin-top:1.2em}.tot td{border:none}.grand td{font-weight:bold;border-top:2px solid #222}
@media print{body{margin:0}}
"""


def render_html(view: InvoiceView) -> bytes:
    rows = "".join(
        f"<tr><td>{escape(li.description)}</td>"
        f"<td class=n>{escape(li.quantity)}</td>"
        f"<td class=n>{escape(li.amount)}</td></tr>"
        for li in view.lines
    )
    total_rows = "".join(
        f"<tr class='tot{' grand' if t.grand else ''}'><td></td>"
        f"<td class=n>{escape(t.label)}</td>"
        f"<td class=n>{escape(t.amount)}</td></tr>"
        for t in view.totals
    )
    address = "<br>".join(escape(part) for part in view.address)
    tax_id = "<br>Tax id: " + escape(view.tax_id) if view.tax_id else ""
    issued = "Issued: " + escape(view.issued) if view.issued else ""
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(view.title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(view.title)}</h1>
<div class="meta"><div><strong>{escape(view.bill_to)}</strong>
<br>{address}
{tax_id}</div>
<div>Status: {escape(view.status)}<br>
Period: {escape(view.period)}<br>
{issued}<br>
Amount due: <strong>{escape(view.amount_due)}</strong></div></div>
<table><thead><tr><th>Description</th><th class=n>Qty</th><th class=n>Amount</th></tr></thead>
<tbody>{rows}{total_rows}</tbody></table></body></html>"""
    return html.encode()
