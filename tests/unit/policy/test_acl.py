"""POSIX ACL xattr bytes: canonical encoding, strict decoding, and equivalence with the mode."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedfs.errors import PolicyError
from fedfs.policy.acl import UNDEFINED_ID, Acl, AclEntry, AclTag

# user::rw-  user:1001:rw-  group::r--  mask::rw-  other::---
GRANTED_0640 = bytes.fromhex(
    "02000000 0100 0600 ffffffff 0200 0600 e9030000 0400 0400 ffffffff "
    "1000 0600 ffffffff 2000 0000 ffffffff".replace(" ", "")
)


def raw(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


BASE = [AclEntry(AclTag.USER_OBJ, 6), AclEntry(AclTag.GROUP_OBJ, 4), AclEntry(AclTag.OTHER, 0)]


def test_named_user_acl_encodes_to_the_bytes_getfacl_reads() -> None:
    acl = Acl([*BASE, AclEntry(AclTag.USER, 6, 1001), AclEntry(AclTag.MASK, 6)])
    assert acl.encode() == GRANTED_0640
    assert len(acl.encode()) == 44
    assert str(acl) == "user::rw-\nuser:1001:rw-\ngroup::r--\nmask::rw-\nother::---"


def test_entries_in_any_order_encode_identically() -> None:
    entries = [
        AclEntry(AclTag.OTHER, 0),
        AclEntry(AclTag.GROUP, 5, 300),
        AclEntry(AclTag.USER, 6, 2000),
        AclEntry(AclTag.MASK, 7),
        AclEntry(AclTag.GROUP, 4, 20),
        AclEntry(AclTag.USER_OBJ, 7),
        AclEntry(AclTag.USER, 4, 1001),
        AclEntry(AclTag.GROUP_OBJ, 5),
    ]
    forward, backward = Acl(entries), Acl(reversed(entries))
    assert forward.encode() == backward.encode()
    assert [(e.tag, e.id) for e in forward.entries] == [
        (AclTag.USER_OBJ, UNDEFINED_ID),
        (AclTag.USER, 1001),
        (AclTag.USER, 2000),
        (AclTag.GROUP_OBJ, UNDEFINED_ID),
        (AclTag.GROUP, 20),
        (AclTag.GROUP, 300),
        (AclTag.MASK, UNDEFINED_ID),
        (AclTag.OTHER, UNDEFINED_ID),
    ]


def test_duplicate_entries_merge_their_permissions() -> None:
    acl = Acl(
        [
            *BASE,
            AclEntry(AclTag.USER, 4, 1001),
            AclEntry(AclTag.USER, 2, 1001),
            AclEntry(AclTag.MASK, 6),
        ]
    )
    assert acl.perm(AclTag.USER, 1001) == 6
    assert len(acl.entries) == 5


def test_mode_equivalence_of_a_minimal_acl() -> None:
    acl = Acl.from_mode(0o754)
    assert acl.is_minimal
    assert acl.mode == 0o754
    assert acl.encode() == raw(
        (0x01, 7, UNDEFINED_ID), (0x04, 5, UNDEFINED_ID), (0x20, 4, UNDEFINED_ID)
    )


def test_mask_is_what_the_group_bits_show() -> None:
    acl = Acl([*BASE, AclEntry(AclTag.USER, 7, 1001), AclEntry(AclTag.MASK, 5)])
    assert not acl.is_minimal
    assert acl.mode == 0o650


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "expected 4 header bytes"),
        (raw((0x01, 6, 0), (0x04, 4, 0), (0x20, 0, 0))[:-1], "plus 8 bytes per entry"),
        (raw((0x01, 6, 0), (0x04, 4, 0), (0x20, 0, 0), version=1), "only version 2"),
        (raw((0x01, 6, 0), (0x40, 4, 0), (0x20, 0, 0)), "unknown ACL entry tag 0x40"),
        (raw((0x01, 8, 0), (0x04, 4, 0), (0x20, 0, 0)), "out of range: use 0-7"),
        (
            raw((0x01, 6, 0), (0x02, 4, 7), (0x02, 6, 7), (0x04, 4, 0), (0x10, 6, 0), (0x20, 0, 0)),
            "two USER entries for id 7",
        ),
        (raw((0x01, 6, 0), (0x01, 6, 0), (0x04, 4, 0), (0x20, 0, 0)), "two USER_OBJ entries"),
        (raw((0x01, 6, 0), (0x20, 0, 0)), "missing its GROUP_OBJ entry"),
        (raw(), "missing its USER_OBJ, GROUP_OBJ, OTHER entry"),
        (raw((0x01, 6, 0), (0x08, 4, 9), (0x04, 4, 0), (0x20, 0, 0)), "but no MASK entry"),
        (
            raw((0x01, 6, 0), (0x02, 4, UNDEFINED_ID), (0x04, 4, 0), (0x10, 4, 0), (0x20, 0, 0)),
            "not a valid uid",
        ),
    ],
)
def test_decode_refuses_malformed_xattrs_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Acl.decode(data)


def test_decode_accepts_any_order_and_returns_canonical_form() -> None:
    # The kernel ignores ids of USER_OBJ/GROUP_OBJ/MASK/OTHER; some writers put 0 there.
    data = raw((0x20, 0, 0), (0x10, 6, 0), (0x04, 4, 0), (0x02, 6, 1001), (0x01, 6, 0))
    assert Acl.decode(data).encode() == GRANTED_0640


@st.composite
def valid_acls(draw: st.DrawFn) -> Acl:
    perm = st.integers(0, 7)
    ids = st.integers(0, UNDEFINED_ID - 1)
    users = draw(st.dictionaries(ids, perm, max_size=6))
    groups = draw(st.dictionaries(ids, perm, max_size=6))
    entries = [
        AclEntry(AclTag.USER_OBJ, draw(perm)),
        AclEntry(AclTag.GROUP_OBJ, draw(perm)),
        AclEntry(AclTag.OTHER, draw(perm)),
        *(AclEntry(AclTag.USER, p, i) for i, p in users.items()),
        *(AclEntry(AclTag.GROUP, p, i) for i, p in groups.items()),
    ]
    # A mask is required with named entries and allowed without them.
    with_mask: bool = draw(st.booleans())
    if users or groups or with_mask:
        entries.append(AclEntry(AclTag.MASK, draw(perm)))
    return Acl(entries)


@given(valid_acls())
def test_decode_of_encode_is_identity(acl: Acl) -> None:
    assert Acl.decode(acl.encode()) == acl


@given(st.binary(max_size=120))
def test_decode_of_arbitrary_bytes_returns_acl_or_policy_error(data: bytes) -> None:
    try:
        acl = Acl.decode(data)
    except PolicyError:
        return
    assert Acl.decode(acl.encode()) == acl


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 4, 8, 0x10, 0x20, 0x40, 0xFFFF]),
            st.integers(0, 0xFFFF),
            st.sampled_from([0, 1, 1001, UNDEFINED_ID - 1, UNDEFINED_ID]),
        ),
        max_size=10,
    ),
    st.sampled_from([2, 2, 2, 0, 3]),
)
def test_decode_of_plausible_entries_returns_acl_or_policy_error(
    entries: list[tuple[int, int, int]], version: int
) -> None:
    # Random bytes rarely get past the header; this reaches the per-entry checks.
    try:
        acl = Acl.decode(raw(*entries, version=version))
    except PolicyError:
        return
    assert Acl.decode(acl.encode()) == acl
