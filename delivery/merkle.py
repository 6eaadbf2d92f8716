"""The Merkle tree of Certificate Transparency (RFC 9162 section 2.1, as RFC 6962), pure.

A leaf hashes as SHA-256(0x00 || data) and an inner node as SHA-256(0x01 || left || right);
a tree of n > 1 leaves splits at k, the largest power of two smaller than n: the first k
leaves on the left, the rest on the right. An inclusion proof shows that one leaf is in a
tree of a given size and root; a consistency proof shows that the tree of an older size is
the start of the tree of a newer size, so nothing before it was changed or taken out.

The generators take leaf *hashes* (what `leaf_hash` returns), 32 bytes each. The verifiers
follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step; they never raise, and return
False for anything that is not a proof, however it is malformed. A proof does not fix the
tree size by itself (the path for leaf 0 of a 3-leaf tree also fits a tree of 4): the size
and root checked against must come together from one tree head. `CompactRange` keeps the
tree head of a growing log up to date from O(log n) hashes instead of every leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from delivery.errors import PermanentError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}), the root of the empty tree

_LEAF = b"\x00"
_NODE = b"\x01"


class ProofError(PermanentError, ValueError):
    """A tree or proof that cannot be built from these arguments (an index out of range)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an inner node (RFC 9162 section 2.1.1)."""
    return hashlib.sha256(_NODE + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaves whose hashes are `leaves` (RFC 9162 section 2.1.1).

    Computed level by level: adjacent pairs are hashed and an unpaired last node moves up
    a level as it is, which gives the same tree as the RFC's split at the largest power of
    two smaller than n. `EMPTY_ROOT` for no leaves.
    """
    _check_leaf_hashes(leaves)
    return _fold(list(leaves))


def root_of_data(items: Iterable[bytes]) -> bytes:
    """MTH of the leaves `items`, each hashed with `leaf_hash` first."""
    return _fold([leaf_hash(item) for item in items])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) for the leaf at `index` of the tree of `leaves` (RFC 9162 section 2.1.3.1).

    The sibling subtree hashes from the leaf up to the root, lowest first. Raises
    ProofError when `index` is not the index of a leaf.
    """
    _check_leaf_hashes(leaves)
    size = len(leaves)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    return inclusion_path(index, size, lambda low, high: _subtree_root(leaves, low, high))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) from the tree of the first `old_size` leaves to the tree of all of them.

    SUBPROOF(m, D[n], true) of RFC 9162 section 2.1.4.1, which defines it for
    0 < m < n; for m == n and for m == 0 there is nothing to prove and the proof is empty.
    Raises ProofError when `old_size` is negative or larger than the tree.
    """
    _check_leaf_hashes(leaves)
    size = len(leaves)
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} is outside a tree of {size} leaves")
    return consistency_path(old_size, size, lambda low, high: _subtree_root(leaves, low, high))


Subtree = Callable[[int, int], bytes]


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """The inclusion proof's walk down the tree, with subtree roots from ``subtree(low, high)``.

    Shared by :func:`inclusion_proof` (roots computed from the leaves) and by trees that keep
    their subtree roots (:mod:`delivery.package.tree`); ``index`` and ``size`` are checked.
    """
    path: list[bytes] = []
    low, high = 0, size
    while high - low > 1:
        split = low + _largest_power_of_two_below(high - low)
        if index < split:
            path.append(subtree(split, high))
            high = split
        else:
            path.append(subtree(low, split))
            low = split
    path.reverse()
    return path


def consistency_path(old_size: int, size: int, subtree: Subtree) -> list[bytes]:
    """The consistency proof's walk (0 < ``old_size`` < ``size``), roots from ``subtree``."""
    if old_size in (0, size):
        return []
    proof: list[bytes] = []
    low, high, wanted, whole = 0, size, old_size, True
    while wanted != high - low:
        split = low + _largest_power_of_two_below(high - low)
        if low + wanted <= split:
            proof.append(subtree(split, high))
            high = split
        else:
            proof.append(subtree(low, split))
            wanted -= split - low
            low, whole = split, False
    if not whole:
        proof.append(subtree(low, high))
    proof.reverse()
    return proof


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when `proof` shows the leaf `leaf_hash` at `index` in the tree `size`, `root`.

    The algorithm of RFC 9162 section 2.1.3.2, step by step. False, never an exception,
    for a malformed argument: a negative number, a hash that is not 32 bytes.
    """
    if not (_is_index(index) and _is_index(size) and _is_hash(leaf_hash) and _is_hash(root)):
        return False
    if not _is_path(proof):
        return False
    # 1. If leaf_index is greater than or equal to tree_size, fail.
    if index >= size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.  3. Set r to hash.
    fn, sn, r = index, size - 1, leaf_hash
    # 4. For each value p in the inclusion_path array:
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # 5. Compare sn to 0 and r to root_hash.
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when `proof` shows tree (`old_size`, `old_root`) starts tree (`new_size`, `new_root`).

    For 0 < old_size < new_size, the algorithm of RFC 9162 section 2.1.4.2, step by step.
    Equal sizes need an empty proof and equal roots; the empty tree (size 0) needs an
    empty proof and `EMPTY_ROOT` as its root, and is the start of every tree. False, never
    an exception, for a malformed argument.
    """
    if not (_is_index(old_size) and _is_index(new_size)):
        return False
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_path(proof)):
        return False
    if old_size > new_size:
        return False
    if old_size == 0 or old_size == new_size:
        same = old_size != new_size or old_root == new_root
        return len(proof) == 0 and same and (old_size > 0 or old_root == EMPTY_ROOT)
    return _consistent(old_size, new_size, old_root, new_root, proof)


class CompactRange:
    """The right edge of a growing tree: the roots of its perfect subtrees, largest first.

    A tree of `size` leaves is, from the left, one perfect subtree for each bit set in
    `size`; their roots are all it takes to append a leaf and to compute the tree head,
    so a log of millions of leaves keeps O(log n) hashes instead of every leaf. Built
    empty, or from the `size` and `hashes` of a range kept earlier.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not _is_index(size):
            raise ProofError(f"a compact range of {size} leaves is not possible")
        if len(hashes) != size.bit_count():
            raise ProofError(
                f"a compact range of {size} leaves has {size.bit_count()} hashes, not {len(hashes)}"
            )
        for position, value in enumerate(hashes):
            if not _is_hash(value):
                raise ProofError(f"compact range hash {position} is not {HASH_SIZE} bytes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The roots of the perfect subtrees, left to right: what to store to resume."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf by its hash (what `leaf_hash` returns)."""
        if not _is_hash(leaf_hash):
            raise ProofError(f"leaf hash {self._size} is not {HASH_SIZE} bytes")
        merged, size = leaf_hash, self._size
        while size & 1:
            merged = node_hash(self._hashes.pop(), merged)
            size >>= 1
        self._hashes.append(merged)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add leaves by their hashes, in order."""
        for value in leaf_hashes:
            self.append(value)

    def root(self) -> bytes:
        """MTH of every leaf appended so far; `EMPTY_ROOT` when there are none."""
        if not self._hashes:
            return EMPTY_ROOT
        merged = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            merged = node_hash(left, merged)
        return merged


def _consistent(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2 for 0 < first < second, the RFC's names and steps."""
    # 1. If consistency_path is an empty array, fail.
    if len(proof) == 0:
        return False
    # 2. If first is an exact power of 2, prepend first_hash to consistency_path.
    path = [first_hash, *proof] if first & (first - 1) == 0 else list(proof)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, right-shift fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5. Set both fr and sr to the first value in consistency_path.
    fr = sr = path[0]
    # 6. For each subsequent value c in consistency_path:
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # 7. fr must equal first_hash, sr second_hash, and sn must be 0.
    return fr == first_hash and sr == second_hash and sn == 0


def _fold(level: list[bytes]) -> bytes:
    """MTH of a list of leaf hashes, one level of the tree at a time."""
    if not level:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    while len(level) > 1:
        unpaired = level[-1] if len(level) & 1 else None
        level = [
            sha256(_NODE + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        if unpaired is not None:
            level.append(unpaired)
    return level[0]


def _subtree_root(leaves: Sequence[bytes], low: int, high: int) -> bytes:
    """MTH(D[low:high])."""
    return _fold(list(leaves[low:high]))


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k, for n > 1: where the RFC splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaf_hashes(leaves: Sequence[bytes]) -> None:
    for position, value in enumerate(leaves):
        if len(value) != HASH_SIZE:
            raise ProofError(
                f"leaf hash {position} is {len(value)} bytes, not {HASH_SIZE}: "
                "pass leaf hashes (leaf_hash(data)), or use root_of_data"
            )


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_path(proof: object) -> bool:
    return isinstance(proof, Sequence) and all(_is_hash(value) for value in proof)
