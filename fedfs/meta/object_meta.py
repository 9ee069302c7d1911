"""POSIX attributes in object user metadata: read from a HEAD, written with an upload.

Owns the encoding, which uses s3fs's names (`mode`, `uid`, `gid`, `mtime`)
so buckets written by either tool look right in the other, plus fedfs's own
`mtime-ns`, explicit ACL mask and user xattrs. Objects without metadata get
their bucket owner's uid/gid and the default modes.

Pure functions over an inode and a store answer: no I/O, no awaits; called
from the trio thread. May use meta/inode.py and the store's `ObjectInfo`.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, unquote

from fedfs.meta.inode import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, Inode, Kind, honoured_mode
from fedfs.store.s3 import ObjectInfo

log = logging.getLogger(__name__)

# S3 allows 2 KiB of user metadata; fedfs's own keys take < 100 bytes of it.
MAX_USER_METADATA = 2048
XATTR_META_KEY = "xattr"
MASK_META_KEY = "fedfs-mask"


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
    if inode.explicit_mask is not None:
        meta[MASK_META_KEY] = str(inode.explicit_mask)
    if inode.xattrs:
        enc = {k: base64.b64encode(v).decode() for k, v in sorted(inode.xattrs.items())}
        meta[XATTR_META_KEY] = quote(json.dumps(enc, separators=(",", ":")), safe="")
    return meta


def apply_info(inode: Inode[Any], info: ObjectInfo, owners: Mapping[str, Owner]) -> None:
    """Take size/etag/metadata from a HEAD (or PUT/COPY) answer."""
    inode.size = info.size
    inode.etag = info.etag
    inode.last_modified = info.last_modified
    inode.checked = time.monotonic()
    lm_ns = int(info.last_modified * 1e9)
    if info.metadata is None:
        return
    meta = info.metadata
    mode = _int(meta, "mode")
    if mode is not None:
        if inode.kind is not Kind.DIR:
            inode.kind = Kind.LINK if stat.S_ISLNK(mode) else Kind.FILE
        inode.mode = honoured_mode(mode, inode.is_dir)
    else:
        inode.mode = DEFAULT_DIR_MODE if inode.is_dir else DEFAULT_FILE_MODE
    uid, gid = _int(meta, "uid"), _int(meta, "gid")
    owner = owners[inode.bucket]
    inode.uid = uid if uid is not None else owner.uid
    inode.gid = gid if gid is not None else owner.gid
    mtime_s, mtime_ns = _int(meta, "mtime"), _int(meta, "mtime-ns")
    if mtime_ns is not None and mtime_s is not None and mtime_ns // 1_000_000_000 == mtime_s:
        inode.mtime_ns = mtime_ns
    elif mtime_s is not None:
        inode.mtime_ns = mtime_s * 1_000_000_000
    else:
        inode.mtime_ns = lm_ns
    inode.ctime_ns = lm_ns
    mask = _int(meta, MASK_META_KEY)
    inode.explicit_mask = mask if mask is not None and 0 <= mask <= 7 else None
    inode.xattrs = {}
    if XATTR_META_KEY in meta:
        try:
            raw = json.loads(unquote(meta[XATTR_META_KEY]))
            inode.xattrs = {str(k): base64.b64decode(v) for k, v in raw.items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("%s: ignoring unreadable xattr metadata", inode.path)
    inode.meta_known = True


def _int(meta: dict[str, str], key: str) -> int | None:
    try:
        return int(meta[key])  # exact: float() would round a nanosecond mtime
    except KeyError:
        return None
    except ValueError:
        try:
            return int(float(meta[key]))  # "1500000000.5" as other tools may write it
        except ValueError:
            return None
