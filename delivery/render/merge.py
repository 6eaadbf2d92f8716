"""Merge: one recipient's messages → the PDF that is delivered, at campaign scale.

Messages become blocks (identical letters printed once with their signatories), the
blocks' characters are checked against the installed fonts, and the bundle is laid out:
as one document when it is small, in volumes rendered in parallel and joined when it is
large, and — for a prison with a page limit — as envelopes, each a complete document that
fits the facility's limit. Every layout runs in the render pool, never in the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from delivery.config import RenderSettings
from delivery.errors import RenderError
from delivery.models import RecipientKind
from delivery.render import grouping, volumes
from delivery.render.blocks import Block, NameBlock
from delivery.render.bundle import BundleDocument, bundle_context, manifest, template_version
from delivery.render.env import make_environment, render_template
from delivery.render.fonts import preflight

R = TypeVar("R")
LINES_PER_PAGE = 52  # body lines on an A4 page in base.css, for cutting volumes
PX_PER_MM = 96 / 25.4
PAGE_MARGINS_MM = (20, 22)  # top and bottom, as in page.css


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
        blocks = grouping.build_blocks(doc.messages, doc.recipient.kind)
        preflight(printed_texts(doc, blocks), what=f"bundle {doc.bundle_id}")
        version = template_version(self.templates)
        base = bundle_context(doc)
        limit = doc.recipient.page_limit
        if doc.recipient.kind is RecipientKind.PRISON and limit:
            return await self._envelopes(doc, blocks, base, version, 2 * limit)
        ranges = plan_volumes(blocks, target_lines=self.settings.volume_pages * LINES_PER_PAGE)
        if len(ranges) == 1:
            return await self._single(doc, blocks, base, version)
        return await self._volumes(doc, blocks, ranges, base, version)

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
        for path in (*parts, *stamps):
            path.unlink(missing_ok=True)
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
        label = f"bundle {doc.bundle_id}"
        measured = await self.runner.run(
            f"{label} measure",
            volumes.render_volume,
            self._html(base, blocks, first=True, footer=True),
            self.templates,
            self._path(doc, "measure"),
        )
        measured.path.unlink(missing_ok=True)
        heights, lead = _heights(blocks, measured)
        capacity = (max_pages - 1) * _content_height(measured.page_height)
        groups = _pack(heights, capacity, first_lead=lead)
        for _attempt in range(4):
            rendered = await self._render_envelopes(doc, blocks, base, groups)
            over = [i for i, v in enumerate(rendered) if v.pages > max_pages]
            if not over:
                return await self._finish_envelopes(doc, blocks, groups, rendered, version)
            groups = _repack(groups, over)
        raise RenderError(f"{label}: cannot fit the messages into envelopes of {max_pages} pages")

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
            ids = tuple(m for i in group for m in blocks[i].message_ids)
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
                pages.update(dict.fromkeys(blocks[i].message_ids, page))
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


def _content_height(page_height: float) -> float:
    return page_height - sum(PAGE_MARGINS_MM) * PX_PER_MM


def _heights(blocks: Sequence[Block], measured: volumes.VolumeResult) -> tuple[list[float], float]:
    """Each block's printed height, and the height before the first block (countries)."""
    content = _content_height(measured.page_height)
    top = PAGE_MARGINS_MM[0] * PX_PER_MM

    def position(anchor: str) -> float:
        page = measured.anchors[anchor]
        return (page - 2) * content + measured.anchor_tops[anchor] - top  # page 1 is the cover

    starts = [position(b.anchor) for b in blocks]
    end = (measured.pages - 1) * content
    heights = [max(0.0, b - a) for a, b in zip(starts, [*starts[1:], end], strict=True)]
    return heights, starts[0] if starts else 0.0


def _pack(heights: Sequence[float], capacity: float, *, first_lead: float) -> list[list[int]]:
    """Greedy: consecutive blocks into envelopes of at most ``capacity`` content height."""
    groups: list[list[int]] = [[]]
    used = first_lead
    for index, height in enumerate(heights):
        if groups[-1] and used + height > capacity:
            groups.append([])
            used = 0.0
        groups[-1].append(index)
        used += height
    return [g for g in groups if g] or [[]]


def _repack(groups: list[list[int]], over: Sequence[int]) -> list[list[int]]:
    """Move the last block of every overfull envelope to the start of the next one."""
    result = [list(g) for g in groups]
    for index in sorted(over, reverse=True):
        if len(result[index]) < 2:
            raise RenderError(
                f"envelope {index + 1}: a single message is longer than the page limit"
            )
        moved = result[index].pop()
        if index + 1 < len(result):
            result[index + 1].insert(0, moved)
        else:
            result.append([moved])
    return result
