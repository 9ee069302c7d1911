"""The shared metadata index: the bytes of one directory's index object.

A directory's index records, for each file a listing showed, what a HEAD of
that object returned (its user metadata) next to the ETag, size and
LastModified the listing gave for it. A node that lists the directory later
trusts an entry only where the listing shows the same ETag, size and
LastModified (to the millisecond, as listings give it); anything else costs a
HEAD. So a stale or missing entry costs a request, never a wrong answer.

Who can write the object: anyone with S3 write access to the bucket, so its
contents are only believed under a MAC keyed by a secret derived from the
daemon's own S3 secret key (HMAC-SHA256). Whoever holds that key can already
write any metadata onto the objects themselves; nobody else can make an index
that nodes accept. The MAC covers the bucket and prefix too, so an index copied
to another directory's key is refused. An object that fails any check is
rejected as a whole (IndexRejected, with the reason for the log).

Layout: the line `fedfs-meta-index 1`, the MAC (hex) on the next line, then
gzip-compressed JSON {"bucket", "prefix", "entries": {name: [etag, listed
LastModified in ms, size, HEAD's LastModified, user metadata]}}. Bounds: at
most MAX_ENTRIES names and MAX_JSON bytes of JSON per directory (the rest of a
larger directory costs HEADs), MAX_OBJECT bytes read.

Pure functions, no I/O: called from the trio thread (or a worker thread for
large ones). Imports nothing from fedfs.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"fedfs-meta-index 1\n"
MAX_ENTRIES = 100_000
MAX_JSON = 32 * 1024**2  # uncompressed
MAX_OBJECT = 16 * 1024**2  # what a reader fetches at most
# Keys of index objects: one per directory, named by a hash of its prefix so every
# prefix (up to S3's 1,024 bytes) has a key of fixed length.
INDEX_PREFIX = ".fedfs-index/"
INDEX_DIR_NAME = INDEX_PREFIX.rstrip("/")


class IndexRejected(ValueError):
    """An index object that is not believed; the message says why."""


@dataclass(frozen=True)
class IndexEntry:
    etag: str
    listed_ms: int  # LastModified as the listing gave it, in milliseconds
    size: int
    head_last_modified: float  # LastModified as the HEAD gave it (whole seconds)
    metadata: dict[str, str]  # the object's user metadata, as the HEAD returned it


def index_key(prefix: str) -> str:
    """The key of the index object for the directory whose keys start with prefix."""
    return INDEX_PREFIX + hashlib.sha256(prefix.encode("utf-8")).hexdigest()


def listed_ms(last_modified: float) -> int:
    """A listing's LastModified (seconds, with milliseconds on Ceph) as whole milliseconds."""
    return round(last_modified * 1000)


def encode(bucket: str, prefix: str, entries: dict[str, IndexEntry], key: bytes) -> bytes:
    """The index object for these entries (those past the bounds left out, in name order)."""
    rows = {
        name: [e.etag, e.listed_ms, e.size, e.head_last_modified, e.metadata]
        for name, e in sorted(entries.items())[:MAX_ENTRIES]
    }
    raw = json.dumps({"bucket": bucket, "prefix": prefix, "entries": rows}, separators=(",", ":"))
    if len(raw) > MAX_JSON:  # rare: entries with large metadata; keep those that fit
        out: dict[str, list[Any]] = {}
        budget = MAX_JSON - 200 - len(bucket) - len(prefix)
        for name, row in rows.items():
            budget -= len(json.dumps([name, row], separators=(",", ":"))) + 1
            if budget < 0:
                break
            out[name] = row
        doc = {"bucket": bucket, "prefix": prefix, "entries": out}
        raw = json.dumps(doc, separators=(",", ":"))
    payload = gzip.compress(raw.encode(), compresslevel=6)
    mac = hmac.new(key, payload, hashlib.sha256).hexdigest().encode()
    return MAGIC + mac + b"\n" + payload


def decode(body: bytes, bucket: str, prefix: str, key: bytes) -> dict[str, IndexEntry]:
    """The entries of an index object; IndexRejected unless it is whole, ours and this one's."""
    if not body.startswith(MAGIC):
        raise IndexRejected("not a fedfs metadata index (unknown format)")
    head, sep, payload = body[len(MAGIC) :].partition(b"\n")
    if not sep:
        raise IndexRejected("truncated")
    want = hmac.new(key, payload, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(head, want):
        raise IndexRejected(
            "its signature does not match (written by someone without this mount's S3 "
            "secret key, changed since, or written under other keys)"
        )
    try:
        inflate = zlib.decompressobj(wbits=31)
        raw = inflate.decompress(payload, MAX_JSON)
        if inflate.unconsumed_tail:
            raise IndexRejected(f"larger than {MAX_JSON} bytes uncompressed")
        doc = json.loads(raw)
    except (zlib.error, ValueError) as e:
        raise IndexRejected(f"unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("bucket") != bucket or doc.get("prefix") != prefix:
        raise IndexRejected("it describes another directory")
    rows = doc.get("entries")
    if not isinstance(rows, dict) or len(rows) > MAX_ENTRIES:
        raise IndexRejected("malformed entries")
    entries: dict[str, IndexEntry] = {}
    for name, row in rows.items():
        entry = _entry(row)
        if not isinstance(name, str) or entry is None:
            raise IndexRejected(f"malformed entry {str(name)[:80]!r}")
        entries[name] = entry
    return entries


def _entry(row: object) -> IndexEntry | None:
    if not isinstance(row, list) or len(row) != 5:
        return None
    etag, ms, size, head_lm, meta = row
    if not (
        isinstance(etag, str)
        and _is_int(ms)
        and _is_int(size)
        and size >= 0
        and isinstance(head_lm, int | float)
        and not isinstance(head_lm, bool)
        and isinstance(meta, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        return None
    return IndexEntry(etag, ms, size, float(head_lm), meta)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
