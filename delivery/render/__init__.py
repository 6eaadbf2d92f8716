"""Rendering: PDF bundles, e-mail digests, and the sandboxed templates behind them."""

from delivery.render.bundle import (
    BundleDocument,
    RenderedBundle,
    render_bundle,
    supporter_display,
)
from delivery.render.email import compose_email
from delivery.render.env import make_environment, render_template
from delivery.render.pdf import html_to_pdf, pdf_page_count

__all__ = [
    "BundleDocument",
    "RenderedBundle",
    "compose_email",
    "html_to_pdf",
    "make_environment",
    "pdf_page_count",
    "render_bundle",
    "render_template",
    "supporter_display",
]
