"""The ledger's Merkle tree kept whole, so that many proofs cost O(log n) each, pure.

:mod:`delivery.merkle` computes each proof from the leaves, in time linear in the tree: fine
for one proof, too slow for the thousands an audit package carries. This keeps the root of
every perfect subtree, level by level, in flat byte arrays (32 bytes a node, about twice
the leaves in all), filled in one pass as the leaves stream by. Any subtree of the tree of
RFC 9162 section 2.1 starts at a multiple of the largest power of two not above its size,
so its root is a fold of at most log n stored nodes: the proofs below are the same as
:func:`delivery.merkle.inclusion_proof` and :func:`delivery.merkle.consistency_proof`
give, for any tree size up to the leaves appended.
"""

from __future__ import annotations

from delivery import merkle
from delivery.merkle import HASH_SIZE, ProofError


class LeafTree:
    """Every perfect subtree root of a growing log; the tree head and proofs of any size."""

    __slots__ = ("_levels", "_size")

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf by its hash (what `merkle.leaf_hash` returns)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ProofError(f"leaf hash {self._size} is not {HASH_SIZE} bytes")
        index, level, node = self._size, 0, leaf_hash
        self._levels[0] += node
        while index & 1:
            node = merkle.node_hash(self._node(level, index - 1), node)
            level, index = level + 1, index >> 1
            if len(self._levels) == level:
                self._levels.append(bytearray())
            self._levels[level] += node
        self._size += 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        self._check_range(index, index + 1)
        return self._node(0, index)

    def root(self, size: int) -> bytes:
        """MTH of the first `size` leaves; `merkle.EMPTY_ROOT` for none."""
        return self._subtree(0, size)

    def frontier(self, size: int) -> tuple[bytes, ...]:
        """The `merkle.CompactRange` hashes of the first `size` leaves, largest subtree first."""
        self._check_range(0, size)
        return tuple(self._pieces(0, size))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 section 2.1.3.1, lowest sibling first."""
        self._check_range(0, size)
        if not 0 <= index < size:
            raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
        return merkle.inclusion_path(index, size, self._subtree)

    def consistency_proof(self, old_size: int, size: int) -> list[bytes]:
        """PROOF(old_size, D[size]) of RFC 9162 section 2.1.4.1; empty when there is nothing to
        prove (an old size of 0 or of `size`)."""
        self._check_range(0, size)
        if not 0 <= old_size <= size:
            raise ProofError(f"old size {old_size} is outside a tree of {size} leaves")
        return merkle.consistency_path(old_size, size, self._subtree)

    def _subtree(self, low: int, high: int) -> bytes:
        """MTH of leaves [low, high), a subtree of the RFC's tree (low aligned as it says)."""
        self._check_range(low, high)
        pieces = self._pieces(low, high)
        if not pieces:
            return merkle.EMPTY_ROOT
        merged = pieces[-1]
        for left in reversed(pieces[:-1]):
            merged = merkle.node_hash(left, merged)
        return merged

    def _pieces(self, low: int, high: int) -> list[bytes]:
        """The perfect subtrees that make up [low, high), largest first."""
        pieces: list[bytes] = []
        start, remaining = low, high - low
        for level in range(remaining.bit_length() - 1, -1, -1):
            if remaining >> level & 1:
                if start % (1 << level):
                    raise ProofError(f"leaves {low} to {high} are not a subtree of the log")
                pieces.append(self._node(level, start >> level))
                start += 1 << level
        return pieces

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _check_range(self, low: int, high: int) -> None:
        if not 0 <= low <= high <= self._size:
            raise ProofError(f"leaves {low} to {high} are outside a log of {self._size}")
