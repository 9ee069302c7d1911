"""The seal on fedfs's object metadata: what it covers, that it is bound to its key, and
that metadata without a valid one reads as absent when [object_acl] requires it."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedfs.cli.admins import unsealed_lines
from fedfs.meta import seal as seal_mod
from fedfs.meta.dir_index import apply_entry
from fedfs.meta.index_format import IndexEntry
from fedfs.meta.inode import Inode, Kind
from fedfs.meta.object_meta import apply_info, metadata_for
from fedfs.meta.seal import COVERED, SEAL_META_KEY, SEAL_SIZE, MetadataSeal, canonical
from fedfs.store.s3 import ObjectInfo

KEY = b"k" * 32


@dataclass
class _Owner:
    uid: int = 1000  # alice, the bucket's owner
    gid: int = 1000


OWNERS = {"b": _Owner()}
BOBS = {"mode": str(0o100666), "uid": "1001", "gid": "1001", "mtime": "1500000000"}


def _read(meta: dict[str, str], seal: MetadataSeal, key: str = "d/f") -> Inode[object]:
    inode: Inode[object] = Inode(2, 1, key.rsplit("/", 1)[-1], "b", key, Kind.FILE)
    apply_info(inode, ObjectInfo(key, 0, "e", 1_700_000_000.0, meta), OWNERS, seal)  # type: ignore[arg-type]
    return inode


def _fedfs_file() -> Inode[object]:
    inode: Inode[object] = Inode(2, 1, "f", "b", "d/f", Kind.FILE, mode=0o640, uid=1001, gid=50)
    inode.mtime_ns, inode.explicit_mask, inode.mask_by = 1_500_000_000 * 10**9, 4, "chmod"
    inode.xattrs = {"user.note": b"hi"}
    return inode


def test_the_canonical_form_names_bucket_key_and_every_covered_field_absent_ones_as_null() -> None:
    text = json.loads(canonical("b", "d/f", {"mode": "33188", "uid": "5", "mtime": "1"}))
    assert text[:3] == ["fedfs-meta-v1", "b", "d/f"]
    assert text[3] == [[name, {"mode": "33188", "uid": "5"}.get(name)] for name in COVERED]
    assert "mtime" not in json.dumps(text)  # times are not covered


def test_what_fedfs_writes_reads_back_exactly_under_its_seal() -> None:
    seal = MetadataSeal(KEY, required=True)
    signed = seal.sign("b", "d/f", metadata_for(_fedfs_file()))
    assert len(signed[SEAL_META_KEY]) + len(SEAL_META_KEY) == SEAL_SIZE
    back = _read(signed, seal)
    assert (back.mode, back.uid, back.gid) == (0o640, 1001, 50)
    assert (back.explicit_mask, back.mask_by, back.xattrs) == (4, "chmod", {"user.note": b"hi"})
    assert seal.ignored == 0


def test_metadata_without_a_seal_reads_as_the_bucket_owners_private_object() -> None:
    seal = MetadataSeal(KEY, required=True)
    f = _read(BOBS, seal)
    assert (f.mode, f.uid, f.gid) == (0o600, 1000, 1000)
    assert f.mtime_ns == 1_500_000_000 * 10**9  # times are taken as written
    d: Inode[object] = Inode(3, 1, "d", "b", "d", Kind.DIR)
    apply_info(d, ObjectInfo("d/", 0, "e", 1.0, BOBS), OWNERS, seal)  # type: ignore[arg-type]
    assert (d.mode, d.uid) == (0o700, 1000)
    assert seal.ignored == 2  # once per object
    _read(BOBS, seal)
    assert seal.ignored == 2


def test_a_seal_is_bound_to_its_bucket_and_key() -> None:
    seal = MetadataSeal(KEY, required=True)
    signed = seal.sign("b", "d/f", BOBS)
    assert _read(signed, seal, "d/f").uid == 1001
    assert _read(signed, seal, "d/g").uid == 1000  # copied to another key
    assert not seal.valid("other", "d/f", signed)  # or another bucket
    assert not MetadataSeal(b"x" * 32, required=True).valid("b", "d/f", signed)  # other keys


@given(
    field=st.sampled_from(COVERED),
    value=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
)
def test_changing_any_covered_field_breaks_the_seal(field: str, value: str) -> None:
    seal = MetadataSeal(KEY, required=True)
    signed = seal.sign("b", "d/f", metadata_for(_fedfs_file()))
    tampered = {**signed, field: value}
    assert seal.valid("b", "d/f", tampered) == (signed.get(field) == value)
    if field in signed:
        gone = {k: v for k, v in signed.items() if k != field}
        assert not seal.valid("b", "d/f", gone)


def test_a_special_file_type_needs_the_seal_too() -> None:
    seal = MetadataSeal(KEY, required=True)
    dev = {"mode": str(stat.S_IFBLK | 0o666), "rdev": str(8 << 8)}
    assert _read(seal.sign("b", "d/f", dev), seal).kind is Kind.BLOCK_DEVICE
    forged = _read(dev, seal)
    assert (forged.kind, forged.rdev, forged.mode) == (Kind.FILE, 0, 0o600)


def test_without_object_acl_metadata_is_taken_as_written_and_nothing_is_signed() -> None:
    seal = MetadataSeal(KEY, required=False)
    assert not seal.signing
    assert seal.sign("b", "d/f", BOBS) == BOBS
    f = _read(BOBS, seal)
    assert (f.mode, f.uid, f.gid) == (0o666, 1001, 1001)
    assert _read({}, seal).mode == 0o664
    assert seal.ignored == 0


def test_metadata_without_ownership_fields_is_not_signed() -> None:
    seal = MetadataSeal(KEY, required=True)
    assert seal.sign("b", ".fedfs-index/x", {}) == {}


def test_without_a_secret_key_nothing_is_believed() -> None:
    seal = MetadataSeal(None, required=True)
    assert not seal.signing
    assert _read(BOBS, seal).uid == 1000


def test_an_index_entry_does_not_bring_in_unsealed_metadata() -> None:
    """A node without [object_acl] may have recorded bob's metadata in the shared index."""
    seal = MetadataSeal(KEY, required=True)
    listed = ObjectInfo("d/f", 0, "e", 1_700_000_000.4)
    f: Inode[object] = Inode(2, 1, "f", "b", "d/f", Kind.FILE)
    apply_entry(
        f, IndexEntry("e", 1_700_000_000_400, 0, 1_700_000_000.0, BOBS), listed, OWNERS, seal
    )  # type: ignore[arg-type]
    assert (f.mode, f.uid) == (0o600, 1000)
    signed = seal.sign("b", "d/f", BOBS)
    apply_entry(
        f, IndexEntry("e", 1_700_000_000_400, 0, 1_700_000_000.0, signed), listed, OWNERS, seal
    )  # type: ignore[arg-type]
    assert (f.mode, f.uid) == (0o666, 1001)


def test_the_objects_reported_unsealed_are_remembered_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A huge unsealed bucket does not grow the daemon's memory without end: past the
    bound, objects are still read as the owner's private ones, the count says "at least"
    and one line says they are no longer logged one by one."""
    monkeypatch.setattr(seal_mod, "REMEMBERED", 3)
    seal = MetadataSeal(KEY, required=True)
    for i in range(6):
        f = _read(BOBS, seal, key=f"d/f{i}")
        assert (f.mode, f.uid) == (0o600, 1000)  # unsealed all the same
    assert seal.ignored == 3 and seal.more == {"b"}
    assert len(seal._reported) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert sum("ignoring its ownership metadata" in m for m in lines) == 3
    assert sum("no longer logged one by one" in m for m in lines) == 1
    assert unsealed_lines([{"bucket": "b", "count": 3, "at_least": True, "examples": []}], "c")[
        0
    ].startswith("unsealed   b: at least 3 object(s)")
