"""POSIX attributes in object user metadata: read from a HEAD, written with an upload.

Owns the encoding, which uses s3fs's names (`mode`, `uid`, `gid`, `mtime`)
so buckets written by either tool look right in the other, plus fedfs's own
`mtime-ns`, explicit ACL mask and user xattrs. A FIFO, socket or device node
is an empty object whose `mode` carries its file type, as s3fs writes them;
s3fs keeps no device number, so fedfs adds `rdev` (decimal st_rdev). Objects without metadata get
their bucket owner's uid/gid and the default modes. With `[object_acl]` the
ownership fields count only under fedfs's seal (seal.py): `apply_info` reads what
`MetadataSeal.believed` leaves, and the defaults are then 0600/0700.

Pure functions over an inode and a store answer: no I/O, no awaits; called
from the trio thread. May use meta/inode.py and the store's `ObjectInfo`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, unquote

from fedfs.meta.inode import (
    Inode,
    Kind,
    honoured_mode,
    kind_of_mode,
)
from fedfs.meta.seal import MetadataSeal
from fedfs.store.s3 import ObjectInfo

log = logging.getLogger(__name__)

# S3 allows 2 KiB of user metadata; fedfs's own keys take < 100 bytes of it.
MAX_USER_METADATA = 2048
XATTR_META_KEY = "xattr"
MASK_META_KEY = "fedfs-mask"
MASK_BY_META_KEY = "fedfs-mask-by"  # what set the mask, for `fedfs grants`
MASK_SETTERS = ("chmod", "setfacl")


class Owner(Protocol):
    """Who owns a bucket's objects that carry no metadata (from [[buckets]] owner)."""

    uid: int
    gid: int


def metadata_for(inode: Inode[Any]) -> dict[str, str]:
    """The object user metadata (s3fs names) that carries an inode's POSIX attributes."""
    meta = {
        "mode": str(inode.st_mode),
        "uid": str(inode.uid),
        "gid": str(inode.gid),
        "mtime": str(inode.mtime_ns // 1_000_000_000),
        "mtime-ns": str(inode.mtime_ns),
    }
    if inode.rdev:
        meta["rdev"] = str(inode.rdev)
    if inode.atime_ns is not None:
        meta["atime"] = s3fs_time(inode.atime_ns)
    if inode.explicit_mask is not None:
        meta[MASK_META_KEY] = str(inode.explicit_mask)
        if inode.mask_by is not None:
            meta[MASK_BY_META_KEY] = inode.mask_by
    if inode.xattrs:
        enc = {k: base64.b64encode(v).decode() for k, v in sorted(inode.xattrs.items())}
        meta[XATTR_META_KEY] = quote(json.dumps(enc, separators=(",", ":")), safe="")
    return meta


def apply_info(
    inode: Inode[Any],
    info: ObjectInfo,
    owners: Mapping[str, Owner],
    seal: MetadataSeal,
    *,
    trusted: bool = False,
) -> None:
    """Take size/etag/metadata from a HEAD (or PUT/COPY) answer, or an index entry.

    The metadata counts as the seal believes it for `info.key` (the object it was read
    from); trusted: this node's own journal, taken as written. What the shared index
    may record is set by the caller that knows the answer is a HEAD sent after a
    listing (meta/dir_index.py `note_head`); any other answer clears it.
    """
    inode.object_meta = inode.indexed_ms = None
    inode.size = info.size
    inode.etag = info.etag
    inode.last_modified = info.last_modified
    inode.checked = time.monotonic()
    lm_ns = int(info.last_modified * 1e9)
    if info.metadata is None:
        return
    meta = info.metadata if trusted else seal.believed(inode.bucket, info.key, info.metadata)
    _report_out_of_range(inode, meta)
    mode = _int(meta, "mode")
    if mode is not None:
        if inode.kind is not Kind.DIR:
            inode.kind = kind_of_mode(mode)
        inode.mode, inode.mode_default = honoured_mode(mode, inode.is_dir), False
    else:
        if seal.required and inode.is_special:
            inode.kind = Kind.FILE  # its type was in a mode no longer believed
        inode.mode, inode.mode_default = seal.default_mode(inode.is_dir), True
    uid, gid = _int(meta, "uid"), _int(meta, "gid")
    owner = owners[inode.bucket]
    inode.uid = uid if uid is not None else owner.uid
    inode.gid = gid if gid is not None else owner.gid
    mtime, mtime_ns = _time_ns(meta, "mtime"), _int(meta, "mtime-ns")
    if mtime_ns is not None and mtime is not None and mtime_ns // 10**9 == mtime // 10**9:
        inode.mtime_ns = mtime_ns
    else:
        inode.mtime_ns = mtime if mtime is not None else lm_ns
    inode.atime_ns = _time_ns(meta, "atime")
    inode.rdev = (_int(meta, "rdev") or 0) if inode.is_special else 0
    inode.ctime_ns = lm_ns
    mask = _int(meta, MASK_META_KEY)
    inode.explicit_mask = mask if mask is not None and 0 <= mask <= 7 else None
    by = meta.get(MASK_BY_META_KEY)
    inode.mask_by = by if inode.explicit_mask is not None and by in MASK_SETTERS else None
    inode.xattrs = {}
    if XATTR_META_KEY in meta:
        try:
            raw = json.loads(unquote(meta[XATTR_META_KEY]))
            xattrs = {str(k): base64.b64decode(v) for k, v in raw.items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("%s: ignoring unreadable xattr metadata", inode.path)
        else:
            # Only user.* names are kept as written (docs/SEMANTICS.md); ACLs come from
            # policy and security.*/trusted.* are not kept, so names another tool put in
            # the metadata are neither listed nor served.
            inode.xattrs = {k: v for k, v in xattrs.items() if k.startswith("user.")}
            if len(inode.xattrs) < len(xattrs):
                log.info(
                    "%s: ignoring xattrs other than user.* in the object's metadata",
                    inode.path.encode("unicode_escape").decode("ascii"),
                )
    inode.meta_known = True


# What the kernel's stat can hold: a value outside these (written by another tool, or by
# someone with S3 keys) is ignored as if absent, so one object cannot break its directory.
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
_RANGES = {
    "mode": (0, 0o177777),
    "uid": (0, 2**32 - 2),  # 2**32 - 1 is (uid_t)-1, "no change" to chown
    "gid": (0, 2**32 - 2),
    "rdev": (0, 2**32 - 1),  # FUSE's attr carries a 32-bit device number
}
_reported: set[tuple[str, str]] = set()


def _report_out_of_range(inode: Inode[Any], meta: dict[str, str]) -> None:
    """Log once per object the integer fields that are present but ignored as unusable."""
    bad = [k for k in _RANGES if k in meta and _int(meta, k) is None]
    bad += [k for k in ("mtime", "atime") if k in meta and _time_ns(meta, k) is None]
    if bad and (inode.bucket, inode.key) not in _reported:
        _reported.add((inode.bucket, inode.key))
        log.warning(
            "%s: ignoring unusable metadata %s (out of range or not a number); "
            "the defaults apply instead",
            inode.path,
            ", ".join(f"{k}={meta[k][:40]!r}" for k in bad),
        )


def s3fs_time(ns: int) -> str:
    """A time as s3fs writes it: seconds, with nine decimals when there are nanoseconds."""
    s, frac = divmod(ns, 10**9)
    return f"{s}.{frac:09d}" if frac else str(s)


def _time_ns(meta: dict[str, str], key: str) -> int | None:
    """A time in s3fs's form ("1500000000" or "1500000000.123456789") in nanoseconds."""
    text = meta.get(key)
    if text is None:
        return None
    whole, _, frac = text.strip().partition(".")
    try:
        ns = int(whole) * 10**9 + (int(frac[:9].ljust(9, "0")) if frac else 0)
    except ValueError:
        return None
    return ns if _NS_MIN <= ns <= _NS_MAX else None


def _int(meta: dict[str, str], key: str) -> int | None:
    """An integer field, or None when absent, unreadable or outside what the kernel can take."""
    try:
        value = int(meta[key])  # exact: float() would round a nanosecond mtime
    except KeyError:
        return None
    except ValueError:
        try:
            value = int(float(meta[key]))  # "1500000000.5" as other tools may write it
        except (ValueError, OverflowError):
            return None
    lo, hi = _RANGES.get(key, (_NS_MIN, _NS_MAX))
    return value if lo <= value <= hi else None
