"""The ledger as a Merkle log: its tree head, signed as a checkpoint an auditor can publish.

Leaf *i* of the tree is event *i*'s hash (the SHA-256 the hash chain gives it, which
covers the event and every event before it), so the tree holds hashes only. The tree
follows RFC 9162 section 2.1 (:mod:`delivery.merkle`); the checkpoint is a C2SP
tlog-checkpoint in a signed note (:mod:`delivery.checkpoint`), signed with the
organisation's Ed25519 key. The private key lives in a file the operator keeps; it is
read to sign and never stored in the database.

A checkpoint written later extends every earlier one: a consistency proof between two
tree sizes shows it, and :func:`consistency` makes one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from delivery import merkle
from delivery.checkpoint import Checkpoint, read_key_file, sign_checkpoint
from delivery.outbox import Artefact, Outbox
from delivery.store import Store


def leaves(store: Store) -> list[bytes]:
    """The leaf hashes of the ledger's tree, in order: one per event."""
    return [merkle.leaf_hash(bytes.fromhex(event.hash)) for event in store.events()]


def tree_head(store: Store) -> tuple[int, bytes]:
    """The ledger's tree size and root hash, read in one pass."""
    frontier = merkle.CompactRange()
    for event in store.events():
        frontier.append(merkle.leaf_hash(bytes.fromhex(event.hash)))
    return frontier.size, frontier.root()


def origin_for(bounce_domain: str) -> str:
    """The log's name in checkpoints: the organisation's domain and this ledger."""
    return f"{bounce_domain}/solidarity-delivery/ledger"


@dataclass(frozen=True, kw_only=True)
class Signed:
    checkpoint: Checkpoint
    note: str
    artefact: Artefact

    def as_dict(self) -> dict[str, object]:
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": base64.b64encode(self.checkpoint.root).decode("ascii"),
            "path": self.artefact.path,
            "sha256": self.artefact.sha256,
        }


def write_checkpoint(
    store: Store, outbox: Outbox, key_file: Path, *, origin: str, actor: str
) -> Signed:
    """Sign the ledger's current tree head with the key in ``key_file`` and publish it.

    The signed note goes to ``outbox/checkpoints/``, named by size and root, and an event
    records it (with the file's hash): a later ``audit verify`` finds the file unchanged,
    and the next checkpoint covers this event too.
    """
    signer = read_key_file(key_file)
    size, root = tree_head(store)
    checkpoint = Checkpoint(origin=origin, size=size, root=root)
    note = sign_checkpoint(checkpoint, signer)
    path = f"checkpoints/checkpoint-{size:08d}-{root.hex()[:16]}.txt"
    artefact = outbox.write(path, note.encode("utf-8"))
    payload = {
        "origin": origin,
        "size": size,
        "root": base64.b64encode(root).decode("ascii"),
        "artefacts": [{"path": artefact.path, "sha256": artefact.sha256, "size": artefact.size}],
    }
    with store.transaction() as conn:
        store.record(conn, "checkpoint.signed", f"checkpoint:{size}", payload, actor)
    return Signed(checkpoint=checkpoint, note=note, artefact=artefact)


def consistency(store: Store, old_size: int) -> tuple[int, bytes, list[bytes]]:
    """The current tree size and root, and the proof that they extend the tree of ``old_size``."""
    hashes = leaves(store)
    return len(hashes), merkle.root(hashes), merkle.consistency_proof(hashes, old_size)
