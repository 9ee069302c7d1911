"""The tree's changes: create, mkdir, symlink, unlink, rmdir, rename, directory moves.

Owns what each change does to the keys: a new file stays local until its
first upload, a directory is a `key/` marker, an implied directory gets a
marker before its last key goes (so it persists), a file rename is a copy
and a delete, and a directory rename copies every key under the prefix and
deletes each old key once its copy is there (journaled, so `finish_moves`
completes one that a stop interrupted). Also reads symlink targets.

Concurrency: runs in the trio thread. State may change at every `await`, so
each operation re-reads what it needs after awaiting and never holds a
reference to a dict entry across an await it depends on. A removed or
replaced file's upload in flight is waited for first (its key may be reused),
and uploads under a directory being moved wait for the move.

May call: the inode table, lookups, revalidation, write-back (staging,
commit, discard), the journal, names, meta, and the store through worker
threads (a directory move's copies on the store's own, `[store] max_copies`).
"""

from __future__ import annotations

import logging
import stat
import time

from fedfs.config import Config
from fedfs.data.cache import Staging
from fedfs.data.journal import Journal
from fedfs.data.writeback import WriteBack
from fedfs.errors import (
    AlreadyExists,
    CrossBucket,
    IsDirectory,
    NotDirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
)
from fedfs.meta.inode import ROOT_INO, SPECIAL_KINDS, Inode, Kind, honoured_mode, kind_of_mode
from fedfs.meta.object_meta import apply_info, metadata_for
from fedfs.store.s3 import DIR_CONTENT_TYPE, ObjectInfo, ObjectStore
from fedfs.store.threads import WorkerThreads
from fedfs.tree.inodes import Inodes
from fedfs.tree.lookup import Lookups
from fedfs.tree.names import SHADOW_NAME, BadName, check_key_length, join, new_name
from fedfs.tree.revalidate import Revalidation

log = logging.getLogger(__name__)


class Changes:
    """Every operation that adds, removes or moves a name, for one mount."""

    def __init__(
        self,
        cfg: Config,
        inodes: Inodes,
        store: ObjectStore,
        s3: WorkerThreads,
        lookups: Lookups,
        revalidation: Revalidation,
        writeback: WriteBack,
        journal: Journal,
    ) -> None:
        self.cfg = cfg
        self.inodes = inodes
        self.store = store
        self.s3 = s3
        self.lookups = lookups
        self.revalidation = revalidation
        self.writeback = writeback
        self.journal = journal

    # -- creating ----------------------------------------------------------

    def _writable_parent(self, parent: Inode[Staging]) -> None:
        if not parent.is_dir:
            raise NotDirectory(f"{parent.path} is not a directory")
        if parent.ino == ROOT_INO:
            raise NotPermitted(
                "the mount root lists the configured buckets; create inside a bucket"
            )

    async def _must_not_exist(
        self, parent: Inode[Staging], raw_name: bytes, is_dir: bool = False
    ) -> str:
        self._writable_parent(parent)
        name = new_name(raw_name)
        check_key_length(parent.bucket, join(parent.key, name), is_dir)
        if name == SHADOW_NAME and parent.shadows:
            raise AlreadyExists(f"{parent.path}/{name} exists")
        if self.lookups.known_absent(parent, name):
            # The kernel's LOOKUP for this create just asked S3; nothing was created here since
            # (creating here would have made an inode, found below).
            key = join(parent.key, name)
            found = (self.inodes.find(parent.bucket, key, d) for d in (False, True))
            if not any(i is not None and not i.gone for i in found):
                return name
        if await self.lookups.lookup(parent, raw_name) is not None:
            raise AlreadyExists(f"{parent.path}/{name} exists")
        return name

    def _init_new(
        self, inode: Inode[Staging], mode: int, uid: int, gid: int, parent: Inode[Staging]
    ) -> None:
        now = time.time_ns()
        inode.mode, inode.mode_default = honoured_mode(mode, inode.is_dir), False
        inode.uid = uid
        # A setgid directory passes its group on, as on every POSIX filesystem.
        inode.gid = parent.gid if parent.mode & stat.S_ISGID else gid
        if inode.is_dir and parent.mode & stat.S_ISGID:
            inode.mode |= stat.S_ISGID
        inode.mtime_ns = inode.ctime_ns = now
        inode.meta_known = True
        inode.xattrs = {}
        inode.target = None
        inode.atime_ns, inode.rdev = None, 0
        inode.gone = False
        inode.changed = time.monotonic()

    async def create(
        self, parent: Inode[Staging], raw_name: bytes, mode: int, uid: int, gid: int
    ) -> Inode[Staging]:
        """A new empty file, local until its first upload (on close or fsync)."""
        name = await self._must_not_exist(parent, raw_name)
        inode = self.inodes.child(parent, name, Kind.FILE)
        inode.kind = Kind.FILE
        self._init_new(inode, mode, uid, gid, parent)
        inode.size, inode.etag, inode.local = 0, None, True
        self.writeback.new_file(inode)
        inode.checked = time.monotonic()
        self.inodes.place(parent, name, inode)
        self._touch(parent)
        return inode

    async def mkdir(
        self, parent: Inode[Staging], raw_name: bytes, mode: int, uid: int, gid: int
    ) -> Inode[Staging]:
        name = await self._must_not_exist(parent, raw_name, is_dir=True)
        d = self.inodes.child(parent, name, Kind.DIR)
        self._init_new(d, mode, uid, gid, parent)
        info = await self.s3(
            self.store.put_bytes, d.bucket, d.key + "/", b"", metadata_for(d), DIR_CONTENT_TYPE
        )
        apply_info(d, info, self.inodes.owners, self.inodes.seal)
        d.has_marker, d.shadows = True, False
        d.children, d.listed = {}, time.monotonic()
        self.inodes.place(parent, name, d)
        self._touch(parent)
        return d

    async def symlink(
        self, parent: Inode[Staging], raw_name: bytes, target: bytes, uid: int, gid: int
    ) -> Inode[Staging]:
        name = await self._must_not_exist(parent, raw_name)
        link = self.inodes.child(parent, name, Kind.LINK)
        link.kind = Kind.LINK
        self._init_new(link, 0o777, uid, gid, parent)
        info = await self.s3(
            self.store.put_bytes, link.bucket, link.key, target, metadata_for(link)
        )
        apply_info(link, info, self.inodes.owners, self.inodes.seal)
        link.target, link.local = target, False
        self.inodes.place(parent, name, link)
        self._touch(parent)
        return link

    async def mknod(
        self, parent: Inode[Staging], raw_name: bytes, mode: int, rdev: int, uid: int, gid: int
    ) -> Inode[Staging]:
        """A FIFO, socket or device node: an empty object whose mode says which."""
        name = await self._must_not_exist(parent, raw_name)
        kind = kind_of_mode(mode)
        if kind not in SPECIAL_KINDS:
            raise NotSupported(f"mknod of mode {mode:#o} makes no special file")
        node = self.inodes.child(parent, name, kind)
        node.kind = kind
        self._init_new(node, mode, uid, gid, parent)
        node.rdev = rdev if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE) else 0
        info = await self.s3(self.store.put_bytes, node.bucket, node.key, b"", metadata_for(node))
        apply_info(node, info, self.inodes.owners, self.inodes.seal)
        node.local = False
        self.inodes.place(parent, name, node)
        self._touch(parent)
        return node

    async def readlink(self, link: Inode[Staging]) -> bytes:
        if link.kind is not Kind.LINK:
            raise NotSupported(f"{link.path} is not a symbolic link")
        if link.target is None:
            await self.revalidation.revalidate(link)
            link.target = await self.s3(
                self.store.get_range, link.bucket, link.key, 0, max(link.size, 1), link.etag
            )
        return link.target

    def _touch(self, d: Inode[Staging]) -> None:
        d.mtime_ns = d.ctime_ns = time.time_ns()

    # -- removing ----------------------------------------------------------

    async def _keep_parent(self, parent: Inode[Staging]) -> None:
        """Write a marker for an implied directory before its last key goes, so it persists."""
        if parent.is_bucket_root or parent.ino == ROOT_INO:
            return
        if parent.has_marker is None:
            parent.has_marker = (
                await self.s3(self.store.head, parent.bucket, parent.key + "/") is not None
            )
        if not parent.has_marker:
            await self.s3(
                self.store.put_bytes,
                parent.bucket,
                parent.key + "/",
                b"",
                metadata_for(parent),
                DIR_CONTENT_TYPE,
            )
            parent.has_marker = True

    async def _existing(self, parent: Inode[Staging], raw_name: bytes) -> Inode[Staging]:
        inode = await self.lookups.lookup(parent, raw_name)
        if inode is None:
            raise NotFound(f"{parent.path}/{raw_name!r} does not exist")
        return inode

    async def unlink(self, parent: Inode[Staging], raw_name: bytes) -> Inode[Staging]:
        self._writable_parent(parent)
        inode = await self._existing(parent, raw_name)
        if inode.is_dir:
            raise IsDirectory(f"{inode.path} is a directory; use rmdir")
        await self.writeback.settle(inode)
        if not inode.local:
            await self._keep_parent(parent)
            await self.s3(self.store.delete, inode.bucket, inode.key)
        self.writeback.discard(inode)
        self.inodes.forget(parent, inode)
        if inode.name == parent.name and parent.shadows:
            parent.shadows = False
        self._touch(parent)
        return inode

    async def rmdir(self, parent: Inode[Staging], raw_name: bytes) -> Inode[Staging]:
        self._writable_parent(parent)
        d = await self._existing(parent, raw_name)
        if not d.is_dir:
            raise NotDirectory(f"{d.path} is not a directory")
        await self._check_empty(d)
        await self._keep_parent(parent)
        await self.s3(self.store.delete, d.bucket, d.key + "/")
        self.inodes.forget(parent, d)
        self._touch(parent)
        return d

    async def _check_empty(self, d: Inode[Staging]) -> None:
        if d.shadows or self.inodes.has_local_descendants(d):
            raise NotEmpty(f"{d.path} is not empty")
        page = await self.s3(self.store.list_page, d.bucket, d.prefix, None, 2, None)
        if any(o.key != d.prefix for o in page.objects):
            raise NotEmpty(f"{d.path} is not empty")

    # -- rename ------------------------------------------------------------

    async def rename(
        self,
        old_parent: Inode[Staging],
        old_raw: bytes,
        new_parent: Inode[Staging],
        new_raw: bytes,
        noreplace: bool,
    ) -> tuple[Inode[Staging], Inode[Staging] | None]:
        """Move a file or directory; returns (moved inode, replaced inode or None)."""
        self._writable_parent(old_parent)
        self._writable_parent(new_parent)
        name = new_name(new_raw)
        src = await self._existing(old_parent, old_raw)
        new_key = join(new_parent.key, name)
        check_key_length(new_parent.bucket, new_key, src.is_dir)
        if old_parent.bucket != new_parent.bucket:
            raise CrossBucket("rename between buckets is not supported; copy, then delete")
        if (
            src.is_dir
            and (new_parent.key + "/").startswith(src.key + "/")
            and new_parent.bucket == src.bucket
        ):
            raise NotPermitted(f"cannot move {src.path} into itself")
        dst = await self.lookups.lookup(new_parent, new_raw)
        if dst is src:
            return src, None
        if dst is not None:
            if noreplace:
                raise AlreadyExists(f"{dst.path} exists")
            if src.is_dir and not dst.is_dir:
                raise NotDirectory(f"{dst.path} is not a directory")
            if dst.is_dir and not src.is_dir:
                raise IsDirectory(f"{dst.path} is a directory")
            if dst.is_dir:
                await self._check_empty(dst)
        await self._keep_parent(old_parent)
        if dst is not None:
            # The replaced file goes first: an upload of it still on its way could
            # otherwise land on the key after the moved file's copy.
            await self.writeback.settle(dst)
            replaced_in_s3 = not dst.is_dir and not dst.local
            self.writeback.discard(dst)
            self.inodes.forget(self.inodes.by_ino.get(dst.parent), dst)
            if replaced_in_s3 and src.local:
                # No copy will overwrite the replaced object: it must not outlive the rename.
                await self.s3(self.store.delete, dst.bucket, dst.key)
        if src.is_dir:
            await self._rename_dir(src, new_key)
        else:
            await self._rename_file(src, new_key)
        self.inodes.forget(old_parent, src)
        self.inodes.rekey(src, new_parent, name, new_key)
        self.inodes.place(new_parent, name, src)
        if not src.is_dir and src.dirty and src.writers == 0:
            self.writeback.closed(src)  # queued again under its new key (one the store refused)
        self._touch(old_parent)
        self._touch(new_parent)
        return src, dst

    async def _rename_file(self, src: Inode[Staging], new_key: str) -> None:
        if src.local:
            # Nothing in S3 yet: the first upload goes to the new key.
            self.journal.rename(src.bucket, src.key, new_key)
            return
        await self.writeback.commit(src)
        info = await self.s3(self.store.copy, src.bucket, src.key, new_key, src.size, None, None)
        await self.s3(self.store.delete, src.bucket, src.key)
        src.etag, src.last_modified = info.etag, info.last_modified

    async def _rename_dir(self, d: Inode[Staging], new_key: str) -> None:
        """Copy every key under the prefix and delete the old ones (crash-safe order).

        A crash part-way leaves every object in the old place, the new one or both,
        never in neither: an old key is deleted only after its copy is there, the new
        marker is written after every other copy, and the old marker is deleted last
        so the old directory exists until the end.
        """
        old_pre, new_pre = d.key + "/", new_key + "/"
        for inode in self.inodes.all():  # keys known here, local ones too; listed ones below
            if inode.bucket == d.bucket and inode.key.startswith(old_pre) and not inode.gone:
                check_key_length(d.bucket, new_pre + inode.key[len(old_pre) :], inode.is_dir)
        for inode in self.inodes.all():
            if (
                inode.bucket == d.bucket
                and inode.key.startswith(old_pre)
                and inode.dirty
                and not inode.local
            ):
                await self.writeback.commit(inode)
        # From here no upload under the old prefix starts (commit waits for the move),
        # and the ones already on their way finish before the listing.
        with self.writeback.uploads_held(d.bucket, old_pre):
            for inode in self.inodes.all():
                if inode.bucket == d.bucket and inode.key.startswith(old_pre):
                    await self.writeback.settle(inode)
            await self._move_keys(d, old_pre, new_pre)

    async def _move_keys(self, d: Inode[Staging], old_pre: str, new_pre: str) -> None:
        # Journaled first: if fedfs dies part-way, the next start finishes the move.
        self.journal.begin_move(d.bucket, old_pre, new_pre)
        try:
            await self._copy_then_delete(d.bucket, old_pre, new_pre, metadata_for(d))
        except BadName:
            self.journal.end_move(d.bucket, old_pre)  # refused before any copy: nothing moved
            raise
        d.has_marker = True
        self.journal.end_move(d.bucket, old_pre)
        # Re-key every inode below, so inode numbers survive the move.
        for inode in self.inodes.all():
            if inode.bucket == d.bucket and inode.key.startswith(old_pre) and not inode.gone:
                new_child_key = new_pre + inode.key[len(old_pre) :]
                if inode.staging is not None:
                    self.journal.rename(inode.bucket, inode.key, new_child_key)
                self.inodes.move_key(inode, new_child_key)

    async def finish_moves(self) -> None:
        """Finish the directory renames that were under way when fedfs stopped (at start-up).

        The keys still under the old prefix are the data (the copies were made from
        them), so copying them again and deleting them completes the rename.
        """
        for bucket, old_pre, new_pre in self.journal.moves():
            if self.cfg.bucket(bucket) is None:
                log.error(
                    "a rename in bucket %s, which is no longer configured, stays half done", bucket
                )
                continue
            log.warning(
                "finishing the rename of /%s/%s to /%s/%s that was under way when fedfs stopped",
                bucket,
                old_pre.rstrip("/"),
                bucket,
                new_pre.rstrip("/"),
            )
            await self._copy_then_delete(bucket, old_pre, new_pre, None)
            self.journal.end_move(bucket, old_pre)

    async def _copy_then_delete(
        self, bucket: str, old_pre: str, new_pre: str, marker_meta: dict[str, str] | None
    ) -> None:
        """Copy every key under old_pre to new_pre, the marker last, and delete the old keys.

        Up to `[store] max_copies` copies are in flight (`ObjectStore.move_each`); the
        old keys whose copies are done go in DeleteObjects batches while the others
        are still copied, the old marker after everything else.
        marker_meta: the new marker's metadata when the old prefix has no marker (None: none).
        """
        keys: list[ObjectInfo] = []
        for page in await self.s3(lambda: list(self.store.list_all(bucket, old_pre, None))):
            keys.extend(page.objects)
        if marker_meta is not None:  # a rename starting (not one finished at start-up)
            for o in keys:  # refused before anything is copied
                check_key_length(bucket, new_pre + o.key[len(old_pre) :])
        marker = next((o for o in keys if o.key == old_pre), None)
        children = [o for o in keys if o.key != old_pre]

        async def copy(o: ObjectInfo) -> None:
            await self.s3(
                self.store.copy,
                bucket,
                o.key,
                new_pre + o.key[len(old_pre) :],
                o.size,
                None,
                None,
            )

        # Each old key goes once its own copy is there; the store's threads do it all,
        # not one trio task and thread hop per key (that cost more CPU than the requests).
        moves = [(o.key, new_pre + o.key[len(old_pre) :], o.size) for o in children]
        await self.s3(self.store.move_each, bucket, moves, self.cfg.store.max_copies)
        # The new marker goes last among the writes, so a half-copied tree is recognisable.
        if marker is not None:
            await copy(marker)
        elif marker_meta is not None:
            await self.s3(self.store.put_bytes, bucket, new_pre, b"", marker_meta, DIR_CONTENT_TYPE)
        if marker is not None:
            await self.s3(self.store.delete, bucket, old_pre)
