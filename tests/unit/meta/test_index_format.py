"""The shared metadata index's bytes: what is believed, and what a node may record in it."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedfs.meta.dir_index import apply_entry, entry_of, note_head, usable
from fedfs.meta.index_format import (
    MAGIC,
    IndexEntry,
    IndexRejected,
    decode,
    encode,
    index_key,
    listed_ms,
)
from fedfs.meta.inode import Inode, Kind
from fedfs.meta.object_meta import apply_info
from fedfs.meta.seal import MetadataSeal
from fedfs.store.s3 import ObjectInfo

KEY = b"k" * 32
ENTRY = IndexEntry("e1", 1_700_000_000_400, 10, 1_700_000_000.0, {"mode": "33188", "uid": "7"})


@dataclass
class _Owner:
    uid: int = 1000
    gid: int = 1000


OWNERS = {"b": _Owner()}
OPEN = MetadataSeal(None, required=False)


def test_an_index_reads_back_as_written() -> None:
    body = encode("b", "d/", {"f": ENTRY, "g": ENTRY}, KEY)
    assert decode(body, "b", "d/", KEY) == {"f": ENTRY, "g": ENTRY}
    assert index_key("d/") != index_key("d/e/") and index_key("d/").startswith(".fedfs-index/")


def test_an_index_too_large_keeps_the_first_entries_that_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the bounds the first names in order are kept and the rest left out (their
    objects cost a HEAD), so the index always reads back."""
    from fedfs.meta import index_format

    entries = {f"f{i:03d}": ENTRY for i in range(100)}
    whole = decode(encode("b", "d/", entries, KEY), "b", "d/", KEY)
    assert whole == entries
    monkeypatch.setattr(index_format, "MAX_JSON", 2000)
    kept = decode(encode("b", "d/", entries, KEY), "b", "d/", KEY)
    assert 0 < len(kept) < 100 and kept == {n: ENTRY for n in sorted(entries)[: len(kept)]}
    monkeypatch.setattr(index_format, "MAX_ENTRIES", 7)
    assert list(decode(encode("b", "d/", entries, KEY), "b", "d/", KEY)) == [
        f"f{i:03d}" for i in range(7)
    ]


def test_an_index_under_another_key_another_directory_or_changed_is_refused() -> None:
    body = encode("b", "d/", {"f": ENTRY}, KEY)
    with pytest.raises(IndexRejected, match="signature"):
        decode(body, "b", "d/", b"x" * 32)  # written under other S3 keys
    with pytest.raises(IndexRejected, match="another directory"):
        decode(body, "b", "e/", KEY)  # copied to another directory's index
    with pytest.raises(IndexRejected, match="another directory"):
        decode(body, "c", "d/", KEY)
    # Someone with write access to the bucket but not the daemon's key makes mode 4777 theirs.
    doc = {"bucket": "b", "prefix": "d/", "entries": {"f": ["e1", 1, 10, 1.0, {"mode": "36351"}]}}
    forged = gzip.compress(json.dumps(doc).encode())
    mac = body[len(MAGIC) :].split(b"\n", 1)[0]
    with pytest.raises(IndexRejected, match="signature"):
        decode(MAGIC + mac + b"\n" + forged, "b", "d/", KEY)


@given(st.binary(max_size=400))
def test_any_bytes_are_either_a_valid_index_or_refused(junk: bytes) -> None:
    for body in (junk, MAGIC + junk):
        try:
            entries = decode(body, "b", "d/", KEY)
        except IndexRejected:
            continue
        assert all(isinstance(e, IndexEntry) for e in entries.values())


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=5))
def test_a_signed_index_with_malformed_rows_is_refused_not_half_read(meta: dict[str, str]) -> None:
    """Even under the right key, a row of the wrong shape refuses the whole index."""
    for row in (["e", "1", 1, 1.0, meta], ["e", 1, -1, 1.0, meta], ["e", 1, 1, 1.0, [1]], "x"):
        doc = {"bucket": "b", "prefix": "d/", "entries": {"f": row}}
        payload = gzip.compress(json.dumps(doc).encode())
        mac = hmac.new(KEY, payload, hashlib.sha256).hexdigest().encode()
        with pytest.raises(IndexRejected, match="malformed"):
            decode(MAGIC + mac + b"\n" + payload, "b", "d/", KEY)


def test_an_entry_is_used_only_for_the_version_the_listing_shows() -> None:
    listed = ObjectInfo("d/f", 10, "e1", 1_700_000_000.4)
    assert usable(ENTRY, listed)
    assert not usable(ENTRY, ObjectInfo("d/f", 10, "e2", 1_700_000_000.4))  # new content
    assert not usable(ENTRY, ObjectInfo("d/f", 10, "e1", 1_700_000_000.9))  # copied in place
    assert not usable(ENTRY, ObjectInfo("d/f", 11, "e1", 1_700_000_000.4))
    assert not usable(None, listed)
    f: Inode[object] = Inode(2, 1, "f", "b", "d/f", Kind.FILE)
    apply_entry(f, ENTRY, listed, OWNERS, OPEN)  # type: ignore[arg-type]
    head: Inode[object] = Inode(3, 1, "f", "b", "d/f", Kind.FILE)
    apply_info(head, ObjectInfo("d/f", 10, "e1", 1_700_000_000.0, ENTRY.metadata), OWNERS, OPEN)  # type: ignore[arg-type]
    for field in ("mode", "uid", "gid", "mtime_ns", "ctime_ns", "size", "kind", "meta_known"):
        assert getattr(f, field) == getattr(head, field), field  # as the HEAD it records


def test_only_a_head_sent_after_the_listing_of_that_version_is_recorded() -> None:
    listed = ObjectInfo("d/f", 10, "e1", 1_700_000_000.4)
    ms = listed_ms(listed.last_modified)
    f: Inode[object] = Inode(2, 1, "f", "b", "d/f", Kind.FILE, etag="e1", listed_ms=ms)
    head = ObjectInfo("d/f", 10, "e1", 1_700_000_000.0, {"mode": "33188"})
    apply_info(f, head, OWNERS, OPEN)  # type: ignore[arg-type]
    note_head(f, head, ("e1", ms))
    assert entry_of(f, listed) == IndexEntry("e1", ms, 10, 1_700_000_000.0, {"mode": "33188"})
    # A later listing shows a copy in place (same ETag, same second, other milliseconds).
    assert entry_of(f, ObjectInfo("d/f", 10, "e1", 1_700_000_000.9)) is None
    # A HEAD that found another version than the listing showed is not recorded.
    g: Inode[object] = Inode(3, 1, "g", "b", "d/g", Kind.FILE)
    newer = ObjectInfo("d/g", 10, "e2", 1_700_000_001.0, {"mode": "33188"})
    apply_info(g, newer, OWNERS, OPEN)  # type: ignore[arg-type]
    note_head(g, newer, ("e1", ms))
    assert entry_of(g, listed) is None
    # Nor what an upload's answer said, nor a file with changes not uploaded yet.
    apply_info(f, head, OWNERS, OPEN)  # type: ignore[arg-type]
    assert entry_of(f, listed) is None
