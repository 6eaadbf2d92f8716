"""Signed checkpoints: the published notes and keys agree, and tampering is caught by name."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    CheckpointError,
    generate_key,
    key_id,
    open_note,
    read_key_file,
    sign,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
    write_key_files,
)
from delivery.errors import LedgerError
from delivery.merkle import root_of_data

# The example key pair, text and signed note of golang.org/x/mod/sumdb/note, from
# golang/mod, sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign, TestOpen);
# the key name is theirs.
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6"
    "KE6RyyBwJnAM=\n"
)
GO_NOTE = GO_TEXT + "\n" + GO_SIGNATURE
# A second signature on the same text, by a key of our own (a witness, say).
WITNESS_SIGNER, WITNESS_VERIFIER = generate_key("example.org/witness")
GO_OTHER_SIGNATURE = sign(GO_TEXT, WITNESS_SIGNER)[len(GO_TEXT) + 1 :]
# TestNewVerifier's keys that only look right: the key ID was adjusted to the mangled key.
GO_WRONG_LENGTH = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
GO_UNKNOWN_TYPE = "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"

_SHORT = base64.b64decode(GO_VERIFIER.split("+", 2)[2])[1:32]
SHORT_KEY = (  # a key one byte short, with the key ID of what is there
    f"PeterNeumann+{key_id('PeterNeumann', _SHORT):08x}+"
    + base64.b64encode(b"\x01" + _SHORT).decode("ascii")
)

# Key pairs of transparency-dev/formats, log/note_test.go: each verifier key is the signer's.
FORMATS_KEY_PAIRS = [
    (
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
    ),
    (
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
    ),
    (
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
    ),
    (
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
    ),
]
# A checkpoint of the Go checksum database, signed by its key, with the cosignatures and
# unknown signatures of BenchmarkParse; from the same file (TestSumDBNoteParsing).
SUMDB_VERIFIER = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEP"
    "WL+o3GeoWwOoAw=\n"
)
SUMDB_COSIGNERS = [
    "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT",
    "bananas+cf639f13+AaPjhFnPCQnid/Ql32KWhmh+uk72FVRfK+2DLmO3BI3M",
    "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN",
]
SUMDB_COSIGNATURES = (
    "— monkeys 202ffh9ve46Mqbhuyb4wnC2Pwdan5EsXQym/tF1ggXJqhjGosU4T5intH4iKMRgDLxrnXuIjRaU2NbvA"
    "naepM6Y+8ww=\n"
    "— bananas z2OfE+2bbsBZ7NLgfuslc0v7NFW2QyexJ7fhePpoL2N/P7N/COd5S+JNHbQEAlYzz2C5sg0E+x/MggS1"
    "mDR6t3/9rQw=\n"
    "— witness 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBXKF+UpDbGgCd"
    "cpR8SVSoqAU=\n"
    "— random1 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBXKF+UpDbGgCd"
    "cpR8SVSoqAU=\n"
    "— random2 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBXKF+UpDbGgCd"
    "cpR8SVSoqAU=\n"
)

# The examples of C2SP/C2SP, tlog-checkpoint.md and signed-note.md; their keys are not
# published, so they can be read but not verified here.
C2SP_CHECKPOINT_BODY = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
C2SP_CHECKPOINT = (
    C2SP_CHECKPOINT_BODY
    + "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Z"
    "hcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
TEXT_WITH_BLANK_LINE = "Delivered to the ministry.\n\nReceipt signed at the front desk.\n"
ORIGIN = "example.org/solidarity-delivery/ledger"
# Two keys under one name whose key IDs collide (32 bits: found among some 60,000 random
# keys); only their public halves are kept.
COLLIDING_VERIFIERS = [
    f"{ORIGIN}+b46e9288+AcvWjqTthSa7oowUPX6++YxmAvwXrL9DAA8Shc23UJc3",
    f"{ORIGIN}+b46e9288+AVaqaVEcXd95Ye6piY2FNLB0wUnJILvHu3V0wACVVtSY",
]
LOG_SIGNER, LOG_VERIFIER = generate_key(ORIGIN)
NEXT_SIGNER, NEXT_VERIFIER = generate_key(f"{ORIGIN}-2")  # the key rotated to
WITNESS_SIGNER, WITNESS_VERIFIER = generate_key("example.net/witness")
LOG_LABEL = "+".join(LOG_VERIFIER.split("+")[:2])  # name+key ID, as messages name a key
CHECKPOINT = Checkpoint(
    origin=ORIGIN, size=5, root=root_of_data([b"event %d" % n for n in range(5)])
)


def _replace_line(note: str, number: int, line: str) -> str:
    lines = note.split("\n")
    lines[number - 1] = line
    return "\n".join(lines)


def _signature_line(name: str, ident: int, signature: bytes) -> str:
    encoded = base64.b64encode(ident.to_bytes(4, "big") + signature).decode("ascii")
    return f"— {name} {encoded}\n"


# -- the published notes and keys ------------------------------------------------------------


def test_the_published_key_pair_has_the_published_key_id_and_verifier_key() -> None:
    public = base64.b64decode(GO_VERIFIER.split("+", 2)[2])[1:]
    assert key_id("PeterNeumann", public) == 0xC74F20A3
    assert verifier_key(GO_SIGNER) == GO_VERIFIER


@pytest.mark.parametrize(("signer", "verifier"), FORMATS_KEY_PAIRS)
def test_each_published_signer_key_gives_its_published_verifier_key(
    signer: str, verifier: str
) -> None:
    assert verifier_key(signer) == verifier


def test_signing_the_published_text_gives_the_published_note_byte_for_byte() -> None:
    assert sign(GO_TEXT, GO_SIGNER) == GO_NOTE


def test_the_published_note_opens_with_the_published_verifier_key() -> None:
    assert open_note(GO_NOTE, [GO_VERIFIER]) == (GO_TEXT, ["PeterNeumann"])
    assert open_note(GO_NOTE.encode("utf-8"), [GO_VERIFIER]) == (GO_TEXT, ["PeterNeumann"])


def test_a_note_signed_twice_opens_with_either_key_or_both() -> None:
    witness_signer, witness_verifier = generate_key("example.org/witness")
    note = sign(GO_NOTE, witness_signer)
    assert open_note(note, [GO_VERIFIER]) == (GO_TEXT, ["PeterNeumann"])
    assert open_note(note, [witness_verifier]) == (GO_TEXT, ["example.org/witness"])
    both = [GO_VERIFIER, witness_verifier]
    assert open_note(note, both) == (GO_TEXT, ["PeterNeumann", "example.org/witness"])
    with pytest.raises(CheckpointError, match="no signature by a known key") as caught:
        open_note(note, [])
    witness_id = witness_verifier.split("+")[1]
    assert f"example.org/witness+{witness_id}" in str(caught.value)
    assert "PeterNeumann+c74f20a3" in str(caught.value)


def test_signing_a_signed_note_adds_the_signature_after_the_ones_there() -> None:
    assert sign(GO_TEXT + "\n" + GO_OTHER_SIGNATURE, GO_SIGNER) == (
        GO_TEXT + "\n" + GO_OTHER_SIGNATURE + GO_SIGNATURE
    )


def test_signing_again_with_the_same_key_replaces_its_signature() -> None:
    stale = _signature_line("PeterNeumann", 0xC74F20A3, bytes(64))
    assert sign(GO_TEXT + "\n" + stale, GO_SIGNER) == GO_NOTE
    assert sign(GO_NOTE, GO_SIGNER) == GO_NOTE


def test_repeated_and_unknown_signatures_do_not_stop_a_known_one() -> None:
    # TestOpen, "Duplicated verified and unverified signatures".
    garbled = GO_OTHER_SIGNATURE[:60] + "ABCD" + GO_OTHER_SIGNATURE[60:]
    note = GO_NOTE + GO_SIGNATURE + GO_OTHER_SIGNATURE + GO_OTHER_SIGNATURE + garbled
    assert open_note(note, [GO_VERIFIER]) == (GO_TEXT, ["PeterNeumann"])


def test_the_published_checksum_database_checkpoint_verifies() -> None:
    checkpoint = verify_checkpoint(SUMDB_NOTE, [SUMDB_VERIFIER], origin="go.sum database tree")
    assert checkpoint.size == 6476701
    assert checkpoint.root == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    assert checkpoint.body() == SUMDB_NOTE.split("\n\n")[0] + "\n"


def test_the_published_cosignatures_verify_and_unknown_ones_are_ignored() -> None:
    note = SUMDB_NOTE + SUMDB_COSIGNATURES
    _text, names = open_note(note, [SUMDB_VERIFIER, *SUMDB_COSIGNERS])
    assert names == ["sum.golang.org", "monkeys", "bananas", "witness"]
    _text, names = open_note(note, [SUMDB_COSIGNERS[2]])
    assert names == ["witness"]


def test_the_published_checkpoint_of_another_origin_is_refused() -> None:
    with pytest.raises(
        CheckpointError, match=re.escape("origin 'go.sum database tree', not 'Go rocks'")
    ):
        verify_checkpoint(SUMDB_NOTE, [SUMDB_VERIFIER], origin="Go rocks")


def test_the_c2sp_checkpoint_example_parses_and_formats_back() -> None:
    checkpoint = Checkpoint.parse(C2SP_CHECKPOINT_BODY)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.body() == C2SP_CHECKPOINT_BODY


def test_the_c2sp_examples_are_signed_by_keys_we_do_not_know() -> None:
    with pytest.raises(CheckpointError, match=r"signed by example\.com/behind-the-sofa\+033de0ae"):
        open_note(C2SP_CHECKPOINT, [LOG_VERIFIER])


def test_a_text_with_a_blank_line_is_split_at_the_last_one() -> None:
    assert open_note(sign(TEXT_WITH_BLANK_LINE, LOG_SIGNER), [LOG_VERIFIER]) == (
        TEXT_WITH_BLANK_LINE,
        [ORIGIN],
    )


# -- malformed notes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("note", "message"),
    [  # The first seven are TestOpen's "Invalid encoded message syntax".
        (GO_TEXT, "no blank line before the signatures"),
        (GO_TEXT + "\n", "no signature lines after the last blank line"),
        (GO_NOTE[:-1], "does not end in a newline"),
        ("\x01" + GO_NOTE, r"control character U\+0001 \(line 1\)"),
        (b"\xff" + GO_NOTE.encode(), "not UTF-8 at byte 0"),
        (
            GO_TEXT + "\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
            "gKvqfqdngotpRZb6KE6RyyBwJnAM=",
            "does not end in a newline",
        ),
        (GO_NOTE + "Unexpected line.\n", "line 5: a signature line starts with an em dash"),
        (GO_NOTE.replace("—", "-"), "line 4: a signature line starts with an em dash"),
        (GO_NOTE.replace("Neumann", "+Neumann"), "line 4: key name 'Peter\\+Neumann' contains a"),
        (GO_NOTE.replace("— PeterNeumann ", "—  "), "line 4: key name '' is empty"),
        (GO_NOTE.replace("AM=", "AN="), "line 4: the signature is not standard base64"),
        (GO_NOTE.replace("ZJ", "Z J"), "line 4: the signature is not standard base64"),
        (GO_NOTE.replace("PeterNeumann", "Peter Neumann"), "line 4: the signature is not"),
        (GO_TEXT + "\n— PeterNeumann x08g\n", "the signature is 3 bytes, too short for a key ID"),
        ("\ud800" + GO_NOTE, "not UTF-8"),
        (GO_NOTE + "\n", "no signature lines after the last blank line"),
    ],
)
def test_a_malformed_note_is_refused_by_what_is_wrong(note: str | bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=f"malformed note: .*{message}"):
        open_note(note, [GO_VERIFIER])


def test_a_hundred_signatures_are_read_and_more_are_refused() -> None:
    hundred = GO_TEXT + "\n" + GO_SIGNATURE * MAX_SIGNATURES
    assert open_note(hundred, [GO_VERIFIER]) == (GO_TEXT, ["PeterNeumann"])
    for known in ([GO_VERIFIER], []):
        with pytest.raises(CheckpointError, match="101 signature lines, more than the 100"):
            open_note(hundred + GO_SIGNATURE, known)
    with pytest.raises(CheckpointError, match="already has 100 signatures"):
        sign(GO_TEXT + "\n" + GO_OTHER_SIGNATURE * MAX_SIGNATURES, GO_SIGNER)


def test_a_garbled_signature_by_a_known_key_is_named() -> None:
    # TestOpen, "Invalid signature": four characters inside the signature.
    note = GO_TEXT + "\n" + GO_SIGNATURE[:60] + "ABCD" + GO_SIGNATURE[60:]
    with pytest.raises(
        CheckpointError,
        match=r"invalid signature by key PeterNeumann\+c74f20a3 on line 4: 67 bytes, "
        "an Ed25519 signature is 64",
    ):
        open_note(note, [GO_VERIFIER])


def test_a_bad_signature_by_a_known_key_rejects_the_note_even_beside_a_good_one() -> None:
    bad = _signature_line("PeterNeumann", 0xC74F20A3, bytes(64))
    with pytest.raises(CheckpointError, match=r"PeterNeumann\+c74f20a3 on line 5: it does not"):
        open_note(GO_NOTE + bad, [GO_VERIFIER])


def test_a_signature_under_another_name_or_key_id_is_an_unknown_key() -> None:
    # TestVerifierList and TestOpen: a known key's signature is known by name and key ID.
    renamed = GO_NOTE.replace("PeterNeumann", "CarmenSandiego")
    other_id = _replace_line(GO_NOTE, 4, GO_SIGNATURE.replace("x08g", "xxxx")[:-1])
    for note, label in [(renamed, r"CarmenSandiego\+c74f20a3"), (other_id, r"PeterNeumann\+")]:
        with pytest.raises(CheckpointError, match=f"no signature by a known key: .*by {label}"):
            open_note(note, [GO_VERIFIER])


# -- keys ------------------------------------------------------------------------------------


def _manglings(key: str) -> list[str]:
    """TestNewVerifier's and TestNewSigner's: every proper substring, every byte plus one."""
    cut = [key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)]
    bumped = [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return [mangled for mangled in cut + bumped if mangled != key]


def _refusal(call: Callable[[], object]) -> str:
    """The message of the CheckpointError `call` raises; "accepted" if it raises none."""
    try:
        call()
    except CheckpointError as err:
        return str(err)
    return "accepted"


def test_every_mangled_verifier_key_is_refused() -> None:
    refusals = {
        key: _refusal(partial(open_note, GO_NOTE, [key])) for key in _manglings(GO_VERIFIER)
    }
    assert {key: why for key, why in refusals.items() if "verifier key" not in why} == {}


def test_every_mangled_signer_key_is_refused_without_being_repeated() -> None:
    secret = GO_SIGNER.split("+", 4)[4]
    pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
    refusals = {key: _refusal(partial(sign, GO_TEXT, key)) for key in _manglings(GO_SIGNER)}
    assert {key: why for key, why in refusals.items() if "signer key" not in why} == {}
    leaks = {why for why in refusals.values() if any(piece in why for piece in pieces)}
    assert leaks == set()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (GO_WRONG_LENGTH, "the key is not standard base64"),
        (SHORT_KEY, "the key is 31 bytes, not 32"),
        (GO_UNKNOWN_TYPE, "key type 0x65 is not Ed25519"),
        (GO_VERIFIER.replace("c74f20a3", "c74f20a4"), "key ID c74f20a4 does not match the key, "),
        (GO_VERIFIER.replace("c74f20a3", "c74f20"), "key ID 'c74f20' is not 8 hex digits"),
        (GO_VERIFIER.replace("c74f20a3", "0xc74f20"), "key ID '0xc74f20' is not 8 hex digits"),
        (GO_VERIFIER + "=", "the key is not standard base64"),
        ("Peter Neumann+c74f20a3+ARpc", "key name 'Peter Neumann' contains a space"),
        (GO_SIGNER, r"a signer key \(PRIVATE\+KEY\+...\) was given as a verifier key"),
    ],
)
def test_a_bad_verifier_key_is_refused_by_what_is_wrong(key: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as caught:
        open_note(GO_NOTE, [GO_VERIFIER, key])
    assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(caught.value)


def test_the_key_id_is_checked_case_blind_as_go_reads_it() -> None:
    upper = GO_VERIFIER.replace("c74f20a3", "C74F20A3")
    assert open_note(GO_NOTE, [upper]) == (GO_TEXT, ["PeterNeumann"])


def test_two_different_keys_under_one_name_and_key_id_are_refused() -> None:
    assert open_note(GO_NOTE, [GO_VERIFIER, GO_VERIFIER])[1] == ["PeterNeumann"]
    with pytest.raises(CheckpointError, match="give a list of keys, not one string"):
        open_note(GO_NOTE, GO_VERIFIER)
    with pytest.raises(CheckpointError, match=r"two different keys are both .*ledger\+b46e9288"):
        open_note(GO_NOTE, [GO_VERIFIER, *COLLIDING_VERIFIERS])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        ("example.org/a+b", r"contains a \+"),
        ("example.org/a b", "contains a space"),
        ("example.org/a\u00a0b", "contains a space"),
        ("example.org/a\x7fb\x01", "^key name .* has control character U\\+0001$"),
    ],
)
def test_a_key_name_must_be_one_the_signature_lines_can_carry(name: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        generate_key(name)


def test_a_generated_key_pair_signs_and_verifies() -> None:
    signer, verifier = generate_key(ORIGIN)
    assert signer.startswith(f"PRIVATE+KEY+{ORIGIN}+")
    assert verifier.startswith(f"{ORIGIN}+")
    assert verifier_key(signer) == verifier
    assert open_note(sign("hello\n", signer), [verifier]) == ("hello\n", [ORIGIN])
    assert open_note(sign("hello\n", signer), [GO_VERIFIER, verifier])[1] == [ORIGIN]


def test_key_files_keep_the_signer_key_private_and_read_back(tmp_path: Path) -> None:
    key_path, pub_path = write_key_files(ORIGIN, tmp_path / "keys")
    assert key_path.name == "example.org_solidarity-delivery_ledger.key"
    assert pub_path.name == "example.org_solidarity-delivery_ledger.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not stat.S_IMODE(pub_path.stat().st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    signer, verifier = read_key_file(key_path), read_key_file(pub_path)
    assert signer.startswith("PRIVATE+KEY+")
    assert verifier_key(signer) == verifier
    assert pub_path.read_text(encoding="utf-8") == verifier + "\n"
    note = sign_checkpoint(CHECKPOINT, signer)
    assert verify_checkpoint(note, [verifier], origin=ORIGIN) == CHECKPOINT


def test_key_files_are_never_overwritten(tmp_path: Path) -> None:
    key_path, pub_path = write_key_files(ORIGIN, tmp_path)
    before = key_path.read_bytes(), pub_path.read_bytes()
    with pytest.raises(CheckpointError, match=r"\.key: already exists; a new key needs a new name"):
        write_key_files(ORIGIN, tmp_path)
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before
    key_path.unlink()  # a lone .pub is still never replaced, nor a .key written beside it
    with pytest.raises(CheckpointError, match=r"\.pub: already exists"):
        write_key_files(ORIGIN, tmp_path)
    assert not key_path.exists()
    assert pub_path.read_bytes() == before[1]


def test_a_link_where_the_key_file_goes_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.key"
    (tmp_path / "example.org_solidarity-delivery_ledger.key").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match=r"\.key: already exists"):
        write_key_files(ORIGIN, tmp_path)
    assert not elsewhere.exists()
    assert not (tmp_path / "example.org_solidarity-delivery_ledger.pub").exists()


def test_a_file_that_holds_no_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ledger.pub"
    path.write_text("ledger+00000000+AAAA\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=f"{path}: verifier key"):
        read_key_file(path)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'missing.key'}: cannot be read"):
        read_key_file(tmp_path / "missing.key")


# -- checkpoints -----------------------------------------------------------------------------


def test_a_signed_checkpoint_verifies_to_itself() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_SIGNER)
    assert note.startswith(CHECKPOINT.body() + "\n— " + ORIGIN + " ")
    assert verify_checkpoint(note, [LOG_VERIFIER], origin=ORIGIN) == CHECKPOINT


def test_extension_lines_are_signed_and_read_back() -> None:
    extended = dataclasses.replace(CHECKPOINT, extensions=("timestamp 1767225600",))
    note = sign_checkpoint(extended, LOG_SIGNER)
    assert note.split("\n")[3] == "timestamp 1767225600"
    assert verify_checkpoint(note, [LOG_VERIFIER], origin=ORIGIN) == extended


@pytest.mark.parametrize(
    ("text", "message"),
    [  # The invalid cases of transparency-dev/formats, log/checkpoint_test.go, then ours.
        ("Head\n9944\n", "2 line\\(s\\); a checkpoint has at least 3"),
        ("\n9944\n" + C2SP_CHECKPOINT_BODY.split("\n")[2] + "\n", "line 1: the line is empty"),
        ("Log\n123\nYmFuYW5hcw==", "the text does not end in a newline"),
        ("Log\nbananas\nYmFuYW5hcw==\n", "line 2: tree size 'bananas' is not a decimal"),
        ("Log\n-34\nYmFuYW5hcw==\n", "line 2: tree size '-34' is not a decimal"),
        ("Log\n3438945738945739845734895735\nYmFuYW5hcw==\n", "line 2: .* is over 2\\*\\*64"),
        ("Log\n123\nThisIsn'tBase64\n", "line 3: root hash .* is not the standard base64"),
        ("Log\n123\nYmFuYW5hcw==\n", "line 3: root hash 'YmFuYW5hcw==' is not .* of 32 bytes"),
        (C2SP_CHECKPOINT_BODY + "\n\n\n", "line 4: the line is empty"),
        (C2SP_CHECKPOINT_BODY.replace("20852163", "020852163"), "line 2: .* without leading zeros"),
        (C2SP_CHECKPOINT_BODY.replace("20852163", "+20852163"), "line 2: .* without leading"),
        (C2SP_CHECKPOINT_BODY.replace("20852163", "२०"), "line 2: .* without leading"),
        (C2SP_CHECKPOINT_BODY.replace("I=", "J="), "line 3: root hash"),
        (C2SP_CHECKPOINT_BODY.replace("sofa", "so\tfa"), "line 1: .* control character U\\+0009"),
    ],
)
def test_a_malformed_checkpoint_is_refused_by_line(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=f"malformed checkpoint: {message}"):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"origin": ""}, "the origin is empty"),
        ({"origin": "a\nb"}, "the origin has control character U\\+000A"),
        ({"size": -1}, "the tree size -1 is not between 0 and 2\\*\\*64 - 1"),
        ({"size": 2**64}, "the tree size 18446744073709551616 is not between"),
        ({"size": True}, "the tree size is not an integer"),
        ({"root": bytes(31)}, "the root hash is not 32 bytes"),
        ({"extensions": ("",)}, "extension line 1 is empty"),
    ],
)
def test_a_checkpoint_that_cannot_be_written_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match=f"checkpoint: {message}"):
        dataclasses.replace(CHECKPOINT, **fields)


def test_the_largest_and_smallest_tree_sizes_are_written() -> None:
    for size in (0, 2**64 - 1):
        checkpoint = dataclasses.replace(CHECKPOINT, size=size)
        assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_a_checkpoint_error_is_a_ledger_value_error() -> None:
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.parse("")
    assert isinstance(caught.value, LedgerError)
    assert isinstance(caught.value, ValueError)


# -- tampering -------------------------------------------------------------------------------

SIGNED = sign_checkpoint(CHECKPOINT, LOG_SIGNER)


def _invalid(line: int) -> str:
    return f"invalid signature by key {LOG_LABEL} on line {line}: it does not verify"


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (_replace_line(SIGNED, 2, "6"), _invalid(5)),
        (_replace_line(SIGNED, 3, base64.b64encode(bytes(32)).decode()), _invalid(5)),
        (_replace_line(SIGNED, 1, "example.org/solidarity-delivery/other"), _invalid(5)),
        (SIGNED.replace(CHECKPOINT.body(), CHECKPOINT.body() + "\n"), _invalid(6)),
        (SIGNED.replace("\n5\n", "5\n"), _invalid(4)),
        (SIGNED.replace("\n\n", "\n"), "malformed note: no blank line before the signatures"),
        (SIGNED + "\n", "malformed note: no signature lines after the last blank line"),
        (SIGNED[:-1], "malformed note: does not end in a newline"),
        (SIGNED[:-3] + "\n", "malformed note: line 5: the signature is not standard base64"),
        (SIGNED[:-5] + "\n", f"{LOG_LABEL} on line 5: 62 bytes, an Ed25519 signature is 64"),
    ],
)
def test_a_tampered_checkpoint_is_refused_by_what_changed(note: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=re.escape(message)):
        verify_checkpoint(note, [LOG_VERIFIER], origin=ORIGIN)


def test_a_signature_moved_from_another_checkpoint_does_not_verify() -> None:
    other = sign_checkpoint(dataclasses.replace(CHECKPOINT, size=4), LOG_SIGNER)
    swapped = SIGNED.split("\n\n")[0] + "\n\n" + other.split("\n\n")[1]
    with pytest.raises(CheckpointError, match=re.escape(_invalid(5))):
        verify_checkpoint(swapped, [LOG_VERIFIER], origin=ORIGIN)


def test_a_checkpoint_signed_only_by_an_unknown_key_is_refused() -> None:
    forged = sign_checkpoint(CHECKPOINT, WITNESS_SIGNER)
    with pytest.raises(CheckpointError, match="no signature by a known key") as caught:
        verify_checkpoint(forged, [LOG_VERIFIER], origin=ORIGIN)
    assert "+".join(WITNESS_VERIFIER.split("+")[:2]) in str(caught.value)
    assert LOG_LABEL in str(caught.value)


def test_a_checkpoint_of_another_log_is_refused_however_well_signed() -> None:
    other = dataclasses.replace(CHECKPOINT, origin="example.org/solidarity-delivery/test")
    with pytest.raises(
        CheckpointError, match=re.escape("for origin 'example.org/solidarity-delivery/test'")
    ):
        verify_checkpoint(sign_checkpoint(other, LOG_SIGNER), [LOG_VERIFIER], origin=ORIGIN)


def test_a_rotated_key_signs_beside_the_old_and_old_checkpoints_still_verify() -> None:
    old = SIGNED
    both = sign(old, NEXT_SIGNER)
    assert both.startswith(old)
    keys = [LOG_VERIFIER, NEXT_VERIFIER]
    assert open_note(both, keys) == (CHECKPOINT.body(), [ORIGIN, f"{ORIGIN}-2"])
    assert verify_checkpoint(both, [NEXT_VERIFIER], origin=ORIGIN) == CHECKPOINT
    assert verify_checkpoint(old, keys, origin=ORIGIN) == CHECKPOINT
    assert verify_checkpoint(old, [LOG_VERIFIER], origin=ORIGIN) == CHECKPOINT
    later = dataclasses.replace(CHECKPOINT, size=6, root=root_of_data([b"e"] * 6))
    new = sign_checkpoint(later, NEXT_SIGNER)
    assert open_note(new, keys)[1] == [f"{ORIGIN}-2"]
    with pytest.raises(CheckpointError, match="no signature by a known key"):
        verify_checkpoint(new, [LOG_VERIFIER], origin=ORIGIN)


def test_a_witness_cosignature_is_ignored_by_an_auditor_without_its_key() -> None:
    cosigned = sign(SIGNED, WITNESS_SIGNER)
    assert open_note(cosigned, [LOG_VERIFIER])[1] == [ORIGIN]
    assert open_note(cosigned, [WITNESS_VERIFIER, LOG_VERIFIER])[1] == [
        ORIGIN,
        "example.net/witness",
    ]


# -- properties ------------------------------------------------------------------------------

ORIGINS = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=60)
EXTENSIONS = st.lists(ORIGINS, max_size=3).map(tuple)


@settings(max_examples=80, deadline=None)
@given(
    ORIGINS,
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
    EXTENSIONS,
)
def test_any_checkpoint_signs_verifies_and_formats_back(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin=origin, size=size, root=root, extensions=extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    note = sign_checkpoint(checkpoint, LOG_SIGNER)
    assert verify_checkpoint(note, [LOG_VERIFIER], origin=origin) == checkpoint


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_one_character_edit_of_a_signed_checkpoint_is_refused(data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(SIGNED)), label="position")
    char = data.draw(st.characters(codec="utf-8"), label="character")
    removed = SIGNED[:position] + SIGNED[position + 1 :]
    replaced = SIGNED[:position] + char + SIGNED[position + 1 :]
    inserted = SIGNED[:position] + char + SIGNED[position:]
    for edited in {removed, replaced, inserted} - {SIGNED}:
        with pytest.raises(CheckpointError):
            verify_checkpoint(edited, [LOG_VERIFIER], origin=ORIGIN)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("ab+=/\n—— \x01é")))
def test_any_text_is_read_or_refused_with_a_checkpoint_error(text: str) -> None:
    for attempt in (
        lambda: Checkpoint.parse(text),
        lambda: open_note(text, [LOG_VERIFIER]),
        lambda: open_note(text + "\n" + GO_SIGNATURE, [GO_VERIFIER]),
    ):
        with contextlib.suppress(CheckpointError):
            attempt()
