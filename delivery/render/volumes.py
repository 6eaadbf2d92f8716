"""Large bundles in volumes: laid out in parallel, joined without re-rendering.

WeasyPrint holds every page of a document in memory while it lays it out (about 0.2 MB a
page), so a 50,000-page bundle cannot be one document. A bundle is cut into volumes of a
few hundred pages at block boundaries; each volume is rendered on its own, in a worker
process, with no footer. Once every volume's page count is known, footer pages ("Bundle …
· Page X of Y") are rendered with the numbers written out and stamped onto the volume
pages, the volumes are joined with qpdf (pikepdf), the manifest is attached, and the file
is saved with a deterministic identifier, so the same bundle gives the same bytes.

The functions here that take paths run inside render processes; they exchange files, not
large byte strings, with the parent.
"""

from __future__ import annotations

import html as html_escape
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pikepdf

from delivery.errors import RenderError

STAMPS_PER_JOB = 2_000  # footer pages rendered in one job


@dataclass(frozen=True, kw_only=True)
class VolumeResult:
    path: Path
    pages: int
    anchors: dict[str, int]  # block anchor → 1-based page within the volume
    anchor_tops: dict[str, float]
    page_height: float


def render_volume(html: str, templates: Path, out: Path) -> VolumeResult:
    """Lay out one volume and write its PDF to ``out`` (runs in a render process)."""
    from delivery.render.pdf import lay_out  # WeasyPrint loads only to render

    laid = lay_out(html, templates=templates)
    out.write_bytes(laid.pdf)
    return VolumeResult(
        path=out,
        pages=laid.pages,
        anchors=laid.anchors,
        anchor_tops=laid.anchor_tops,
        page_height=laid.page_height,
    )


def stamps_html(bundle_id: str, first: int, last: int, total: int) -> str:
    """Footer-only pages ``first``..``last`` of ``total`` (the numbers written out)."""
    ident = html_escape.escape(bundle_id)
    pages = "".join(f'<div class="stamp">Page {n} of {total}</div>' for n in range(first, last + 1))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="stylesheet" href="stamp.css"></head>'
        f'<body><div class="bundle-id">{ident}</div>{pages}</body></html>'
    )


def render_stamps(
    bundle_id: str, first: int, last: int, total: int, templates: Path, out: Path
) -> int:
    """Render footer pages ``first``..``last`` to ``out``; returns how many (render process)."""
    from delivery.render.pdf import lay_out

    laid = lay_out(stamps_html(bundle_id, first, last, total), templates=templates)
    expected = last - first + 1
    if laid.pages != expected:
        raise RenderError(f"bundle {bundle_id}: footer pages came out {laid.pages}, not {expected}")
    out.write_bytes(laid.pdf)
    return laid.pages


def stamp_ranges(total: int, per_job: int = STAMPS_PER_JOB) -> list[tuple[int, int]]:
    """1-based inclusive page ranges for the footer jobs."""
    return [(start, min(start + per_job - 1, total)) for start in range(1, total + 1, per_job)]


@dataclass(frozen=True, kw_only=True)
class Finish:
    """How to put the final file together."""

    parts: tuple[Path, ...]  # PDFs to join, in order
    stamps: tuple[Path, ...]  # footer pages to lay over the joined pages, in order; () for none
    manifest: bytes  # attached to the PDF as manifest.json
    title: str
    author: str
    created: str  # ISO 8601, the bundle's creation time
    blank_after: tuple[int, ...] = ()  # part indexes followed by a blank page (duplex envelopes)
    out: Path = Path()


def finish(spec: Finish) -> int:
    """Join, stamp, attach the manifest, save deterministically; returns the page count."""
    with pikepdf.Pdf.new() as joined:
        opened = [pikepdf.Pdf.open(path) for path in spec.parts]
        try:
            for index, part in enumerate(opened):
                joined.pages.extend(part.pages)
                if index in spec.blank_after:
                    joined.add_blank_page(page_size=_page_size(part.pages[-1]))
            _stamp(joined, spec.stamps)
            _describe(joined, spec)
            joined.save(
                spec.out,
                deterministic_id=True,
                object_stream_mode=pikepdf.ObjectStreamMode.generate,
            )
            return len(joined.pages)
        finally:
            for part in opened:
                part.close()


def _page_size(page: pikepdf.Page) -> tuple[float, float]:
    box = page.mediabox
    return float(box[2]) - float(box[0]), float(box[3]) - float(box[1])


def _stamp(joined: pikepdf.Pdf, stamps: Sequence[Path]) -> None:
    """Draw footer page k over bundle page k, under a fixed resource name (reproducible)."""
    if not stamps:
        return
    number = 0
    for path in stamps:
        with pikepdf.Pdf.open(path) as stamp_pdf:
            for stamp in stamp_pdf.pages:
                if number >= len(joined.pages):
                    raise RenderError("more footer pages than bundle pages")
                _overlay(joined, joined.pages[number], stamp, number)
                number += 1
    if number != len(joined.pages):
        raise RenderError(
            f"footer pages ({number}) do not match bundle pages ({len(joined.pages)})"
        )


def _overlay(joined: pikepdf.Pdf, page: pikepdf.Page, stamp: pikepdf.Page, number: int) -> None:
    # Pages of one volume share their resources: every footer needs a name of its own.
    form = joined.copy_foreign(stamp.as_form_xobject())
    name = page.add_resource(form, pikepdf.Name.XObject, pikepdf.Name(f"/FxFooter{number}"))
    page.contents_add(joined.make_stream(b"q\n"), prepend=True)  # keep the page's own state
    page.contents_add(
        joined.make_stream(b"\nQ q " + bytes(name.unparse()) + b" Do Q"), prepend=False
    )


def _describe(pdf: pikepdf.Pdf, spec: Finish) -> None:
    pdf.attachments["manifest.json"] = pikepdf.AttachedFileSpec(
        pdf,
        spec.manifest,
        filename="manifest.json",
        mime_type="application/json",
        description="Message ids, text hashes and counts of this bundle",
    )
    stamp = "D:" + spec.created.replace("-", "").replace(":", "").replace("T", "")[:14] + "Z"
    pdf.docinfo["/Title"] = spec.title
    pdf.docinfo["/Author"] = spec.author
    pdf.docinfo["/Producer"] = "Solidarity Delivery"
    pdf.docinfo["/CreationDate"] = stamp
    pdf.docinfo["/ModDate"] = stamp


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()
