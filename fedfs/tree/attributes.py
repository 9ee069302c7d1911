"""Attributes: chmod, chown, utimes, truncate and user xattrs, and storing them on the object.

Owns what a change of attributes does: a dirty file's new attributes ride
with its next upload; a clean file's are written by a CopyObject onto
itself, a directory's by rewriting its marker. Only `user.*` xattrs are
stored (in the object's metadata, within S3's 2 KiB); bucket roots take
their owner and mode from the config and refuse changes.

Concurrency: runs in the trio thread. State may change at every `await`, so
each operation re-reads what it needs after awaiting and never holds a
reference to a dict entry across an await it depends on; a failed xattr
write puts the old set back.

May call: revalidation, write-back (truncate, carry_attributes), meta, and
the store through worker threads.
"""

from __future__ import annotations

import time

from fedfs.data.cache import Staging
from fedfs.data.writeback import WriteBack
from fedfs.errors import (
    AlreadyExists,
    IsDirectory,
    NoAttribute,
    NoSpace,
    NotPermitted,
    NotSupported,
)
from fedfs.meta.inode import ROOT_INO, Inode, honoured_mode
from fedfs.meta.object_meta import MAX_USER_METADATA, metadata_for
from fedfs.meta.seal import SEAL_SIZE
from fedfs.store.s3 import DIR_CONTENT_TYPE, ObjectStore
from fedfs.store.threads import WorkerThreads
from fedfs.tree.revalidate import Revalidation


class Attributes:
    """Changes to the POSIX attributes and xattrs of inodes, for one mount."""

    def __init__(
        self,
        store: ObjectStore,
        s3: WorkerThreads,
        revalidation: Revalidation,
        writeback: WriteBack,
    ) -> None:
        self.store = store
        self.s3 = s3
        self.revalidation = revalidation
        self.writeback = writeback

    async def set_attrs(
        self,
        inode: Inode[Staging],
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        size: int | None = None,
        mask: int | bool | None = False,
        atime_ns: int | None = None,
        mask_by: str | None = None,
    ) -> None:
        """Change attributes and store them; mask False leaves the explicit mask alone.

        mask_by says what set a new mask ("chmod", "setfacl"), for `fedfs grants`.

        An mtime set here (utimensat, futimens on an open file) is final: writes
        before it no longer move the mtime at close.
        """
        if inode.ino == ROOT_INO or inode.is_bucket_root:
            if (size, mode, uid, gid) == (None, None, None, None) and mask is False:
                return  # touching a bucket root changes nothing that is stored
            raise NotPermitted(
                "a bucket root's owner and mode come from the config ([[buckets]] owner)"
            )
        if size is not None:
            if inode.is_dir:
                raise IsDirectory(f"{inode.path} is a directory")
            await self.writeback.truncate(inode, size)
        if mode is not None:
            inode.mode, inode.mode_default = honoured_mode(mode, inode.is_dir), False
        if mask is not False:
            inode.explicit_mask = (
                mask if isinstance(mask, int) and not isinstance(mask, bool) else None
            )
            inode.mask_by = mask_by if inode.explicit_mask is not None else None
        if uid is not None:
            inode.uid = uid
        if gid is not None:
            inode.gid = gid
        if mtime_ns is not None:
            inode.mtime_ns = mtime_ns
            inode.mtime_pending, inode.written_mtime_ns = False, 0
        if atime_ns is not None:
            inode.atime_ns = atime_ns
        inode.ctime_ns = time.time_ns()
        if size is not None and mtime_ns is None:
            inode.mtime_ns = inode.ctime_ns
        await self._store_metadata(inode)

    async def _store_metadata(self, inode: Inode[Staging]) -> None:
        """Persist the POSIX attributes: in the next upload if dirty, else by CopyObject/PUT."""
        meta = metadata_for(inode)
        room = MAX_USER_METADATA - (SEAL_SIZE if self.store.seal is not None else 0)
        if sum(len(k) + len(v) for k, v in meta.items()) > room:
            raise NoSpace(f"{inode.path}: attributes exceed the 2 KiB of S3 user metadata")
        if inode.dirty:
            self.writeback.carry_attributes(inode)
            return
        if inode.is_dir:
            info = await self.s3(
                self.store.put_bytes, inode.bucket, inode.key + "/", b"", meta, DIR_CONTENT_TYPE
            )
            inode.has_marker = True
        else:
            info = await self.s3(
                self.store.copy, inode.bucket, inode.key, inode.key, inode.size, meta, None
            )
        inode.etag, inode.last_modified = info.etag, info.last_modified
        inode.checked = inode.changed = time.monotonic()

    # -- xattrs ------------------------------------------------------------

    async def set_xattr(
        self,
        inode: Inode[Staging],
        name: str,
        value: bytes,
        replace_only: bool,
        create_only: bool,
    ) -> None:
        self._user_xattr(name)
        await self.revalidation.revalidate(inode)
        if create_only and name in inode.xattrs:
            raise AlreadyExists(f"attribute {name} exists")
        if replace_only and name not in inode.xattrs:
            raise NoAttribute(f"attribute {name} does not exist")
        old = dict(inode.xattrs)
        inode.xattrs[name] = value
        try:
            await self.set_attrs(inode)
        except BaseException:
            inode.xattrs = old
            raise

    async def remove_xattr(self, inode: Inode[Staging], name: str) -> None:
        self._user_xattr(name)
        await self.revalidation.revalidate(inode)
        if name not in inode.xattrs:
            raise NoAttribute(f"attribute {name} does not exist")
        del inode.xattrs[name]
        await self.set_attrs(inode)

    async def get_xattr(self, inode: Inode[Staging], name: str) -> bytes:
        await self.revalidation.revalidate(inode)
        if name not in inode.xattrs:
            raise NoAttribute(f"attribute {name} does not exist")
        return inode.xattrs[name]

    def _user_xattr(self, name: str) -> None:
        if not name.startswith("user.") or len(name) <= 5:
            raise NotSupported(f"only user.* extended attributes are stored, not {name!r}")
