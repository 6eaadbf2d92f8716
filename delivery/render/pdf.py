"""HTML to PDF with WeasyPrint, fetching nothing but the template files.

The URL fetcher serves files inside the templates folder and ``data:`` URLs, and refuses
everything else by raising, so a render never touches the network or the rest of the
disk. Refusals stop the render and come back as :class:`RenderError`.

Output is reproducible: the PDF identifier is derived from the HTML, the metadata dates
come from the document's own ``dcterms.created``/``dcterms.modified`` meta elements (or
are left out), and nothing else in the file depends on the clock.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import DataHandler, Request, url2pathname

import pypdf
from weasyprint import HTML
from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

from delivery.errors import RenderError

_LOCAL_HOSTS = frozenset({"", "localhost"})

# fontTools stamps every font it saves (emoji fonts stripped of bitmaps, instantiated
# variable fonts, subsets without HarfBuzz) with the time in SOURCE_DATE_EPOCH, or now.
# A fixed value keeps the embedded fonts, so the whole PDF, byte-stable.
_SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
FONT_TIMESTAMP = "1577836800"  # 2020-01-01T00:00:00Z
_epoch_lock = threading.Lock()
_epoch_users = 0
_epoch_saved: str | None = None


class FetchRefusedError(PermissionError):
    """A resource URL that the renderer will not fetch."""


class TemplateFetcher(URLFetcher):  # type: ignore[misc]  # weasyprint is untyped
    """Serves files inside ``templates`` and ``data:`` URLs; refuses everything else."""

    def __init__(self, templates: Path) -> None:
        super().__init__(
            timeout=1,
            allowed_protocols=("file", "data"),
            allow_redirects=False,
            fail_on_errors=True,
        )
        try:
            self.root = templates.resolve(strict=True)
        except OSError as error:
            raise RenderError(f"{templates}: templates folder not found") from error
        if not self.root.is_dir():
            raise RenderError(f"{templates}: templates folder is not a folder")

    def fetch(self, url: str, headers: object = None) -> URLFetcherResponse:
        scheme = url.partition(":")[0].lower() if ":" in url else ""
        if scheme == "data":
            return self._fetch_data(url)
        if scheme == "file":
            return self._fetch_file(url)
        raise FetchRefusedError(f"refused to fetch {url[:200]!r}: not a template file")

    def _fetch_data(self, url: str) -> URLFetcherResponse:
        # Only ever reached for the data: scheme; DataHandler opens nothing else.
        response = DataHandler().data_open(Request(url))  # noqa: S310
        body = response.read()
        content_type = response.headers.get("Content-Type", "text/plain")
        return URLFetcherResponse(url, body, {"Content-Type": content_type})

    def _fetch_file(self, url: str) -> URLFetcherResponse:
        path = self.template_path(url)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(path.as_uri(), path.read_bytes(), {"Content-Type": content_type})

    def template_path(self, url: str) -> Path:
        """The file a ``file:`` URL names, if it is a regular file inside the templates."""
        parts = urlsplit(url)
        refused = FetchRefusedError(
            f"refused to fetch {url[:200]!r}: not a file inside the templates folder"
        )
        if parts.scheme.lower() != "file" or parts.netloc.lower() not in _LOCAL_HOSTS:
            raise refused
        raw_path = url2pathname(unquote(parts.path))
        if not os.path.isabs(raw_path) or ".." in Path(raw_path).parts:
            raise refused
        try:
            resolved = Path(raw_path).resolve(strict=True)  # follows every symlink
        except (OSError, RuntimeError, ValueError) as error:
            raise refused from error
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            raise refused
        return resolved


@contextmanager
def fixed_font_timestamps() -> Iterator[None]:
    """Pin SOURCE_DATE_EPOCH while any render runs; restore what was there after the last."""
    global _epoch_users, _epoch_saved
    with _epoch_lock:
        if _epoch_users == 0:
            _epoch_saved = os.environ.get(_SOURCE_DATE_EPOCH)
            os.environ[_SOURCE_DATE_EPOCH] = FONT_TIMESTAMP
        _epoch_users += 1
    try:
        yield
    finally:
        with _epoch_lock:
            _epoch_users -= 1
            if _epoch_users == 0:
                if _epoch_saved is None:
                    os.environ.pop(_SOURCE_DATE_EPOCH, None)
                else:
                    os.environ[_SOURCE_DATE_EPOCH] = _epoch_saved


def pdf_identifier(html: str) -> bytes:
    """A stable PDF file identifier: the same HTML always gives the same one."""
    return hashlib.sha256(html.encode("utf-8", "surrogatepass")).hexdigest()[:32].encode()


def html_to_pdf(html: str, *, templates: Path) -> tuple[bytes, int]:
    """Render ``html`` (relative URLs resolve in ``templates``): the PDF and its page count."""
    fetcher = TemplateFetcher(templates)
    base_url = fetcher.root.as_uri() + "/"
    try:
        with fixed_font_timestamps():
            document = HTML(string=html, base_url=base_url, url_fetcher=fetcher).render(
                presentational_hints=False, pdf_forms=False
            )
            pdf = document.write_pdf(
                pdf_identifier=pdf_identifier(html),
                presentational_hints=False,
                pdf_forms=False,
            )
    except FatalURLFetchingError as error:
        cause = error.__cause__ or error
        raise RenderError(f"PDF render stopped: {cause}") from error
    except (ValueError, TypeError, OSError, LookupError, AssertionError) as error:
        raise RenderError(f"PDF render failed: {type(error).__name__}: {error}") from error
    if not isinstance(pdf, bytes):
        raise RenderError("PDF render produced no bytes")
    return pdf, len(document.pages)


@dataclass(frozen=True, kw_only=True)
class LaidOut:
    """A rendered document: its PDF, its pages, and the page each anchor (HTML id) is on."""

    pdf: bytes
    pages: int
    anchors: dict[str, int]  # id → 1-based page
    anchor_tops: dict[str, float]  # id → distance from the top of its page, in CSS px
    page_height: float  # CSS px


def lay_out(html: str, *, templates: Path) -> LaidOut:
    """Render ``html`` like :func:`html_to_pdf`, keeping where every anchor landed.

    No PDF file identifier is written here: the finishing step (``volumes.finish``) gives
    the final file a deterministic one.
    """
    fetcher = TemplateFetcher(templates)
    base_url = fetcher.root.as_uri() + "/"
    try:
        with fixed_font_timestamps():
            document = HTML(string=html, base_url=base_url, url_fetcher=fetcher).render(
                presentational_hints=False, pdf_forms=False
            )
            pdf = document.write_pdf(presentational_hints=False, pdf_forms=False)
    except FatalURLFetchingError as error:
        cause = error.__cause__ or error
        raise RenderError(f"PDF render stopped: {cause}") from error
    except (ValueError, TypeError, OSError, LookupError, AssertionError) as error:
        raise RenderError(f"PDF render failed: {type(error).__name__}: {error}") from error
    anchors: dict[str, int] = {}
    tops: dict[str, float] = {}
    for number, page in enumerate(document.pages, start=1):
        for name, position in page.anchors.items():
            anchors.setdefault(name, number)
            tops.setdefault(name, float(position[1]))
    height = float(document.pages[0].height) if document.pages else 0.0
    return LaidOut(
        pdf=pdf, pages=len(document.pages), anchors=anchors, anchor_tops=tops, page_height=height
    )


def pdf_page_count(pdf: bytes) -> int:
    """How many pages ``pdf`` has, read back with pypdf."""
    try:
        return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
    except pypdf.errors.PyPdfError as error:
        raise RenderError(f"not a readable PDF: {error}") from error
