"""Self-contained audit packages of one case, verified offline with the public key alone.

An auditor, a court or a partner organisation gets a folder and the organisation's
``.pub`` key (by another channel), and checks with no database, outbox or settings that
what the folder says happened to a case is what the ledger recorded and the organisation
signed. ``solidarity audit export`` writes it, ``solidarity audit verify-package`` checks
it, ``solidarity audit trace ID --package DIR`` follows a message through it.

The package holds EVERY ledger event of a contiguous range [S, N], not only the case's: N
is the size of a signed checkpoint, S is 1 or the first event on or after ``--since``. A
package that left events out could not show that nothing was left out; payloads hold ids
and hashes only, so this is safe to hand out. The layout:

``package.json``
    Format name and version; the case, ``since``, ``created_at``; the log's origin; the
    checkpoint's size and root; the range: its start S, the hash of event S-1 (to check
    S's link) and the `merkle.CompactRange` hashes of leaves [0, S-1) (``frontier``), from
    which with the range's leaves the verifier recomputes the signed root; the case's
    members (message ids, bundle and delivery ids: a bundle's recipient id is in no
    event, so the exporter says which bundles are the case's); ``with_pdfs``; each file
    carried with its SHA-256 and the event that recorded it; the files erased under
    retention and the events that recorded and erased them; each earlier checkpoint with
    its consistency proof to this one.
``checkpoint.txt``
    The signed note of the checkpoint (:mod:`delivery.checkpoint`).
``events.jsonl``
    Events S to N, one JSON object a line with the event's eight fields exactly as stored
    (the payload as its canonical JSON text), so the verifier recomputes each
    `ledger.chain_hash`.
``context-events.jsonl``
    Only when S > 1: the events before S the package relies on (the case's, and the
    records of the files and checkpoints carried and of erasures), each proved on its own.
``proofs.json``
    ``{"size", "root", "proofs": {seq: [base64 hash, ...]}}``: an inclusion proof in the
    checkpoint's tree (RFC 9162) for every event about the case and every context event.
``checkpoints/``
    Every earlier checkpoint of the log still in the outbox as recorded.
``files/``
    Each of the case's bundle manifests under its outbox path (``files/bundles/<case>/
    <recipient>/<id>.manifest.json``); with ``--with-pdfs`` also each bundle's PDF, which
    holds supporters' names and words.
``README.txt``
    How to verify, in plain words.

Leaf *i* of the tree is `merkle.leaf_hash` of event *i+1*'s hash (:mod:`delivery.audit`).
"""

from delivery.package.export import Exported, export_package
from delivery.package.layout import PackageError
from delivery.package.trace import PackageTrace, trace_package
from delivery.package.verify import GivenCheckpoint, Verification, verify_package

__all__ = [
    "Exported",
    "GivenCheckpoint",
    "PackageError",
    "PackageTrace",
    "Verification",
    "export_package",
    "trace_package",
    "verify_package",
]
