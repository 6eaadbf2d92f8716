"""Merge: one recipient's messages → the PDF that is delivered, at campaign scale.

Messages become blocks (identical letters printed once with their signatories), the
blocks' characters are checked against the installed fonts, and the bundle is laid out:
as one document when it is small, in volumes rendered in parallel and joined when it is
large, and — for a prison with a page limit — as envelopes, each a complete document that
fits the facility's limit. Every layout runs in the render pool, never in the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from delivery.config import RenderSettings
from delivery.errors import RenderError
from delivery.models import RecipientKind
from delivery.render import grouping, volumes
from delivery.render.blocks import Block, Line, NameBlock, TextBlock
from delivery.render.bundle import BundleDocument, bundle_context, manifest, template_version
from delivery.render.env import make_environment, render_template
from delivery.render.fonts import preflight

R = TypeVar("R")
LINES_PER_PAGE = 52  # body lines on an A4 page in base.css, for cutting volumes
CHARS_PER_LINE = 95  # characters on one body line
NAMES_PER_PAGE = 150  # signatory names on a page, three columns


class Runner(Protocol):
    async def run(self, label: str, fn: Callable[..., R], *args: Any) -> R: ...


@dataclass(frozen=True, kw_only=True)
class Envelope:
    number: int
    of: int
    first_page: int  # in the joined bundle
    last_page: int
    message_ids: tuple[int, ...]

    @property
    def pages(self) -> int:
        return self.last_page - self.first_page + 1


@dataclass(frozen=True, kw_only=True)
class Merged:
    path: Path
    pages: int
    manifest: dict[str, Any]
    template_version: str
    volumes: int
    envelopes: tuple[Envelope, ...] = field(default_factory=tuple)


def plan_volumes(blocks: Sequence[Block], *, target_lines: int) -> list[tuple[int, int]]:
    """Cut ``blocks`` into [start, stop) ranges of about ``target_lines`` printed lines."""
    ranges: list[tuple[int, int]] = []
    start, lines = 0, 0
    for index, block in enumerate(blocks):
        size = grouping.estimate_lines(block)
        if lines and lines + size > target_lines:
            ranges.append((start, index))
            start, lines = index, 0
        lines += size
    ranges.append((start, len(blocks)))
    return ranges


def printed_texts(doc: BundleDocument, blocks: Sequence[Block]) -> Iterator[str]:
    """Every piece of text the bundle prints, for the font preflight."""
    yield doc.case.name
    yield doc.case.demand
    yield doc.recipient.name
    for block in blocks:
        if isinstance(block, NameBlock):
            yield from block.names
        else:
            yield block.who
            yield from (line.text for line in block.lines)
            yield from block.signatories


class Merger:
    """Lays out one bundle with a runner (the render pool) and a scratch folder."""

    def __init__(
        self, runner: Runner, templates: Path, settings: RenderSettings, workdir: Path
    ) -> None:
        self.runner = runner
        self.templates = templates
        self.settings = settings
        self.workdir = workdir
        self.env = make_environment(templates)

    async def merge(self, doc: BundleDocument) -> Merged:
        """The bundle's final PDF (in the work folder), or RenderError naming the bundle."""
        limit = doc.recipient.page_limit if doc.recipient.kind is RecipientKind.PRISON else None
        per_part = grouping.DEFAULT_NAMES_PER_PART
        if limit:  # signatory lists in parts that fit an envelope's pages
            per_part = min(per_part, max(20, (2 * limit - 1) * NAMES_PER_PAGE // 2))
        blocks = grouping.build_blocks(doc.messages, doc.recipient.kind, names_per_part=per_part)
        preflight(printed_texts(doc, blocks), what=f"bundle {doc.bundle_id}")
        version = template_version(self.templates)
        base = bundle_context(doc)
        try:
            if limit:
                return await self._envelopes(doc, blocks, base, version, 2 * limit)
            ranges = plan_volumes(blocks, target_lines=self.settings.volume_pages * LINES_PER_PAGE)
            if len(ranges) == 1:
                return await self._single(doc, blocks, base, version)
            return await self._volumes(doc, blocks, ranges, base, version)
        except BaseException:
            self._clean(doc, keep_final=False)
            raise

    def _clean(self, doc: BundleDocument, *, keep_final: bool) -> None:
        """Remove the bundle's scratch PDFs (they hold supporters' text)."""
        if not self.workdir.is_dir():
            return
        final = self._path(doc, "final")
        for path in self.workdir.glob(f"{doc.bundle_id}.*.pdf"):
            if not (keep_final and path == final):
                path.unlink(missing_ok=True)

    def _html(
        self,
        base: dict[str, Any],
        blocks: Sequence[Block],
        *,
        first: bool,
        footer: bool,
        envelope: dict[str, int] | None = None,
    ) -> str:
        context = {
            **base,
            "blocks": blocks,
            "first_volume": first,
            "show_countries": first and (envelope is None or envelope["number"] == 1),
            "footer": footer,
            "envelope": envelope,
        }
        return render_template(self.env, "bundle.html.j2", **context)

    def _path(self, doc: BundleDocument, name: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / f"{doc.bundle_id}.{name}.pdf"

    async def _single(
        self, doc: BundleDocument, blocks: Sequence[Block], base: dict[str, Any], version: str
    ) -> Merged:
        html = self._html(base, blocks, first=True, footer=True)
        volume = await self.runner.run(
            f"bundle {doc.bundle_id}",
            volumes.render_volume,
            html,
            self.templates,
            self._path(doc, "v1"),
        )
        pages = _block_pages(blocks, [volume])
        return await self._finish(doc, [volume.path], (), pages, version, volumes_count=1)

    async def _volumes(
        self,
        doc: BundleDocument,
        blocks: Sequence[Block],
        ranges: list[tuple[int, int]],
        base: dict[str, Any],
        version: str,
    ) -> Merged:
        label = f"bundle {doc.bundle_id}"
        jobs = [
            self.runner.run(
                f"{label} volume {n}",
                volumes.render_volume,
                self._html(base, blocks[a:b], first=n == 1, footer=False),
                self.templates,
                self._path(doc, f"v{n}"),
            )
            for n, (a, b) in enumerate(ranges, start=1)
        ]
        rendered = await asyncio.gather(*jobs)
        total = sum(v.pages for v in rendered)
        stamp_jobs = [
            self.runner.run(
                f"{label} footers {a}-{b}",
                volumes.render_stamps,
                doc.bundle_id,
                a,
                b,
                total,
                self.templates,
                self._path(doc, f"s{a}"),
            )
            for a, b in volumes.stamp_ranges(total)
        ]
        await asyncio.gather(*stamp_jobs)
        stamps = tuple(self._path(doc, f"s{a}") for a, _ in volumes.stamp_ranges(total))
        pages = _block_pages(blocks, rendered)
        parts = [v.path for v in rendered]
        return await self._finish(doc, parts, stamps, pages, version, volumes_count=len(rendered))

    async def _finish(
        self,
        doc: BundleDocument,
        parts: Sequence[Path],
        stamps: Sequence[Path],
        pages: dict[int, int],
        version: str,
        *,
        volumes_count: int,
        envelopes: tuple[Envelope, ...] = (),
        blank_after: tuple[int, ...] = (),
    ) -> Merged:
        data = manifest(doc, version)
        data["volumes"] = volumes_count
        for entry in data["messages"]:  # type: ignore[attr-defined]
            entry["page"] = pages.get(int(entry["id"]))
        if envelopes:
            data["envelopes"] = [
                {
                    "number": e.number,
                    "of": e.of,
                    "pages": [e.first_page, e.last_page],
                    "sheets": (e.pages + 1) // 2,
                    "messages": len(e.message_ids),
                }
                for e in envelopes
            ]
        spec = volumes.Finish(
            parts=tuple(parts),
            stamps=tuple(stamps),
            manifest=volumes.manifest_bytes(data),
            title=f"{doc.case.name} · {doc.recipient.name}",
            author=doc.organisation.name,
            created=str(data["created_at"]),
            blank_after=blank_after,
            out=self._path(doc, "final"),
        )
        total = await self.runner.run(f"bundle {doc.bundle_id} join", volumes.finish, spec)
        self._clean(doc, keep_final=True)
        return Merged(
            path=spec.out,
            pages=total,
            manifest=data,
            template_version=version,
            volumes=volumes_count,
            envelopes=envelopes,
        )

    # -- prison envelopes ---------------------------------------------------------------

    async def _envelopes(
        self,
        doc: BundleDocument,
        blocks: Sequence[Block],
        base: dict[str, Any],
        version: str,
        max_pages: int,
    ) -> Merged:
        """Envelopes of at most ``max_pages`` pages, each a complete document with its cover.

        Envelopes are filled one after another by laying out what might fit and keeping
        the blocks that did; then all are rendered again with "envelope k of n".
        """
        cut = split_long_texts(blocks, max_lines=(max_pages - 1) * LINES_PER_PAGE)
        groups = await self._fill_envelopes(doc, cut, base, max_pages)  # may cut texts further
        blocks = renumber_parts(cut)
        for _attempt in range(3):
            rendered = await self._render_envelopes(doc, blocks, base, groups)
            over = [i for i, v in enumerate(rendered) if v.pages > max_pages]
            if not over:
                return await self._finish_envelopes(doc, blocks, groups, rendered, version)
            groups = _halve(groups, over, doc.bundle_id)
        raise RenderError(
            f"bundle {doc.bundle_id}: cannot fit the messages into envelopes of {max_pages} pages"
        )

    async def _fill_envelopes(
        self, doc: BundleDocument, blocks: list[Block], base: dict[str, Any], max_pages: int
    ) -> list[list[int]]:
        groups: list[list[int]] = []
        start = 0
        while start < len(blocks):
            stop = _window(blocks, start, max_lines=max_pages * LINES_PER_PAGE * 3 // 2)
            number = len(groups) + 1
            fit = await self._fit(doc, base, blocks[start:stop], number, max_pages)
            if fit == 0 and not groups:
                groups.append([])  # the cover and the countries fill the first envelope
                continue
            if fit == 0 and (halves := _halve_text(blocks[start])):
                blocks[start : start + 1] = halves  # a long text: in two parts, then try again
                continue
            if fit == 0:
                ids = ", ".join(str(m) for m in blocks[start].message_ids[:5])
                raise RenderError(
                    f"bundle {doc.bundle_id}: message {ids} needs more than the {max_pages} pages"
                    " an envelope may hold, even on its own"
                    f" (the facility's limit is {max_pages // 2} sheets)"
                )
            groups.append(list(range(start, start + fit)))
            start += fit
        return groups or [[]]

    async def _fit(
        self,
        doc: BundleDocument,
        base: dict[str, Any],
        candidates: Sequence[Block],
        number: int,
        max_pages: int,
    ) -> int:
        """How many of ``candidates`` envelope ``number`` can hold, by laying them out."""
        fit = await self._layout_fit(doc, base, candidates, number, max_pages)
        if fit < len(candidates):  # where a block ends is only known by laying out without the next
            longer = await self._layout_fit(doc, base, candidates[: fit + 1], number, max_pages)
            fit = max(fit, longer)
        return fit

    async def _layout_fit(
        self,
        doc: BundleDocument,
        base: dict[str, Any],
        candidates: Sequence[Block],
        number: int,
        max_pages: int,
    ) -> int:
        html = self._html(
            base, candidates, first=True, footer=True, envelope={"number": number, "of": number}
        )
        laid = await self.runner.run(
            f"bundle {doc.bundle_id} envelope {number}",
            volumes.render_volume,
            html,
            self.templates,
            self._path(doc, f"fill{number}"),
        )
        return _fitting(candidates, laid, max_pages)

    async def _render_envelopes(
        self,
        doc: BundleDocument,
        blocks: Sequence[Block],
        base: dict[str, Any],
        groups: list[list[int]],
    ) -> list[volumes.VolumeResult]:
        of = len(groups)
        jobs = [
            self.runner.run(
                f"bundle {doc.bundle_id} envelope {n}",
                volumes.render_volume,
                self._html(
                    base,
                    [blocks[i] for i in group],
                    first=True,
                    footer=True,
                    envelope={"number": n, "of": of},
                ),
                self.templates,
                self._path(doc, f"e{n}"),
            )
            for n, group in enumerate(groups, start=1)
        ]
        return list(await asyncio.gather(*jobs))

    async def _finish_envelopes(
        self,
        doc: BundleDocument,
        blocks: Sequence[Block],
        groups: list[list[int]],
        rendered: list[volumes.VolumeResult],
        version: str,
    ) -> Merged:
        envelopes: list[Envelope] = []
        pages: dict[int, int] = {}
        first = 1
        for n, (group, volume) in enumerate(zip(groups, rendered, strict=True), start=1):
            ids = tuple(dict.fromkeys(m for i in group for m in blocks[i].message_ids))
            envelopes.append(
                Envelope(
                    number=n,
                    of=len(groups),
                    first_page=first,
                    last_page=first + volume.pages - 1,
                    message_ids=ids,
                )
            )
            for i in group:
                page = first - 1 + volume.anchors.get(blocks[i].anchor, 1)
                for message_id in blocks[i].message_ids:
                    pages.setdefault(message_id, page)  # a message split in parts: where it starts
            first += volume.pages + volume.pages % 2  # each envelope starts on a new sheet
        blank_after = tuple(
            i for i, v in enumerate(rendered) if v.pages % 2 and i < len(rendered) - 1
        )
        return await self._finish(
            doc,
            [v.path for v in rendered],
            (),
            pages,
            version,
            volumes_count=1,
            envelopes=tuple(envelopes),
            blank_after=blank_after,
        )


def split_long_texts(blocks: Sequence[Block], *, max_lines: int) -> list[Block]:
    """Personal texts longer than ``max_lines`` cut into parts, so each fits an envelope."""
    out: list[Block] = []
    for block in blocks:
        if (
            isinstance(block, NameBlock)
            or block.shared
            or grouping.estimate_lines(block) <= max_lines
        ):
            out.append(block)
            continue
        chunks = _line_chunks(block.lines, max_chars=max(200, max_lines * CHARS_PER_LINE))
        for number, chunk in enumerate(chunks, start=1):
            out.append(
                dataclasses.replace(
                    block,
                    anchor=f"{block.anchor}-{number}",
                    lines=chunk,
                    part=number,
                    parts=len(chunks),
                )
            )
    return out


def _halve_text(block: Block) -> list[Block]:
    """A personal text in two parts of about half its length; [] when it cannot be cut."""
    if isinstance(block, NameBlock) or block.shared:
        return []
    size = sum(len(line.text) for line in block.lines)
    chunks = _line_chunks(block.lines, max_chars=max(1, size // 2 + 1))
    if len(chunks) < 2:
        return []
    return [
        dataclasses.replace(block, anchor=f"{block.anchor}.{n}", lines=chunk)
        for n, chunk in enumerate(chunks, start=1)
    ]


def renumber_parts(blocks: Sequence[Block]) -> list[Block]:
    """Number the parts of every personal text cut for envelopes: part k of n, in order."""
    counts: dict[tuple[int, ...], int] = {}
    for block in blocks:
        if isinstance(block, TextBlock) and not block.shared:
            counts[block.message_ids] = counts.get(block.message_ids, 0) + 1
    seen: dict[tuple[int, ...], int] = {}
    out: list[Block] = []
    for block in blocks:
        if isinstance(block, TextBlock) and not block.shared and counts[block.message_ids] > 1:
            seen[block.message_ids] = seen.get(block.message_ids, 0) + 1
            block = dataclasses.replace(
                block, part=seen[block.message_ids], parts=counts[block.message_ids]
            )
        out.append(block)
    return out


def _line_chunks(lines: Sequence[Line], *, max_chars: int) -> list[tuple[Line, ...]]:
    """Lines regrouped into chunks of about ``max_chars``; an over-long line cut at spaces."""
    pieces: list[Line] = []
    for line in lines:
        text = line.text
        while len(text) > max_chars:
            cut = text.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(dataclasses.replace(line, text=text[:cut].rstrip()))
            text = text[cut:].lstrip()
        pieces.append(dataclasses.replace(line, text=text))
    chunks: list[list[Line]] = [[]]
    size = 0
    for piece in pieces:
        if chunks[-1] and size + len(piece.text) > max_chars:
            chunks.append([])
            size = 0
        chunks[-1].append(piece)
        size += len(piece.text) + CHARS_PER_LINE  # a paragraph ends its line
    return [tuple(c) for c in chunks if c]


def _window(blocks: Sequence[Block], start: int, *, max_lines: int) -> int:
    """End of the run of blocks from ``start`` estimated to fill ``max_lines`` (at least one)."""
    lines = 0
    for index in range(start, len(blocks)):
        lines += grouping.estimate_lines(blocks[index])
        if lines > max_lines:
            return max(index, start + 1)
    return len(blocks)


def _fitting(candidates: Sequence[Block], laid: volumes.VolumeResult, max_pages: int) -> int:
    """How many leading blocks end within ``max_pages`` pages of this layout."""
    laid.path.unlink(missing_ok=True)
    if laid.pages <= max_pages:
        return len(candidates)
    for count in range(len(candidates) - 1, 0, -1):
        if laid.anchors.get(candidates[count].anchor, max_pages + 1) <= max_pages:
            return count
    return 0


def _halve(groups: list[list[int]], over: Sequence[int], bundle_id: str) -> list[list[int]]:
    """Split every overfull envelope in two."""
    result: list[list[int]] = []
    for index, group in enumerate(groups):
        if index not in over:
            result.append(group)
            continue
        if len(group) < 2:
            raise RenderError(
                f"bundle {bundle_id}: envelope {index + 1} holds one text that is too long"
            )
        middle = len(group) // 2
        result.extend([group[:middle], group[middle:]])
    return result


def _block_pages(
    blocks: Sequence[Block], rendered: Sequence[volumes.VolumeResult]
) -> dict[int, int]:
    """Message id → the page of the joined bundle its block starts on."""
    pages: dict[int, int] = {}
    offset = 0
    for volume in rendered:
        for block in blocks:
            page = volume.anchors.get(block.anchor)
            if page is not None:
                pages.update(dict.fromkeys(block.message_ids, offset + page))
        offset += volume.pages
    return pages
