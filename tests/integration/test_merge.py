"""Merged bundles read back as a mailroom, a prison and an auditor see them.

Every bundle here goes through :class:`Merger` and the real render pool, and every
assertion reads the produced PDF: its text page by page (pdftotext), its attachments,
its fonts (pdffonts), and its bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pikepdf
import pytest

from delivery.config import SHIPPED_TEMPLATES, RenderSettings
from delivery.errors import RenderError
from delivery.models import (
    Address,
    Cadence,
    Case,
    ChannelName,
    Format,
    Message,
    MessageKind,
    Organisation,
    Recipient,
    RecipientKind,
    sha256_hex,
)
from delivery.render import fonts
from delivery.render.bundle import BundleDocument
from delivery.render.grouping import build_blocks
from delivery.render.merge import LINES_PER_PAGE, Merged, Merger, plan_volumes
from delivery.render.pool import RenderPool

pytestmark = pytest.mark.slow

CREATED = datetime(2025, 11, 26, 9, 30, tzinfo=UTC)
VOLUME_SETTINGS = RenderSettings(volume_pages=10, processes=2)

GIVEN = (
    "Ana", "Tomas", "Lena", "Omar", "Mei", "Ivan", "Sara", "Noa", "Yuki", "Priya",
    "Jonas", "Amara", "Karim", "Elif", "Mateo", "Ines", "Kofi", "Freya", "Ravi", "Zofia",
)  # fmt: skip
FAMILY = (
    "Harbourne", "Lindqvale", "Fairweld", "Westbrake", "Ostmoor", "Carrowby", "Dunholt",
    "Pellingar", "Ravensike", "Thornwick", "Ashcombe", "Brindlemoor", "Kestrow", "Merriden",
    "Quillfort", "Saltmarsh", "Tenwold", "Umberlee", "Varnholm", "Wexcombe",
)  # fmt: skip
CITIES = ("Lakemoor", "Ferncastle", "Oxhollow", "Millbrae Vale", "Stonequay")
COUNTRIES = {
    "BR": "Brazil",
    "DE": "Germany",
    "KE": "Kenya",
    "JP": "Japan",
    "CL": "Chile",
    "SE": "Sweden",
    "IN": "India",
    "MX": "Mexico",
}
CODES = tuple(COUNTRIES)

ORGANISATION = Organisation(
    name="Open Letters Network",
    email="letters@example.org",
    reply_to="caseworkers@example.org",
    bounce_domain="bounces.example.org",
    address=Address(
        name="Open Letters Network",
        street="12 Harbour Lane",
        city="Bristol",
        postal_code="BS1 4XX",
        country="GB",
    ),
)

SHARED_LETTERS = (
    "Dear Minister,\n\nI am writing to ask you to release Rosa Example, a community teacher "
    "detained for organising a peaceful vigil. Shared marker alpha. Peaceful assembly is a "
    "right, not a crime.\n\nYours sincerely,",
    "Dear Minister,\n\nRosa Example has spent many months in detention without trial. Shared "
    "marker bravo. Please ensure she can see a lawyer of her choosing and her family.",
    "Dear Minister,\n\nThousands of people around the world know the name of Rosa Example "
    "and are watching her case closely. Shared marker charlie. Release her now.",
)


# -- the people and their messages -----------------------------------------------------------


def full_name(ident: int) -> str:
    """Unique for ident < 400: every supporter line can be found on its own."""
    return f"{GIVEN[ident % len(GIVEN)]} {FAMILY[(ident // len(GIVEN)) % len(FAMILY)]}"


def country_code(ident: int) -> str:
    return CODES[ident % len(CODES)]


def message(
    ident: int,
    body: str,
    kind: MessageKind = MessageKind.LETTER,
    *,
    name: str | None = None,
) -> Message:
    given, _, family = (name or full_name(ident)).partition(" ")
    return Message(
        id=ident,
        source="form",
        external_id=f"ext-{ident}",
        case="free-rosa",
        supporter_name=name or full_name(ident),
        supporter_email=f"{given}.{family or 'x'}{ident}@mailbox.example.net".lower(),
        supporter_city=CITIES[ident % len(CITIES)],
        supporter_country=country_code(ident),
        language="en",
        kind=kind,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=CREATED - timedelta(days=2) + timedelta(seconds=ident),
        event="",
    )


def note(ident: int, greeting: str = "Dear Minister,") -> str:
    """A short personal letter, unique by its number, that never names its writer."""
    sentences = (
        "I think of Rosa Example every morning.",
        "Her pupils are waiting for her to come back.",
        "Please let her family visit her this month.",
        "A peaceful vigil is not a crime anywhere.",
    )
    chosen = " ".join(sentences[: 1 + ident % len(sentences)])
    return f"{greeting}\n\nPersonal note {ident:04d}. {chosen}\n\nWith hope,"


def reflowed(text: str, ident: int) -> str:
    """The same wording as a form might send it: other line breaks and spacing."""
    variants = (
        text,
        text.replace(". ", ".\n"),
        f"  {text}\n\n",
        text.replace(" ", "  ").replace("\n\n", "\n \n"),
    )
    return variants[ident % len(variants)]


def document(
    bundle_id: str,
    messages: Sequence[Message],
    kind: RecipientKind = RecipientKind.AUTHORITY,
    page_limit: int | None = None,
) -> BundleDocument:
    prison = kind is RecipientKind.PRISON
    recipient = Recipient(
        case="free-rosa",
        slug=f"{kind}-desk",
        kind=kind,
        name="Rosa Example" if prison else "Minister of Justice",
        language="en",
        channels=(ChannelName.POST,),
        format=Format.BUNDLE,
        cadence=Cadence.ONCE,
        address=Address(
            name="Central Detention Centre" if prison else "Ministry of Justice",
            street="Avenida Central 100",
            city="Capital City",
            postal_code="1000",
            country="AR",
        ),
        prisoner_number="A-77310" if prison else "",
        facility="Central Detention Centre" if prison else "",
        page_limit=page_limit,
    )
    case = Case(
        slug="free-rosa",
        name="Rosa Example",
        country="AR",
        summary="A community teacher detained for organising a peaceful vigil.",
        demand="Release Rosa Example immediately and unconditionally.",
        auto_approve=frozenset(),
        danger_words=(),
        recipients=(recipient,),
    )
    return BundleDocument(
        bundle_id=bundle_id,
        organisation=ORGANISATION,
        case=case,
        recipient=recipient,
        messages=tuple(messages),
        created_at=CREATED,
    )


def authority_bundle(
    bundle_id: str, shared: Sequence[int], personal: int, signatures: int
) -> BundleDocument:
    """Shared letters (``shared[k]`` senders of letter k), personal notes, then names."""
    messages: list[Message] = []
    ident = 1
    for text, count in zip(SHARED_LETTERS, shared, strict=False):
        for _ in range(count):
            messages.append(message(ident, reflowed(text, ident), MessageKind.EMAIL))
            ident += 1
    for _ in range(personal):
        messages.append(message(ident, note(ident)))
        ident += 1
    for _ in range(signatures):
        messages.append(message(ident, "", MessageKind.SIGNATURE))
        ident += 1
    return document(bundle_id, messages)


# -- merging through the pool, reading back --------------------------------------------------


def merge_in_pool(
    settings: RenderSettings, jobs: Sequence[tuple[BundleDocument, Path]]
) -> list[Merged]:
    """Merge every (document, workdir) in turn with one render pool."""

    async def main() -> list[Merged]:
        async with RenderPool(settings) as pool:
            return [
                await Merger(pool, SHIPPED_TEMPLATES, settings, workdir).merge(doc)
                for doc, workdir in jobs
            ]

    return asyncio.run(main())


def flat(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Readback:
    merged: Merged
    pdf: bytes
    pages: list[str]  # pdftotext of each page, whitespace collapsed; "" for a blank page
    footers: list[str]  # the last printed line of each page, as laid out; "" when blank
    attachments: dict[str, bytes]
    docinfo: dict[str, str]

    @property
    def text(self) -> str:
        return " ".join(self.pages)

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.attachments["manifest.json"])
        return data


def page_texts(path: Path, *options: str) -> list[str]:
    """pdftotext of every page: in reading order, or as laid out with ``-layout``."""
    done = subprocess.run(
        ["pdftotext", *options, "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    )
    pages = done.stdout.decode().split("\f")
    assert flat(pages[-1]) == "", "pdftotext ends every page with a form feed"
    return pages[:-1]


def last_line(page: str) -> str:
    lines = [flat(line) for line in page.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_back(merged: Merged) -> Readback:
    with pikepdf.open(merged.path) as pdf:
        attachments = {name: spec.get_file().read_bytes() for name, spec in pdf.attachments.items()}
        docinfo = {str(key): str(value) for key, value in pdf.docinfo.items()}
        count = len(pdf.pages)
    pages = [flat(page) for page in page_texts(merged.path)]
    footers = [last_line(page) for page in page_texts(merged.path, "-layout")]
    assert len(pages) == len(footers) == count
    return Readback(merged, merged.path.read_bytes(), pages, footers, attachments, docinfo)


def occurrences(text: str, phrase: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(phrase)}(?!\w)", text))


def pdffonts(path: Path) -> list[list[str]]:
    listing = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True)
    return [line.split() for line in listing.stdout.splitlines()[2:] if line.strip()]


def attachment_names(path: Path) -> list[str]:
    listing = subprocess.run(
        ["pdfdetach", "-list", str(path)], capture_output=True, check=True, text=True
    )
    lines = listing.stdout.splitlines()
    assert lines[0] == f"{len(lines) - 1} embedded files", lines
    return [line.split(": ", 1)[1] for line in lines[1:]]


def supporter_line(msg: Message, kind: RecipientKind) -> str:
    """What the recipient reads under a message: full name or first name, and country."""
    country = COUNTRIES[msg.supporter_country]
    if kind is RecipientKind.PRISON:
        return f"{msg.supporter_name.split()[0]}, {country}"
    return f"{msg.supporter_name}, {country}"


# -- what every bundle must show -------------------------------------------------------------


def assert_numbered(read: Readback, bundle_id: str, first: int = 1, count: int = 0) -> None:
    """Pages ``first``.. end with the footer "Bundle <id> Page 1 of N" ... "Page N of N"."""
    chosen = read.footers[first - 1 : first - 1 + count] if count else read.footers
    for number, footer in enumerate(chosen, start=1):
        expected = f"Bundle {bundle_id} Page {number} of {len(chosen)}"
        assert footer == expected, (first - 1 + number, footer)
        assert f"Page {number} of {len(chosen)}" in read.pages[first - 2 + number]


def assert_manifest_matches_pages(read: Readback, doc: BundleDocument) -> None:
    """Each message once in the manifest, with a page that shows who sent it."""
    manifest = read.manifest
    assert manifest == read.merged.manifest
    entries = manifest["messages"]
    ids = [entry["id"] for entry in entries]
    assert sorted(ids) == sorted(m.id for m in doc.messages)
    assert len(ids) == len(set(ids))
    page_of = {entry["id"]: entry["page"] for entry in entries}
    kind = doc.recipient.kind
    for msg in doc.messages:
        page = page_of[msg.id]
        assert isinstance(page, int), (msg.id, page)
        assert 1 <= page <= len(read.pages), (msg.id, page)
        shown = supporter_line(msg, kind)
        if msg.kind is MessageKind.LETTER:  # a personal note: its writer, then its text
            assert f"{shown} {flat(msg.body)}" in read.pages[page - 1], (msg.id, page)
        else:  # a name in a list that starts on ``page`` and may run onto the next one
            window = " ".join(read.pages[page - 1 : page + 1])
            assert occurrences(window, shown) >= 1, (msg.id, page, shown)


def assert_every_message_printed_once(read: Readback, doc: BundleDocument) -> None:
    text = read.text
    kind = doc.recipient.kind
    for msg in doc.messages:
        assert occurrences(text, supporter_line(msg, kind)) == 1, msg.supporter_name
        if msg.kind is MessageKind.LETTER:
            assert text.count(flat(msg.body)) == 1, msg.id
    for letter in SHARED_LETTERS:
        if any(flat(m.body) == flat(letter) for m in doc.messages):
            assert text.count(flat(letter)) == 1, letter[:60]


# -- 1 and 2: large bundles in volumes, small ones as one document ---------------------------

VOLUMES_ID = "bnd-7c1e0a5f3d2b8e60"
SINGLE_ID = "bnd-0a1b2c3d5e6f7a8b"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bundle in volumes (merged twice, into two folders) and a one-document bundle."""
    large = authority_bundle(VOLUMES_ID, shared=(12, 9, 6), personal=230, signatures=15)
    small = authority_bundle(SINGLE_ID, shared=(4,), personal=8, signatures=3)
    folder = tmp_path_factory.mktemp("merge")
    jobs = [
        (large, folder / "first"),
        (large, folder / "second"),
        (small, folder / "single-1"),
        (small, folder / "single-2"),
    ]
    first, second, single, single_again = merge_in_pool(VOLUME_SETTINGS, jobs)
    return {
        "docs": {"volumes": large, "single": small},
        "reads": {"volumes": read_back(first), "single": read_back(single)},
        "again": {"volumes": second, "single": single_again},
    }


LAYOUTS = ("volumes", "single")


def test_a_large_bundle_needs_three_volumes_with_the_real_page_estimate() -> None:
    large = authority_bundle(VOLUMES_ID, shared=(12, 9, 6), personal=230, signatures=15)
    blocks = build_blocks(large.messages, RecipientKind.AUTHORITY)
    ranges = plan_volumes(blocks, target_lines=VOLUME_SETTINGS.volume_pages * LINES_PER_PAGE)
    assert len(ranges) >= 3
    assert len(large.messages) == 12 + 9 + 6 + 230 + 15


def test_volumes_are_joined_into_one_file(bundles: dict[str, Any]) -> None:
    read = bundles["reads"]["volumes"]
    assert read.merged.volumes >= 3
    assert read.manifest["volumes"] == read.merged.volumes
    assert read.merged.pages == len(read.pages)
    assert read.merged.envelopes == ()
    assert read.pdf.startswith(b"%PDF-")


def test_a_small_bundle_is_one_document(bundles: dict[str, Any]) -> None:
    read = bundles["reads"]["single"]
    assert read.merged.volumes == 1
    assert read.manifest["volumes"] == 1
    assert read.merged.pages == len(read.pages) >= 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_page_says_its_number_of_the_total_and_the_bundle(
    bundles: dict[str, Any], layout: str
) -> None:
    read = bundles["reads"][layout]
    assert_numbered(read, bundles["docs"][layout].bundle_id)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_message_is_printed_exactly_once(bundles: dict[str, Any], layout: str) -> None:
    assert_every_message_printed_once(bundles["reads"][layout], bundles["docs"][layout])


def test_shared_letters_are_printed_once_with_everyone_who_sent_them(
    bundles: dict[str, Any],
) -> None:
    text = bundles["reads"]["volumes"].text
    for marker, count in (("alpha", 12), ("bravo", 9), ("charlie", 6)):
        assert text.count(f"Shared marker {marker}.") == 1, marker
        assert f"Sent by {count} people" in text
    assert "Signatures (15)" in text


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_attached_manifest_points_at_the_page_of_every_message(
    bundles: dict[str, Any], layout: str
) -> None:
    read = bundles["reads"][layout]
    assert list(read.attachments) == ["manifest.json"]
    assert_manifest_matches_pages(read, bundles["docs"][layout])
    assert read.manifest["bundle_id"] == bundles["docs"][layout].bundle_id
    assert read.manifest["message_count"] == len(bundles["docs"][layout].messages)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_same_bundle_merged_twice_is_the_same_file(
    bundles: dict[str, Any], layout: str
) -> None:
    again: Merged = bundles["again"][layout]
    read = bundles["reads"][layout]
    assert again.path != read.merged.path
    assert again.path.read_bytes() == read.pdf


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_font_is_embedded(bundles: dict[str, Any], layout: str) -> None:
    read = bundles["reads"][layout]
    rows = pdffonts(read.merged.path)
    assert rows
    assert all(row[-5] == "yes" for row in rows), rows
    assert fonts.unembedded_fonts(read.pdf) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_the_final_pdf_is_left_in_the_workdir(bundles: dict[str, Any], layout: str) -> None:
    path = bundles["reads"][layout].merged.path
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# -- 3: prison envelopes ---------------------------------------------------------------------


def prison_bundle(
    bundle_id: str, page_limit: int, *, greetings: Sequence[int] = (), notes: int = 0
) -> BundleDocument:
    """``greetings[k]`` people send greeting k; then ``notes`` personal notes."""
    messages: list[Message] = []
    ident = 1
    for number, count in enumerate(greetings, start=1):
        text = f"Stay strong, Rosa! Everyone at greeting circle {number} sends love."
        for _ in range(count):
            messages.append(message(ident, reflowed(text, ident), MessageKind.EMAIL))
            ident += 1
    for _ in range(notes):
        messages.append(message(ident, note(ident, "Dear Rosa,")))
        ident += 1
    return document(bundle_id, messages, RecipientKind.PRISON, page_limit)


def assert_envelopes(read: Readback, doc: BundleDocument) -> None:
    """What a prison mailroom checks, envelope by envelope."""
    limit = doc.recipient.page_limit
    assert limit
    envelopes = read.merged.envelopes
    listed = read.manifest["envelopes"]
    count = len(envelopes)
    assert [(e["number"], e["of"]) for e in listed] == [(n, count) for n in range(1, count + 1)]
    expected_first = 1
    for envelope, entry in zip(envelopes, listed, strict=True):
        first, last = entry["pages"]
        assert (first, last) == (envelope.first_page, envelope.last_page)
        pages = last - first + 1
        assert 1 <= pages <= 2 * limit, entry
        assert entry["sheets"] <= limit, entry
        assert first == expected_first, "envelopes follow each other, a blank page between"
        assert first % 2 == 1, "every envelope starts on the front of a sheet"
        cover = read.pages[first - 1]
        assert f"Envelope {envelope.number} of {count}" in cover
        if count > 1:
            assert f"This is envelope {envelope.number} of {count}." in cover
        assert_numbered(read, doc.bundle_id, first, pages)
        expected_first = last + 1
        if pages % 2 and envelope.number < count:
            assert read.pages[last] == "", "the back of the last sheet stays blank"
            expected_first += 1
    assert expected_first - 1 == len(read.pages)
    assert sum(e["messages"] for e in listed) == len(doc.messages)
    owner = {m: e.number for e in envelopes for m in e.message_ids}
    assert sorted(owner) == sorted(m.id for m in doc.messages)
    assert sum(len(e.message_ids) for e in envelopes) == len(doc.messages)
    page_of = {entry["id"]: entry["page"] for entry in read.manifest["messages"]}
    for msg in doc.messages:
        envelope = envelopes[owner[msg.id] - 1]
        assert envelope.first_page <= page_of[msg.id] <= envelope.last_page, msg.id


def assert_first_names_and_countries_only(read: Readback, doc: BundleDocument) -> None:
    seen = " ".join(
        [read.text, *read.docinfo.values(), *(a.decode() for a in read.attachments.values())]
    )
    for msg in doc.messages:
        surname = msg.supporter_name.split()[-1]
        for private in (surname, msg.supporter_email, msg.supporter_city):
            assert private not in seen, (msg.id, private)
    for msg in doc.messages:
        assert supporter_line(msg, RecipientKind.PRISON) in read.text


@pytest.fixture(scope="module")
def envelopes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, tuple[BundleDocument, Readback]]:
    """Two prisons: one sheet per envelope with personal notes; two sheets with greetings
    that many people sent, sized so that some envelopes end on the front of a sheet."""
    one_sheet = prison_bundle("bnd-prison-one-sheet", 1, notes=30)
    two_sheets = prison_bundle("bnd-prison-two-sheets", 2, greetings=(300, 260, 240), notes=20)
    folder = tmp_path_factory.mktemp("envelopes")
    jobs = [(one_sheet, folder / "one"), (two_sheets, folder / "two")]
    merged = merge_in_pool(RenderSettings(processes=2), jobs)
    return {1: (one_sheet, read_back(merged[0])), 2: (two_sheets, read_back(merged[1]))}


@pytest.mark.parametrize("limit", [1, 2])
def test_prison_envelopes_fit_the_page_limit(
    envelopes: dict[int, tuple[BundleDocument, Readback]], limit: int
) -> None:
    doc, read = envelopes[limit]
    assert len(read.merged.envelopes) >= 3
    assert_envelopes(read, doc)


def test_an_envelope_ending_on_the_front_of_a_sheet_is_followed_by_a_blank_page(
    envelopes: dict[int, tuple[BundleDocument, Readback]],
) -> None:
    _, read = envelopes[2]
    odd = [e for e in read.merged.envelopes[:-1] if e.pages % 2]
    assert odd, "the greetings are sized to give a three-page envelope before the last"
    for envelope in odd:
        assert read.pages[envelope.last_page] == ""
        assert read.merged.envelopes[envelope.number].first_page == envelope.last_page + 2


@pytest.mark.parametrize("limit", [1, 2])
def test_a_prison_reads_first_names_and_countries_only(
    envelopes: dict[int, tuple[BundleDocument, Readback]], limit: int
) -> None:
    doc, read = envelopes[limit]
    assert_first_names_and_countries_only(read, doc)


def test_every_personal_note_is_in_the_envelope_the_manifest_names(
    envelopes: dict[int, tuple[BundleDocument, Readback]],
) -> None:
    doc, read = envelopes[1]
    page_of = {entry["id"]: entry["page"] for entry in read.manifest["messages"]}
    for msg in doc.messages:
        shown = f"{supporter_line(msg, RecipientKind.PRISON)} {flat(msg.body)}"
        assert read.text.count(flat(msg.body)) == 1, msg.id
        assert shown in read.pages[page_of[msg.id] - 1], msg.id


def test_a_long_letter_that_fits_two_sheets_is_delivered(tmp_path: Path) -> None:
    """About 7,300 characters: a page and a half of A4, well within two sheets."""
    long_letter = "Dear Rosa,\n\n" + "We think of you every day and hope you stay strong. " * 140
    messages = [message(1, long_letter), *(message(i, note(i, "Dear Rosa,")) for i in range(2, 8))]
    doc = document("bnd-prison-long-letter", messages, RecipientKind.PRISON, page_limit=2)
    (merged,) = merge_in_pool(RenderSettings(processes=2), [(doc, tmp_path / "work")])
    read = read_back(merged)
    assert_envelopes(read, doc)
    assert len(merged.envelopes) == 1  # it fits: nothing is cut
    assert "part 1 of" not in read.text
    assert " ".join(read.text.split()).count("hope you stay strong.") == 140


def test_a_greeting_many_people_sent_is_shared_out_over_one_sheet_envelopes(
    tmp_path: Path,
) -> None:
    """200 people send the same greeting to a prison that takes one sheet per envelope."""
    doc = prison_bundle("bnd-prison-greetings", 1, greetings=(200,), notes=10)
    (merged,) = merge_in_pool(RenderSettings(processes=2), [(doc, tmp_path / "work")])
    read = read_back(merged)
    assert_envelopes(read, doc)
    assert_first_names_and_countries_only(read, doc)


def test_a_letter_longer_than_an_envelope_arrives_whole_in_parts(tmp_path: Path) -> None:
    """One letter of about three pages to a prison that takes one sheet per envelope."""
    sentence = "We think of you every day and hope you stay strong. "
    too_long = "Dear Rosa,\n\n" + sentence * 300
    messages = [message(1, note(1, "Dear Rosa,")), message(2, too_long)]
    doc = document("bnd-prison-too-long", messages, RecipientKind.PRISON, page_limit=1)
    workdir = tmp_path / "work"
    (merged,) = merge_in_pool(RenderSettings(processes=2), [(doc, workdir)])
    read = read_back(merged)
    assert len(merged.envelopes) >= 3
    assert all(e.pages <= 2 for e in merged.envelopes)
    assert read.text.count("part 1 of") == 1
    assert " ".join(read.text.split()).count("stay strong.") == 300
    assert sorted(p.name for p in workdir.glob("*.pdf")) == [merged.path.name]


# -- 4: a character no installed font covers -------------------------------------------------


@pytest.mark.parametrize(
    ("char", "script", "remedy"),
    [
        ("\ue000", "Private Use Area", "no Debian package provides a font for it"),
        ("\U00013460", "Egyptian Hieroglyphs", "install the Debian package fonts-ancient-scripts"),
    ],
)
def test_a_character_without_a_font_stops_the_merge_before_any_pdf(
    tmp_path: Path, char: str, script: str, remedy: str
) -> None:
    (gap,) = fonts.gaps([char])  # no font on this machine covers it
    assert gap.script == script
    bundle_id = "bnd-fonts-missing-01"
    messages = [
        message(1, note(1)),
        message(2, f"Dear Minister,\n\nA sign for you: {char}. Release Rosa Example."),
        message(3, note(3)),
    ]
    workdir = tmp_path / "work"
    with pytest.raises(RenderError) as caught:
        merge_in_pool(RenderSettings(processes=1), [(document(bundle_id, messages), workdir)])
    text = str(caught.value)
    assert f"bundle {bundle_id}" in text
    assert script in text
    assert f"U+{ord(char):04X}" in text
    assert remedy in text
    assert sorted(workdir.glob("**/*.pdf")) == []


# -- 5: supporter text stays text, through the pool ------------------------------------------

ATTACKS = (
    '<img src="file:///etc/passwd">',
    '<link rel="attachment" href="file:///etc/passwd">',
    "{{ 7*7 }}",
)


def test_markup_and_template_syntax_in_messages_print_as_text(tmp_path: Path) -> None:
    messages = [
        *(message(i, body) for i, body in enumerate(ATTACKS, start=1)),
        message(10, "Closing note from a friend.", name="Lina \u202efdp.exe"),
    ]
    doc = document("bnd-0a1b2c3d5e6f7a8c", messages)
    (merged,) = merge_in_pool(RenderSettings(processes=1), [(doc, tmp_path / "work")])
    read = read_back(merged)
    for body in ATTACKS:
        assert read.text.count(body) == 1, body
    assert "49" not in read.text
    assert "root:" not in read.text
    assert "Lina fdp.exe, Kenya Closing note from a friend." in read.text
    assert "\u202e" not in read.text
    assert "exe.pdf" not in read.text
    assert attachment_names(merged.path) == ["manifest.json"]
    assert list(read.attachments) == ["manifest.json"]


# -- 6: pre-written texts at scale -----------------------------------------------------------

PREWRITTEN = (
    "Dear Minister, I am writing about Rosa Example, a teacher held for organising a "
    "peaceful vigil in her town. Prewritten marker one. Please release her without delay.",
    "Dear Minister, the detention of Rosa Example has lasted far too long and her family "
    "has not been allowed to see her. Prewritten marker two. Let them visit her.",
    "Dear Minister, people in many countries are following the case of Rosa Example "
    "with growing concern for her health. Prewritten marker three. Free her today.",
)


def test_five_thousand_messages_print_each_prewritten_text_once(tmp_path: Path) -> None:
    messages: list[Message] = []
    for ident in range(1, 5001):
        if ident <= 4500:
            text = reflowed(PREWRITTEN[ident % 3], ident)
            messages.append(message(ident, text, MessageKind.EMAIL))
        elif ident <= 4560:
            messages.append(message(ident, note(ident)))
        else:
            messages.append(message(ident, "", MessageKind.SIGNATURE))
    doc = document("bnd-5a000c3d5e6f7a8b", messages)
    (merged,) = merge_in_pool(RenderSettings(processes=2), [(doc, tmp_path / "work")])
    read = read_back(merged)
    assert merged.pages == len(read.pages) < 100
    for text in PREWRITTEN:
        assert read.text.count(flat(text)) == 1, text[:60]
    for marker in ("one", "two", "three"):
        assert read.text.count(f"Prewritten marker {marker}.") == 1, marker
    assert read.text.count("Sent by 1,500 people") >= 3
    assert read.manifest["message_count"] == 5000
    assert len({entry["id"] for entry in read.manifest["messages"]}) == 5000
    assert_numbered(read, doc.bundle_id)


def test_a_hundred_thousand_character_message_is_printed_whole(tmp_path: Path) -> None:
    """Intake caps bodies at 20,000 characters by default; the renderer copes with more."""
    letters = "abcdefghij"
    words = ["".join(letters[int(d)] for d in f"{i:05d}") for i in range(16_000)]
    body = "{{ 7*7 }} " + " ".join(words)  # six characters a word: about 96,000 in all
    body += " " + "solidarity " * 500
    assert len(body) > 100_000
    doc = document("bnd-huge-letter", [message(1, body), message(2, note(2))])
    (merged,) = merge_in_pool(RenderSettings(processes=2), [(doc, tmp_path / "work")])
    read = read_back(merged)
    text = " ".join(read.text.split())
    assert text.count("{{ 7*7 }}") == 1
    assert "49" not in text
    assert "aaaaa" in text  # the first word
    assert "bfjjj" in text  # the last: 15999
    assert text.count("solidarity") == 500
    assert merged.pages > 15  # about 6,000 characters a page
