"""The Merkle tree: published answers, proofs that verify, and tampering that is caught."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.errors import PermanentError
from delivery.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_of_data,
    verify_consistency,
    verify_inclusion,
)

# The RFC 6962 test tree of 8 leaves, from transparency-dev/merkle, testonly/constants.go
# (LeafInputs, NodeHashes, RootHashes, CompactTrees). Leaves and hashes are hex.
LEAF_INPUTS = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
# NODE_HASHES[level][index]: the root of every perfect subtree, level 0 being the leaves.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    [
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
]
# ROOT_HASHES[size] for the trees of the first 0 to 8 leaves.
ROOT_HASHES = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# COMPACT_TREES[size]: the compact range of each tree, as (level, index) in NODE_HASHES.
COMPACT_TREES: list[list[tuple[int, int]]] = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# From transparency-dev/merkle, proof/verify_test.go (inclusionProofs, consistencyProofs).
# The inclusion table numbers its leaves from 1, as copied here: (leaf, size, proof).
INCLUSION_PROOFS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (size1, size2, proof)
CONSISTENCY_PROOFS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
# Also from proof/verify_test.go: a hash that is no node of the test tree.
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# Which nodes make up a proof, from transparency-dev/merkle, proof/proof_test.go
# (TestInclusion, TestConsistency), the cases within the 8-leaf tree. A node is (level,
# index) in NODE_HASHES; a tuple of nodes is the source's "rehash": the nodes, listed from
# the lowest, hashed into one with each later node on the left (l = hash(i, j)).
Ref = tuple[int, int] | tuple[tuple[int, int], ...]
L7: Ref = ((0, 6), (1, 2))  # the root of leaves 4 to 6, the right half of the 7-leaf tree
INCLUSION_NODES: list[tuple[int, int, list[Ref]]] = [  # (size, index, nodes)
    (1, 0, []),
    (2, 0, [(0, 1)]),
    (2, 1, [(0, 0)]),
    (3, 1, [(0, 0), (0, 2)]),
    (7, 0, [(0, 1), (1, 1), L7]),
    (7, 1, [(0, 0), (1, 1), L7]),
    (7, 2, [(0, 3), (1, 0), L7]),
    (7, 3, [(0, 2), (1, 0), L7]),
    (7, 4, [(0, 5), (0, 6), (2, 0)]),
    (7, 5, [(0, 4), (0, 6), (2, 0)]),
    (7, 6, [(1, 2), (2, 0)]),
    (4, 2, [(0, 3), (1, 0)]),
    (5, 3, [(0, 2), (1, 0), (0, 4)]),
    (6, 3, [(0, 2), (1, 0), (1, 2)]),
    (6, 4, [(0, 5), (2, 0)]),
]
INCLUSION_ERRORS = [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8)]  # (size, index)
CONSISTENCY_NODES: list[tuple[int, int, list[Ref]]] = [  # (size1, size2, nodes)
    (1, 2, [(0, 1)]),
    (1, 4, [(0, 1), (1, 1)]),
    (1, 6, [(0, 1), (1, 1), (1, 2)]),
    (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]),
    (3, 7, [(0, 2), (0, 3), (1, 0), L7]),
    (4, 7, [L7]),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    (1, 1, []),
    (2, 2, []),
    (3, 3, []),
    (4, 4, []),
    (5, 5, []),
    (7, 7, []),
    (8, 8, []),
    (2, 4, [(1, 1)]),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]),
    (1, 7, [(0, 1), (1, 1), L7]),
]
CONSISTENCY_ERRORS = [(5, 0), (9, 8)]  # (size1, size2)


def _hexes(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


LEAVES = [leaf_hash(data) for data in _hexes(LEAF_INPUTS)]
ROOTS = _hexes(ROOT_HASHES)


def _node(ref: Ref) -> bytes:
    if isinstance(ref[0], int):
        level, index = ref
        assert isinstance(level, int)
        assert isinstance(index, int)
        return bytes.fromhex(NODE_HASHES[level][index])
    nodes = [_node(part) for part in ref]
    merged = nodes[0]
    for left in nodes[1:]:
        merged = node_hash(left, merged)
    return merged


def _reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH as RFC 9162 section 2.1.1 writes it: recursive, split at the largest 2^i < n."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def _flip(proof: Sequence[bytes], position: int, bit: int) -> list[bytes]:
    wrong = list(proof)
    wrong[position] = bytes([wrong[position][0] ^ bit]) + wrong[position][1:]
    return wrong


def _generated(count: int, salt: int = 0) -> list[bytes]:
    return [leaf_hash(f"{salt}:{n}".encode()) for n in range(count)]


# -- hashing and roots ---------------------------------------------------------------------


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert root([]) == EMPTY_ROOT
    assert root_of_data([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


def test_leaf_and_node_hashes_give_every_published_node() -> None:
    assert [leaf.hex() for leaf in LEAVES] == NODE_HASHES[0]
    for level in range(1, len(NODE_HASHES)):
        below = _hexes(NODE_HASHES[level - 1])
        pairs = zip(below[0::2], below[1::2], strict=True)
        assert [node_hash(left, right).hex() for left, right in pairs] == NODE_HASHES[level]


def test_the_leaf_and_node_prefixes_keep_a_leaf_from_passing_for_a_node() -> None:
    left, right = LEAVES[0], LEAVES[1]
    assert leaf_hash(left + right) != node_hash(left, right)
    assert leaf_hash(b"\x01" + left + right) != node_hash(left, right)


@pytest.mark.parametrize("size", range(1, 9))
def test_the_root_of_every_prefix_is_the_published_one(size: int) -> None:
    assert root(LEAVES[:size]) == ROOTS[size]
    assert root_of_data(_hexes(LEAF_INPUTS[:size])) == ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_the_compact_range_holds_the_published_subtrees(size: int) -> None:
    compact = CompactRange()
    compact.extend(LEAVES[:size])
    assert compact.size == size
    assert compact.hashes == tuple(_node(ref) for ref in COMPACT_TREES[size])
    assert compact.root() == ROOTS[size]


def test_root_refuses_data_passed_for_leaf_hashes() -> None:
    with pytest.raises(ProofError, match="leaf hash 1 is 2 bytes"):
        root([LEAVES[0], b"00"])


def test_a_proof_error_is_a_permanent_value_error() -> None:
    with pytest.raises(ProofError) as caught:
        inclusion_proof(LEAVES, 8)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PermanentError)
    assert str(caught.value) == "leaf index 8 is outside a tree of 8 leaves"


# -- inclusion: the published table ----------------------------------------------------------


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], head: bytes, leaf: bytes
) -> dict[str, tuple[bytes, int, int, list[bytes], bytes]]:
    """Every corruption proof/verify_test.go's corruptInclusionProof tries."""
    probes = {
        "index - 1": (leaf, index - 1, size, proof, head),
        "index + 1": (leaf, index + 1, size, proof, head),
        "index ^ 2": (leaf, index ^ 2, size, proof, head),
        "size * 2": (leaf, index, size * 2, proof, head),
        "size // 2": (leaf, index, size // 2, proof, head),
        "wrong leaf": (b"WrongLeaf", index, size, proof, head),
        "wrong leaf of the right length": (leaf_hash(b"WrongLeaf"), index, size, proof, head),
        "empty root": (leaf, index, size, proof, EMPTY_ROOT),
        "random root": (leaf, index, size, proof, SOME_HASH),
        "trailing garbage": (leaf, index, size, [*proof, b""], head),
        "trailing root": (leaf, index, size, [*proof, head], head),
        "preceding garbage": (leaf, index, size, [b"", *proof], head),
        "preceding root": (leaf, index, size, [head, *proof], head),
        # Not in the source: one level too many, checked against the root it leads to.
        "a level above the root": (
            leaf,
            index,
            size,
            [*proof, SOME_HASH],
            node_hash(SOME_HASH, head),
        ),
    }
    for position in range(len(proof)):
        probes[f"proof[{position}] bit 3 flipped"] = (
            leaf,
            index,
            size,
            _flip(proof, position, 8),
            head,
        )
    if proof:
        probes["removed component"] = (leaf, index, size, proof[:-1], head)
    if len(proof) > 1:
        probes["inserted component"] = (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], head)
    return probes


@pytest.mark.parametrize(("leaf", "size", "published"), INCLUSION_PROOFS)
def test_published_inclusion_proofs_are_generated_and_verify(
    leaf: int, size: int, published: list[str]
) -> None:
    index = leaf - 1  # the source counts leaves from 1
    proof = _hexes(published)
    assert inclusion_proof(LEAVES[:size], index) == proof
    assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("leaf", "size", "published"), INCLUSION_PROOFS)
def test_corrupted_published_inclusion_proofs_fail(
    leaf: int, size: int, published: list[str]
) -> None:
    index = leaf - 1
    probes = _inclusion_probes(index, size, _hexes(published), ROOTS[size], LEAVES[index])
    accepted = [name for name, args in probes.items() if verify_inclusion(*args)]
    assert accepted == []


@pytest.mark.parametrize(("size", "index", "nodes"), INCLUSION_NODES)
def test_inclusion_proofs_are_made_of_the_published_nodes(
    size: int, index: int, nodes: list[Ref]
) -> None:
    proof = inclusion_proof(LEAVES[:size], index)
    assert proof == [_node(ref) for ref in nodes]
    assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("size", "index"), [*INCLUSION_ERRORS, (3, -1)])
def test_an_inclusion_proof_for_no_leaf_is_an_error(size: int, index: int) -> None:
    with pytest.raises(ProofError, match=f"leaf index {index} is outside a tree of {size}"):
        inclusion_proof(LEAVES[:size], index)


def test_a_one_leaf_tree_proves_its_leaf_with_an_empty_proof() -> None:
    # proof/verify_test.go, TestVerifyInclusionSingleEntry.
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)
    assert not verify_inclusion(b"", 0, 1, [], single)
    assert not verify_inclusion(single, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_fails_for_a_leaf_that_is_not_the_root(index: int, size: int) -> None:
    # proof/verify_test.go, TestVerifyInclusion's probes.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


# -- consistency: the published table --------------------------------------------------------


def _consistency_probes(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> dict[str, tuple[int, int, bytes, bytes, list[bytes]]]:
    """Every corruption proof/verify_test.go's corruptConsistencyProof tries."""
    probes = {
        "size1 - 1": (old - 1, new, old_root, new_root, proof),
        "size1 + 1": (old + 1, new, old_root, new_root, proof),
        "size1 ^ 2": (old ^ 2, new, old_root, new_root, proof),
        "size2 * 2": (old, new * 2, old_root, new_root, proof),
        "size2 // 2": (old, new // 2, old_root, new_root, proof),
        "wrong root1": (old, new, b"WrongRoot", new_root, proof),
        "wrong root2": (old, new, old_root, b"WrongRoot", proof),
        "wrong root1 of the right length": (old, new, SOME_HASH, new_root, proof),
        "wrong root2 of the right length": (old, new, old_root, SOME_HASH, proof),
        "swapped roots": (old, new, new_root, old_root, proof),
        "empty proof": (old, new, old_root, new_root, []),
        "trailing garbage": (old, new, old_root, new_root, [*proof, b""]),
        "trailing root1": (old, new, old_root, new_root, [*proof, old_root]),
        "trailing root2": (old, new, old_root, new_root, [*proof, new_root]),
        "preceding garbage": (old, new, old_root, new_root, [b"", *proof]),
        "preceding root1": (old, new, old_root, new_root, [old_root, *proof]),
        "preceding root2": (old, new, old_root, new_root, [new_root, *proof]),
        "preceding proof[0]": (old, new, old_root, new_root, [proof[0], *proof]),
        "truncated proof": (old, new, old_root, new_root, proof[:-1]),
        # Not in the source: one level too many, checked against the roots it leads to.
        "a level above both roots": (
            old,
            new,
            node_hash(SOME_HASH, old_root),
            node_hash(SOME_HASH, new_root),
            [*proof, SOME_HASH],
        ),
        "a level above the new root": (
            old,
            new,
            old_root,
            node_hash(SOME_HASH, new_root),
            [*proof, SOME_HASH],
        ),
    }
    for position in range(len(proof)):
        probes[f"proof[{position}] bit 4 flipped"] = (
            old,
            new,
            old_root,
            new_root,
            _flip(proof, position, 16),
        )
    return probes


@pytest.mark.parametrize(("old", "new", "published"), CONSISTENCY_PROOFS)
def test_published_consistency_proofs_are_generated_and_verify(
    old: int, new: int, published: list[str]
) -> None:
    proof = _hexes(published)
    assert consistency_proof(LEAVES[:new], old) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize(
    ("old", "new", "published"), [case for case in CONSISTENCY_PROOFS if case[2]]
)
def test_corrupted_published_consistency_proofs_fail(
    old: int, new: int, published: list[str]
) -> None:
    probes = _consistency_probes(old, new, ROOTS[old], ROOTS[new], _hexes(published))
    accepted = [name for name, args in probes.items() if verify_consistency(*args)]
    assert accepted == []


@pytest.mark.parametrize(("old", "new", "nodes"), CONSISTENCY_NODES)
def test_consistency_proofs_are_made_of_the_published_nodes(
    old: int, new: int, nodes: list[Ref]
) -> None:
    proof = consistency_proof(LEAVES[:new], old)
    assert proof == [_node(ref) for ref in nodes]
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize(("old", "new"), [*CONSISTENCY_ERRORS, (-1, 3)])
def test_a_consistency_proof_from_beyond_the_tree_is_an_error(old: int, new: int) -> None:
    with pytest.raises(ProofError, match=f"old size {old} is outside a tree of {new} leaves"):
        consistency_proof(LEAVES[:new], old)


OTHER = leaf_hash(b"another root")


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "holds"),
    [
        # Equal sizes: the same root, nothing to prove.
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (1, 1, ROOTS[1], ROOTS[1], [], True),
        (8, 8, ROOTS[8], ROOTS[8], [], True),
        (1, 1, ROOTS[1], OTHER, [], False),
        (1, 1, EMPTY_ROOT, ROOTS[1], [], False),
        (8, 8, ROOTS[8], ROOTS[8], [EMPTY_ROOT], False),
        # The empty tree starts every tree, and has one root only.
        (0, 1, EMPTY_ROOT, ROOTS[1], [], True),
        (0, 8, EMPTY_ROOT, ROOTS[8], [], True),
        (0, 0, OTHER, OTHER, [], False),
        (0, 8, OTHER, ROOTS[8], [], False),
        (0, 1, EMPTY_ROOT, ROOTS[1], [EMPTY_ROOT], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        # Back in time.
        (1, 0, ROOTS[1], EMPTY_ROOT, [], False),
        (2, 1, ROOTS[2], ROOTS[1], [], False),
        (8, 6, ROOTS[8], ROOTS[6], _hexes(CONSISTENCY_PROOFS[2][2]), False),
        # A growing tree always needs a proof (RFC 9162 section 2.1.4.2, step 1).
        (1, 2, ROOTS[1], ROOTS[2], [], False),
        # An old size that is a power of two: its root is the first element of the path.
        (4, 8, ROOTS[4], ROOTS[8], [bytes.fromhex(NODE_HASHES[2][1])], True),
        (4, 8, ROOTS[4], ROOTS[8], [ROOTS[4], bytes.fromhex(NODE_HASHES[2][1])], False),
        (2, 8, ROOTS[2], ROOTS[8], [_node((1, 1)), _node((2, 1))], True),
        (2, 8, ROOTS[3], ROOTS[8], [_node((1, 1)), _node((2, 1))], False),
    ],
)
def test_consistency_edge_cases(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], holds: bool
) -> None:
    assert verify_consistency(old, new, old_root, new_root, proof) is holds


# -- properties: any tree of a few hundred leaves ------------------------------------------

SIZES = st.integers(min_value=1, max_value=300)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=9))
def test_root_is_the_recursive_definition(size: int, salt: int) -> None:
    leaves = _generated(size, salt)
    assert root(leaves) == _reference_root(leaves)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=200), st.integers(min_value=0, max_value=40))
def test_a_compact_range_always_has_the_root_of_all_its_leaves(
    data: list[bytes], stop: int
) -> None:
    leaves = [leaf_hash(item) for item in data]
    compact = CompactRange()
    for count, value in enumerate(leaves, start=1):
        compact.append(value)
        assert compact.size == count
        assert compact.root() == root(leaves[:count])
    resumed = CompactRange(*_prefix_range(leaves, min(stop, len(leaves))))
    resumed.extend(leaves[min(stop, len(leaves)) :])
    assert resumed.hashes == compact.hashes
    assert resumed.root() == root_of_data(data)


def _prefix_range(leaves: list[bytes], size: int) -> tuple[int, tuple[bytes, ...]]:
    compact = CompactRange()
    compact.extend(leaves[:size])
    return compact.size, compact.hashes


@settings(max_examples=12, deadline=None)
@given(SIZES)
def test_every_inclusion_proof_verifies(size: int) -> None:
    leaves = _generated(size)
    head = root(leaves)
    for index, leaf in enumerate(leaves):
        assert verify_inclusion(leaf, index, size, inclusion_proof(leaves, index), head)


@settings(max_examples=12, deadline=None)
@given(SIZES)
def test_every_consistency_proof_verifies(size: int) -> None:
    leaves = _generated(size)
    heads = CompactRange()
    old_roots = [EMPTY_ROOT]
    for leaf in leaves:
        heads.append(leaf)
        old_roots.append(heads.root())
    for old in range(size + 1):
        proof = consistency_proof(leaves, old)
        assert verify_consistency(old, size, old_roots[old], old_roots[size], proof)


@settings(max_examples=150, deadline=None)
@given(SIZES, st.data())
def test_a_flipped_byte_in_a_proof_is_caught(size: int, data: st.DataObject) -> None:
    leaves = _generated(size)
    head = root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = inclusion_proof(leaves, index)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="element")
        byte = data.draw(st.integers(0, 31), label="byte")
        bit = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]), label="bit")
        wrong = list(proof)
        wrong[position] = _flip_byte(wrong[position], byte, bit)
        assert not verify_inclusion(leaves[index], index, size, wrong, head)
    old = data.draw(st.integers(min_value=1, max_value=size), label="old size")
    proof = consistency_proof(leaves, old)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="element")
        byte = data.draw(st.integers(0, 31), label="byte")
        wrong = list(proof)
        wrong[position] = _flip_byte(wrong[position], byte, 1)
        assert not verify_consistency(old, size, root(leaves[:old]), head, wrong)


def _flip_byte(value: bytes, byte: int, bit: int) -> bytes:
    return value[:byte] + bytes([value[byte] ^ bit]) + value[byte + 1 :]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=300), st.data())
def test_swapping_two_leaves_is_caught(size: int, data: st.DataObject) -> None:
    leaves = _generated(size)
    first = data.draw(st.integers(0, size - 2), label="first")
    second = data.draw(st.integers(first + 1, size - 1), label="second")
    swapped = list(leaves)
    swapped[first], swapped[second] = swapped[second], swapped[first]
    head, rewritten = root(leaves), root(swapped)
    assert head != rewritten
    # Each leaf's proof from one tree fails against the other's root.
    assert not verify_inclusion(
        leaves[first], first, size, inclusion_proof(leaves, first), rewritten
    )
    assert not verify_inclusion(swapped[first], first, size, inclusion_proof(swapped, first), head)
    # A rewritten log cannot show it extends a head that covered the swapped leaf.
    old = data.draw(st.integers(first + 1, size), label="old size")
    proof = consistency_proof(swapped, old)
    assert not verify_consistency(old, size, root(leaves[:old]), rewritten, proof)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=300), st.data())
def test_dropping_the_last_leaf_is_caught(size: int, data: st.DataObject) -> None:
    leaves = _generated(size)
    head = root(leaves)
    dropped = leaves[:-1]
    shorter = root(dropped)
    assert shorter != head
    index = data.draw(st.integers(0, size - 1), label="index")
    # Proofs from the full tree fail against the shorter tree's root.
    assert not verify_inclusion(leaves[index], index, size, inclusion_proof(leaves, index), shorter)
    old = data.draw(st.integers(1, size - 1), label="old size")
    old_root = root(leaves[:old])
    assert not verify_consistency(old, size, old_root, shorter, consistency_proof(leaves, old))
    # Against the head it published, the log can neither shrink nor change its root...
    assert not verify_consistency(size, size - 1, head, shorter, [])
    assert not verify_consistency(size, size, head, shorter, [])
    # ...nor grow again from the shortened tree.
    extra = data.draw(st.integers(1, 5), label="leaves appended after the drop")
    rewritten = dropped + _generated(extra, salt=1)
    proof = consistency_proof(rewritten, size)
    assert not verify_consistency(size, len(rewritten), head, root(rewritten), proof)


# -- malformed input: False, never an exception ---------------------------------------------

NUMBERS = st.integers(min_value=-(2**70), max_value=2**70)
SOME_BYTES = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=70))


@settings(max_examples=300, deadline=None)
@given(SOME_BYTES, NUMBERS, NUMBERS, st.lists(SOME_BYTES, max_size=80), SOME_BYTES)
def test_verify_inclusion_of_anything_is_a_plain_answer(
    leaf: bytes, index: int, size: int, proof: list[bytes], head: bytes
) -> None:
    # Without a real proof, only a one-leaf tree whose root is the leaf itself can pass.
    trivial = index == 0 and size == 1 and not proof and leaf == head and len(leaf) == 32
    assert verify_inclusion(leaf, index, size, proof, head) is trivial


@settings(max_examples=300, deadline=None)
@given(NUMBERS, NUMBERS, SOME_BYTES, SOME_BYTES, st.lists(SOME_BYTES, max_size=80))
def test_verify_consistency_of_anything_is_a_plain_answer(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> None:
    # Without a real proof, only the cases with nothing to prove can pass.
    well_formed = len(old_root) == 32 and len(new_root) == 32 and not proof
    same = 0 < old == new and old_root == new_root
    empty = old == 0 <= new and old_root == EMPTY_ROOT and (new > 0 or new_root == EMPTY_ROOT)
    assert verify_consistency(old, new, old_root, new_root, proof) is (
        well_formed and (same or empty)
    )


@pytest.mark.parametrize(
    "proof", [None, 7, "a string", b"\x00" * 32, [None], [7], ["ab" * 32], [bytearray(32)]]
)
def test_a_proof_of_the_wrong_type_is_false(proof: object) -> None:
    assert verify_inclusion(LEAVES[0], 0, 8, proof, ROOTS[8]) is False  # type: ignore[arg-type]
    assert verify_consistency(1, 8, ROOTS[1], ROOTS[8], proof) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("number", [None, 1.0, "1", True])
def test_a_size_or_index_that_is_not_a_whole_number_is_false(number: object) -> None:
    proof = inclusion_proof(LEAVES[:2], 1)
    assert verify_inclusion(LEAVES[1], 1, 2, proof, ROOTS[2])
    assert verify_inclusion(LEAVES[1], number, 2, proof, ROOTS[2]) is False  # type: ignore[arg-type]
    assert verify_inclusion(LEAVES[1], 1, number, proof, ROOTS[2]) is False  # type: ignore[arg-type]
    assert verify_consistency(number, 1, ROOTS[1], ROOTS[1], []) is False  # type: ignore[arg-type]


# -- the compact range -----------------------------------------------------------------------


def test_a_compact_range_resumes_from_its_stored_hashes() -> None:
    stored = CompactRange()
    stored.extend(LEAVES[:5])
    resumed = CompactRange(stored.size, stored.hashes)
    resumed.extend(LEAVES[5:])
    assert resumed.size == 8
    assert resumed.root() == ROOTS[8]


@pytest.mark.parametrize(
    ("size", "hashes", "message"),
    [
        (-1, (), "a compact range of -1 leaves is not possible"),
        (3, (ROOTS[2],), "a compact range of 3 leaves has 2 hashes, not 1"),
        (2, (b"short",), "compact range hash 0 is not 32 bytes"),
    ],
)
def test_a_compact_range_that_cannot_be_is_refused(
    size: int, hashes: tuple[bytes, ...], message: str
) -> None:
    with pytest.raises(ProofError, match=message):
        CompactRange(size, hashes)


def test_a_compact_range_takes_leaf_hashes_only() -> None:
    compact = CompactRange()
    with pytest.raises(ProofError, match="leaf hash 0 is not 32 bytes"):
        compact.append(b"raw data")
    assert compact.size == 0
