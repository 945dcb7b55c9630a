"""The invoice's printable documents: one view, laid out as HTML and as PDF.

PDFs are read back with pypdf, so what is asserted is the text a reader (or a
customer's accounting tool) finds in the file, not how it was built.
"""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoicing import domain as d
from services.invoicing.render import (
    DocumentFormat,
    invoice_view,
    pdf_fonts,
    render_document,
)
from services.kit.errors import StartupError

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
FONTS = pdf_fonts()
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def html_text(data: bytes) -> str:
    """The page's text as a browser shows it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "\n", data.decode()))


def invoice(
    *lines: tuple[str, int, str],
    currency: str = "USD",
    tax: str = "0",
    profile: dict[str, object] | None = None,
    finalize: bool = True,
    credit: int = 0,
) -> d.Invoice:
    inv = d.Invoice(
        "inv_1",
        "org_acme",
        "sub_1",
        d.InvoiceReason.PERIOD_CLOSE,
        currency,
        NOV,
        DEC,
        NOV,
        tax_rate=Decimal(tax),
        billing_profile=profile or {},
    )
    inv.lines = [
        d.Line(f"l{i}", d.LineKind.USAGE, text, minor, Decimal(minor), quantity=Decimal(qty))
        for i, (text, minor, qty) in enumerate(lines)
    ]
    inv.retax("tax")
    if finalize:
        inv.finalize(42, DEC, credit_available=credit)
    return inv


def test_pdf_holds_the_number_every_line_and_the_total() -> None:
    inv = invoice(
        ("Pro plan, November", 3000, "1"),
        ("API calls", 1234, "1234"),
        ("Storage GB-month", 6250, "150.000"),
        tax="20",
        credit=500,
    )
    doc = render_document(inv, DocumentFormat.PDF, FONTS)
    assert doc.content_type == "application/pdf"
    assert doc.data.startswith(b"%PDF-")
    assert doc.filename == "ORGACME-000042.pdf"
    text = pdf_text(doc.data)
    assert "Invoice ORGACME-000042" in text
    for description, amount in [
        ("Pro plan, November", "30.00 USD"),
        ("API calls", "12.34 USD"),
        ("Storage GB-month", "62.50 USD"),
    ]:
        assert description in text and amount in text
    # 104.84 + 20 % tax (20.97) - 5.00 credit applied
    assert "Tax (20 %)" in text and "20.97 USD" in text
    assert "-5.00 USD" in text
    assert re.search(r"Total\s+120\.81 USD", text)
    assert "Amount due: 120.81 USD" in text
    assert "Status: finalized" in text


def test_html_and_pdf_show_every_text_of_the_one_view() -> None:
    inv = invoice(
        ("Seats", 3700, "12"),
        ("SMS", 1500, "250"),
        tax="7.5",
        profile={
            "legal_name": "Acme SAS",
            "tax_id": "FR12345678901",
            "address": {"line1": "1 rue de Rivoli", "postal_code": "75001", "city": "Paris"},
        },
    )
    view = invoice_view(inv)
    page = html_text(render_document(inv, DocumentFormat.HTML, FONTS).data)
    pdf = pdf_text(render_document(inv, DocumentFormat.PDF, FONTS).data)
    texts = [view.title, view.bill_to, *view.address, view.tax_id, view.period, view.amount_due]
    texts += [t for li in view.lines for t in (li.description, li.quantity, li.amount)]
    texts += [t for total in view.totals for t in (total.label, total.amount)]
    for text in texts:
        assert text in page, text
        assert text in pdf, text
    assert [t.label for t in view.totals] == ["Subtotal", "Tax (7.5 %)", "Total"]


def test_money_follows_the_currency_minor_unit() -> None:
    yen = invoice(("Calls", 4900, "49"), currency="JPY")
    dinar = invoice(("Calls", 1500, "3"), currency="KWD")
    assert [li.amount for li in invoice_view(yen).lines] == ["4900 JPY"]
    assert [li.amount for li in invoice_view(dinar).lines] == ["1.500 KWD"]
    assert "4900 JPY" in pdf_text(render_document(yen, DocumentFormat.PDF, FONTS).data)


def test_quantities_are_plain_decimals() -> None:
    # Decimal.normalize() alone would print 1000 as "1E+3".
    inv = invoice(("Calls", 1000, "1000"), ("Hours", 50, "0.500"))
    assert [li.quantity for li in invoice_view(inv).lines] == ["1000", "0.5"]


def test_customer_text_is_text_never_markup() -> None:
    hostile = '<b>bold</b> <font size="40" color="red">big</font> <script>alert(1)</script> &amp; &'
    name = "<script>x</script> Müller & Söhne <br/> GmbH"
    inv = invoice((hostile, 100, "1"), profile={"legal_name": name, "tax_id": "<i>DE1</i>"})
    text = pdf_text(render_document(inv, DocumentFormat.PDF, FONTS).data)
    squeezed = re.sub(r"\s+", " ", text)
    assert hostile in squeezed
    assert name in squeezed
    assert "Tax id: <i>DE1</i>" in squeezed
    page = render_document(inv, DocumentFormat.HTML, FONTS).data.decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu Sans is not installed")
def test_non_latin_text_keeps_its_characters_with_a_font_that_has_them() -> None:
    fonts = pdf_fonts(DEJAVU)
    inv = invoice(
        ("Хранилище, ГБ·месяц", 700, "7"),
        profile={"legal_name": "Торговый дом «Ромашка» Ελληνικά"},
    )
    text = pdf_text(render_document(inv, DocumentFormat.PDF, fonts).data)
    assert "Хранилище, ГБ·месяц" in text
    assert "Торговый дом «Ромашка» Ελληνικά" in text


def test_a_draft_is_marked_draft_in_both_documents() -> None:
    inv = invoice(("Late usage", 345, "1"), finalize=False)
    view = invoice_view(inv)
    assert view.draft and view.title == "Draft invoice" and view.status == "draft"
    for fmt in DocumentFormat:
        doc = render_document(inv, fmt, FONTS)
        text = pdf_text(doc.data) if fmt is DocumentFormat.PDF else html_text(doc.data)
        assert "Draft invoice" in text and "Status: draft" in text
        assert "Issued" not in text
        assert doc.filename == f"draft-inv_1.{fmt.value}"


def test_the_same_invoice_gives_the_same_bytes() -> None:
    inv = invoice(("Seats", 3700, "12"))
    first = render_document(inv, DocumentFormat.PDF, FONTS).data
    assert render_document(inv, DocumentFormat.PDF, FONTS).data == first
    other = invoice(("Seats", 3701, "12"))
    assert render_document(other, DocumentFormat.PDF, FONTS).data != first


def test_a_long_invoice_runs_over_pages_with_every_line() -> None:
    lines = [(f"Usage item {i:03d}", 100 + i, "1") for i in range(150)]
    data = render_document(invoice(*lines), DocumentFormat.PDF, FONTS).data
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 1
    text = pdf_text(data)
    for description, minor, _ in lines:
        assert description in text and f"{minor / 100:.2f} USD" in text
    # The column header repeats on every page.
    assert all("Description" in page.extract_text() for page in reader.pages)
    assert re.search(r"Total\s+261\.75 USD", text)  # sum(100..249) = 26175


@settings(max_examples=25)
@given(st.text(alphabet=st.sampled_from("ab<>&;#/=\"'xX09!?"), min_size=1, max_size=40))
def test_any_description_comes_out_as_written(description: str) -> None:
    data = render_document(invoice((description, 100, "1")), DocumentFormat.PDF, FONTS).data
    assert description in re.sub(r"\s", "", pdf_text(data))


def test_a_font_file_that_is_no_font_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-font.ttf"
    bad.write_bytes(b"definitely not TrueType")
    with pytest.raises(StartupError, match=r"not-a-font\.ttf"):
        pdf_fonts(bad)
