"""One message, bundle or delivery followed through a verified package, offline.

The same chain as the database's trace (review, bundle with its PDF hash and page,
deliveries, every event with its proof level), answered from the package's events and
manifests only. It is built after the package verified, so every event shown is one the
signed checkpoint includes, and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from delivery.errors import InputError, NotFoundError
from delivery.ledger import Event
from delivery.package import layout
from delivery.package.layout import plural
from delivery.package.verify import BundleState, DeliveryState, Verification


@dataclass(frozen=True, kw_only=True)
class PackageTrace:
    """What the package shows about one message, bundle or delivery."""

    verification: Verification
    message: dict[str, Any] | None
    bundles: tuple[dict[str, Any], ...]
    deliveries: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        v = self.verification
        return {
            "package": v.folder,
            "checkpoint": {
                "origin": v.origin,
                "size": v.size,
                "root": v.root,
                "signed_by": list(v.signed_by),
                "signature_checked": v.signature_checked,
            },
            "message": self.message,
            "bundles": list(self.bundles),
            "deliveries": list(self.deliveries),
            "events": list(self.events),
        }

    def lines(self) -> list[str]:
        v = self.verification
        out: list[str] = []
        m = self.message
        if m is not None:
            out.append(
                f"message {m['id']} ({m['source']}, line {m['line']}): to {m['to']},"
                f" case {m['case']}"
            )
            flags = f" (flags: {'; '.join(m['flags'])})" if m["flags"] else ""
            out.append(f"  review: {m['review_state']}{flags}")
        for b in self.bundles:
            page = f", this message on page {b['page']}" if b.get("page") else ""
            count = f", {plural(b['messages'], 'message')}" if b["messages"] is not None else ""
            pages = f", {b['pages']} pages" if b["pages"] is not None else ""
            out.append(f"  bundle {b['id']} for {b['recipient']}: {b['state']}{count}{pages}{page}")
            if b["pdf_path"]:
                out.append(f"    {b['pdf_path']}  sha256 {b['pdf_sha256']}")
        for d in self.deliveries:
            out.append(f"  delivery {d['id']} by {d['channel']}: {d['state']} (proof {d['proof']})")
        signed = (
            f"signed by {', '.join(v.signed_by)}"
            if v.signature_checked
            else "signature NOT checked"
        )
        out.append(f"  events (in the checkpoint of {v.size} events of {v.origin}, {signed}):")
        for e in self.events:
            proof = e["data"].get("proof")
            extra = f" proof={proof}" if proof else ""
            out.append(
                f"    #{e['seq']} {e['at']} {e['kind']} {e['subject']} by {e['actor']}{extra}"
                f"  [{e['included']}]"
            )
        return out


def trace_package(folder: Path, ref: str, verification: Verification) -> PackageTrace:
    """Trace `ref` (12, message:12, bnd-…, dlv-…) through the package `verification` checked."""
    kind, ident = _target(ref)
    bundles = {b.id: b for b in verification.bundles}
    deliveries = {d.id: d for d in verification.deliveries}
    pages: dict[str, int | None] = {}
    if kind == "message":
        pages = _bundles_of_message(folder, verification.bundles, int(ident))
        chosen = [d for d in deliveries.values() if d.bundle in pages]
    elif kind == "bundle":
        if ident not in bundles:
            raise NotFoundError(f"bundle {ident}: not in this package (case {verification.case})")
        pages = {ident: None}
        chosen = [d for d in deliveries.values() if d.bundle == ident]
    else:
        if ident not in deliveries:
            raise NotFoundError(f"delivery {ident}: not in this package (case {verification.case})")
        chosen = [deliveries[ident]]
        pages = {deliveries[ident].bundle: None}
    subjects = {f"{kind}:{ident}"} | {f"bundle:{b}" for b in pages}
    subjects |= {f"delivery:{d.id}" for d in chosen}
    events = _events(folder, subjects)
    proved = {int(seq) for seq in layout.read_json(folder, layout.PROOFS)["proofs"]}
    message = _message(int(ident), events) if kind == "message" else None
    if kind == "message" and message is None:
        raise NotFoundError(f"message {ident}: not in this package (case {verification.case})")
    return PackageTrace(
        verification=verification,
        message=message,
        bundles=tuple(_bundle_view(bundles[b], page) for b, page in pages.items() if b in bundles),
        deliveries=tuple(_delivery_view(d) for d in chosen),
        events=tuple(_event_view(e, verification, e.seq in proved) for e in events),
    )


def _target(ref: str) -> tuple[str, str]:
    """("message", "12"), ("bundle", "bnd-…") or ("delivery", "dlv-…") for an ID as typed."""
    bare = ref.split(":", 1)[1] if ref.startswith(("message:", "bundle:", "delivery:")) else ref
    if bare.isdigit() and not ref.startswith(("bundle:", "delivery:")):
        return "message", str(int(bare))
    if bare.startswith("bnd-"):
        return "bundle", bare
    if bare.startswith("dlv-"):
        return "delivery", bare
    raise InputError(
        f"{ref!r}: give a message id (12 or message:12), a bundle id (bnd-…) or a delivery id"
        " (dlv-…)"
    )


def _events(folder: Path, subjects: set[str]) -> list[Event]:
    """The package's events about `subjects`, in order: the earlier ones, then the range."""
    names = [layout.CONTEXT] if (folder / layout.CONTEXT).exists() else []
    return [
        event
        for name in (*names, layout.EVENTS)
        for event in layout.read_events(folder, name)
        if event.subject in subjects
    ]


def _bundles_of_message(
    folder: Path, bundles: tuple[BundleState, ...], message_id: int
) -> dict[str, int | None]:
    """The bundles whose manifest (in the package) lists the message, with its page."""
    found: dict[str, int | None] = {}
    for bundle in bundles:
        path = folder / layout.FILES / PurePosixPath(bundle.manifest_path)
        if not bundle.manifest_path or not path.is_file():
            continue
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for entry in manifest.get("messages", ()):
            if entry.get("id") == message_id:
                page = entry.get("page")
                found[bundle.id] = page if isinstance(page, int) else None
    return found


def _message(message_id: int, events: list[Event]) -> dict[str, Any] | None:
    """The message as its intake and review events describe it."""
    view: dict[str, Any] | None = None
    for event in events:
        if event.subject != f"message:{message_id}":
            continue
        data = event.data()
        if view is None and "case" in data:
            view = {
                "id": message_id,
                "source": data.get("source", ""),
                "line": data.get("line"),
                "case": data.get("case"),
                "to": data.get("to", ""),
                "flags": list(data.get("flags", ())),
                "review_state": "",
            }
        if view is not None and event.kind.startswith("review."):
            state = event.kind.removeprefix("review.")
            view["review_state"] = "pending" if state in ("waiting", "flagged") else state
    return view


def _bundle_view(bundle: BundleState, page: int | None) -> dict[str, Any]:
    parts = PurePosixPath(bundle.pdf_path or bundle.manifest_path).parts
    recipient = "/".join(parts[1:3]) if len(parts) >= 4 else "-"
    return {**vars(bundle), "recipient": recipient, "page": page}


def _delivery_view(delivery: DeliveryState) -> dict[str, Any]:
    return dict(vars(delivery))


def _event_view(event: Event, verification: Verification, proved: bool) -> dict[str, Any]:
    """The event as the database trace shows it, and how the checkpoint includes it."""
    how = (
        "inclusion proof verified"
        if proved
        else f"in the verified chain of events {verification.start} to {verification.size}"
    )
    return {
        "seq": event.seq,
        "at": event.at,
        "actor": event.actor,
        "kind": event.kind,
        "subject": event.subject,
        "data": event.data(),
        "hash": event.hash,
        "included": f"in checkpoint {verification.size}: {how}",
    }
