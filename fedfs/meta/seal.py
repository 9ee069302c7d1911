"""The seal on the POSIX metadata fedfs writes: an HMAC that says "fedfs wrote this here".

With `[object_acl]` on, a collaborator whose own S3 key may write under a grant
could otherwise PUT `x-amz-meta-uid`/`-mode` and so choose owners and modes in the
mount. Every object fedfs writes then carries `x-amz-meta-fedfs-sig`: HMAC-SHA256,
keyed from the daemon's S3 secret key (`ObjectStore.derived_key`, as the shared
metadata index), over the bucket, the object key and the ownership fields (mode,
uid, gid, rdev, mask, mask-by, xattrs; not the times). Fields without a valid seal
are read as absent, and objects without them show as the store treats them: the
bucket owner's, 0600 files and 0700 directories. Without `[object_acl]` nothing is
signed nor checked and objects show as written (s3fs interop), as before.

Pure: no I/O, no awaits. `sign` and `valid` are called from worker threads (the
store signs every write, `ObjectStore.seal`); `believed` from the trio thread.
Its counters are plain ints, good enough for metrics. Imports only meta/inode.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

from fedfs.meta.inode import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE

log = logging.getLogger(__name__)

KEY_PURPOSE = "fedfs object metadata seal v1"
SEAL_META_KEY = "fedfs-sig"
_VERSION = "v1."
# The fields that decide who may do what with the object: a forged value would give
# ownership, modes, the ACL mask, xattrs or a device; times are left out (harmless).
COVERED = ("mode", "uid", "gid", "rdev", "fedfs-mask", "fedfs-mask-by", "xattr")
SEAL_SIZE = len(SEAL_META_KEY) + len(_VERSION) + 43  # what the seal adds to user metadata

SEALED_FILE_MODE, SEALED_DIR_MODE = 0o600, 0o700  # no (valid) metadata, with a seal required
OPEN_FILE_MODE, OPEN_DIR_MODE = DEFAULT_FILE_MODE, DEFAULT_DIR_MODE  # without (s3fs's)


def open_mode(is_dir: bool) -> int:
    """What an object without mode metadata shows without [object_acl]."""
    return OPEN_DIR_MODE if is_dir else OPEN_FILE_MODE


def canonical(bucket: str, key: str, metadata: dict[str, str]) -> bytes:
    """The bytes the seal covers: one unambiguous JSON array, absent fields as null."""
    fields = [[name, metadata.get(name)] for name in COVERED]
    return json.dumps(["fedfs-meta-v1", bucket, key, fields], separators=(",", ":")).encode()


EXAMPLES = 5  # keys kept per bucket to name in `fedfs status` and `fedfs doctor`
# Objects remembered as logged (about 100 bytes each). Past that, further unsealed
# objects are neither logged nor counted one by one: the count says "at least".
REMEMBERED = 100_000


class MetadataSeal:
    """Signs the metadata fedfs writes and says which metadata a mount may believe.

    required: `[object_acl]` is enabled (every bucket of the mount). key: from the
    store's secret key; None (no secret key) signs nothing, so nothing is believed.
    """

    def __init__(self, key: bytes | None, required: bool) -> None:
        self.key = key if required else None
        self.required = required
        # objects whose ownership metadata was read as absent (once each), per bucket
        self.by_bucket: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}  # a few of their keys, per bucket
        self._reported: set[tuple[str, str]] = set()
        self.more: set[str] = set()  # buckets with unsealed objects past REMEMBERED

    @property
    def ignored(self) -> int:
        """Objects whose ownership metadata was read as absent (once each)."""
        return sum(self.by_bucket.values())

    @property
    def signing(self) -> bool:
        return self.key is not None

    def default_mode(self, is_dir: bool) -> int:
        """What an object without (believed) mode metadata shows."""
        if self.required:
            return SEALED_DIR_MODE if is_dir else SEALED_FILE_MODE
        return OPEN_DIR_MODE if is_dir else OPEN_FILE_MODE

    def _mac(self, bucket: str, key: str, metadata: dict[str, str]) -> str:
        assert self.key is not None
        digest = hmac.new(self.key, canonical(bucket, key, metadata), hashlib.sha256).digest()
        return _VERSION + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, bucket: str, key: str, metadata: dict[str, str]) -> dict[str, str]:
        """metadata with the seal for (bucket, key); unchanged when not signing or when
        it holds none of the covered fields (the index, the policy log)."""
        if self.key is None or not any(name in metadata for name in COVERED):
            return metadata
        plain = {k: v for k, v in metadata.items() if k != SEAL_META_KEY}
        return {**plain, SEAL_META_KEY: self._mac(bucket, key, plain)}

    def valid(self, bucket: str, key: str, metadata: dict[str, str]) -> bool:
        """Whether metadata carries this mount's seal for exactly (bucket, key)."""
        given = metadata.get(SEAL_META_KEY)
        if self.key is None or given is None:
            return False
        return hmac.compare_digest(given, self._mac(bucket, key, metadata))

    def believed(self, bucket: str, key: str, metadata: dict[str, str]) -> dict[str, str]:
        """The metadata a mount takes as the object's: all of it without a seal required;
        with one, the covered fields only when the seal is valid (else logged once)."""
        if not self.required or self.valid(bucket, key, metadata):
            return metadata
        dropped = [name for name in COVERED if name in metadata]
        if dropped and (bucket, key) not in self._reported and len(self._reported) >= REMEMBERED:
            if bucket not in self.more:
                self.more.add(bucket)
                log.warning(
                    "s3://%s: more objects whose ownership metadata is ignored than this "
                    "daemon keeps track of (%d); they are no longer logged one by one. "
                    "`fedfs fsck --sign %s --plan FILE` lists them all",
                    bucket,
                    REMEMBERED,
                    bucket,
                )
        elif dropped and (bucket, key) not in self._reported:
            self._reported.add((bucket, key))
            self.by_bucket[bucket] = self.by_bucket.get(bucket, 0) + 1
            some = self.examples.setdefault(bucket, [])
            if len(some) < EXAMPLES:
                some.append(key)
            log.warning(
                "s3://%s/%s: ignoring its ownership metadata (%s): %s, so it shows as "
                "the bucket owner's with no group or other access. fedfs signs what it "
                "writes; `fedfs fsck --sign` adopts objects written before (docs/OBJECT_ACL.md)",
                bucket,
                key.encode("unicode_escape").decode("ascii"),
                ", ".join(dropped),
                "the seal is not valid for this key"
                if SEAL_META_KEY in metadata
                else "it carries no fedfs seal",
            )
        return {k: v for k, v in metadata.items() if k not in COVERED and k != SEAL_META_KEY}
