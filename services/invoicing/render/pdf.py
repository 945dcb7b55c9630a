"""The invoice as a PDF (ReportLab), laid out from the same view as the HTML.

Text is drawn with an embedded TrueType font so that names and descriptions
outside Latin-1 keep their characters (the PDF base fonts cannot show
them): DejaVu Sans where the OS has it (Cyrillic, Greek, Latin extended),
else Bitstream Vera, which ships inside ReportLab (Latin only), unless
``INVOICING_PDF_FONT_FILE`` names another font.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import reportlab
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.invoicing.render.view import InvoiceView
from services.kit.errors import StartupError

_BUNDLED = Path(reportlab.__file__).parent / "fonts"
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
_INK = colors.HexColor("#222222")
_RULE = colors.HexColor("#dddddd")


@dataclass(frozen=True)
class PdfFonts:
    """Paths of the regular and bold TrueType fonts the PDF embeds."""

    regular: Path
    bold: Path


def pdf_fonts(regular: Path | None = None, bold: Path | None = None) -> PdfFonts:
    """The configured font (bold defaults to it), else DejaVu Sans, else Vera.

    Both are loaded now, so a file that is not a usable TrueType font stops the
    service at start-up (``StartupError``) rather than failing its first PDF.
    """
    if regular is not None:
        fonts = PdfFonts(regular, bold or regular)
    else:
        fonts = PdfFonts(_DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf")
        if not (fonts.regular.is_file() and fonts.bold.is_file()):
            fonts = PdfFonts(_BUNDLED / "Vera.ttf", _BUNDLED / "VeraBd.ttf")
    for path in (fonts.regular, fonts.bold):
        try:
            _font_name(path)
        except (TTFError, OSError) as exc:
            raise StartupError(f"invoice PDF font {path}: {exc}") from None
    return fonts


@cache
def _font_name(path: Path) -> str:
    # ReportLab's font registry is global: one name per file, registered once.
    name = f"tally-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    pdfmetrics.registerFont(TTFont(name, str(path)))
    return name


@dataclass(frozen=True)
class _Styles:
    regular: str
    bold: str
    title: ParagraphStyle
    text: ParagraphStyle
    text_right: ParagraphStyle


def _styles(fonts: PdfFonts) -> _Styles:
    regular, bold = _font_name(fonts.regular), _font_name(fonts.bold)
    text = ParagraphStyle("text", fontName=regular, fontSize=10, leading=13, textColor=_INK)
    return _Styles(
        regular=regular,
        bold=bold,
        title=ParagraphStyle("title", parent=text, fontName=bold, fontSize=18, leading=22),
        text=text,
        text_right=ParagraphStyle("right", parent=text, alignment=TA_RIGHT),
    )


def _para(parts: list[str], style: ParagraphStyle) -> Paragraph:
    """A paragraph of already escaped parts, one per line."""
    return Paragraph("<br/>".join(parts), style)


def _text(value: str) -> str:
    # Paragraph reads an XML-like markup: customer text (descriptions, names)
    # must never become tags, so every such string is escaped, nothing else.
    return escape(value)


def _header(view: InvoiceView, s: _Styles, width: float) -> Table:
    party = [f'<font name="{s.bold}">{_text(view.bill_to)}</font>']
    party += [_text(part) for part in view.address]
    if view.tax_id:
        party.append("Tax id: " + _text(view.tax_id))
    facts = [f"Status: {_text(view.status)}", f"Period: {_text(view.period)}"]
    if view.issued:
        facts.append(f"Issued: {_text(view.issued)}")
    facts.append(f'Amount due: <font name="{s.bold}">{_text(view.amount_due)}</font>')
    table = Table(
        [[_para(party, s.text), _para(facts, s.text_right)]],
        colWidths=[width * 0.55, width * 0.45],
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _lines(view: InvoiceView, s: _Styles, width: float) -> Table:
    rows: list[list[object]] = [["Description", "Qty", "Amount"]]
    rows += [
        [Paragraph(_text(li.description), s.text), li.quantity, li.amount] for li in view.lines
    ]
    first_total = len(rows)
    rows += [["", t.label, t.amount] for t in view.totals]
    style: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, -1), s.regular),
        ("FONTNAME", (0, 0), (-1, 0), s.bold),
        ("FONTSIZE", (0, 0), (-1, -1), 10),
        ("TEXTCOLOR", (0, 0), (-1, -1), _INK),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, first_total - 1), 0.5, _RULE),
    ]
    for offset, total in enumerate(view.totals):
        if total.grand:
            row = first_total + offset
            style += [
                ("FONTNAME", (1, row), (-1, row), s.bold),
                ("LINEABOVE", (1, row), (-1, row), 1.5, _INK),
            ]
    qty, amount = 25 * mm, 38 * mm
    # The header row repeats on every page of a long invoice.
    table = Table(rows, colWidths=[width - qty - amount, qty, amount], repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle(style))
    return table


def render_pdf(view: InvoiceView, fonts: PdfFonts) -> bytes:
    s = _styles(fonts)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=view.title,
        subject="Invoice",
        creator="Tally",
        lang="en",
        # No timestamp or random id in the file: the same invoice always gives
        # the same bytes, whichever route asked for it.
        invariant=True,
    )

    def footer(canvas: Canvas, _doc: SimpleDocTemplate) -> None:
        canvas.setFont(s.regular, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawRightString(
            A4[0] - 18 * mm, 10 * mm, f"{view.title} · page {canvas.getPageNumber()}"
        )

    story: list[Flowable] = [
        Paragraph(_text(view.title), s.title),
        Spacer(1, 6 * mm),
        _header(view, s, doc.width),
        Spacer(1, 8 * mm),
        _lines(view, s, doc.width),
    ]
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
