"""What many tests build the same way: the sending organisation and PDFs of known pages."""

from __future__ import annotations

import io

import pikepdf
from pypdf import PdfWriter

from delivery.models import Address, Organisation

ORG = Organisation(
    name="Free Voices Network",
    email="cases@example.org",
    reply_to="replies@example.org",
    bounce_domain="bounces.example.org",
    address=Address(
        name="Free Voices Network",
        street="1 Example Lane",
        city="Exampleton",
        postal_code="EX1 2PL",
        country="United Kingdom",
    ),
)


def make_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` blank A4 pages."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def numbered_pdf(pages: int) -> bytes:
    """A PDF whose page n says "Page n", so a part can be read back for its pages."""
    pdf = pikepdf.Pdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for number in range(1, pages + 1):
        page = pdf.add_blank_page(page_size=(595, 842))
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
        page.obj.Contents = pdf.make_stream(
            f"BT /F1 14 Tf 72 760 Td (Page {number}) Tj ET".encode()
        )
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
