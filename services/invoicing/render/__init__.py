"""Printable documents of an invoice (RenderInvoice, RenderInvoicePdf).

``view`` computes what the document shows once; ``html_page`` and ``pdf``
lay that out. This package is presentation: it reads a domain invoice and
never changes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.invoicing import domain as d
from services.invoicing.render.html_page import render_html
from services.invoicing.render.pdf import PdfFonts, pdf_fonts, render_pdf
from services.invoicing.render.view import InvoiceView, invoice_view

__all__ = [
    "Document",
    "DocumentFormat",
    "InvoiceView",
    "PdfFonts",
    "invoice_view",
    "pdf_fonts",
    "render_document",
    "render_html",
    "render_pdf",
]


class DocumentFormat(StrEnum):
    HTML = "html"
    PDF = "pdf"


_CONTENT_TYPES = {
    DocumentFormat.HTML: "text/html; charset=utf-8",
    DocumentFormat.PDF: "application/pdf",
}


@dataclass(frozen=True)
class Document:
    content_type: str
    data: bytes
    filename: str  # "ORGACME-000001.pdf", for Content-Disposition


def render_document(inv: d.Invoice, fmt: DocumentFormat, fonts: PdfFonts) -> Document:
    view = invoice_view(inv)
    data = render_pdf(view, fonts) if fmt is DocumentFormat.PDF else render_html(view)
    return Document(_CONTENT_TYPES[fmt], data, f"{view.filename_stem}.{fmt.value}")
