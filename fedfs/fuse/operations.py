"""The FUSE adapter: translates kernel requests into calls of the tree, write-back and cache.

Holds no policy and never talks to S3 itself. Permission checks are the
kernel's (`default_permissions`): this module trusts that a request it gets
was allowed. errno is chosen here and only here, from `ERRNO` below. After a
tree change succeeded it tells policy what follows from it: an object removed
or renamed away takes the grants made on it along, and a chmod or setfacl that
changed an object's limit on grants is audited. Runs in the trio thread.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pyfuse3
import trio

from fedfs import errors
from fedfs.config import Config
from fedfs.data.cache import Cache, Staging
from fedfs.data.writeback import WriteBack
from fedfs.fuse import entry as fuse_entry
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.meta.seal import open_mode
from fedfs.policy.engine import ObjectMeta, PosixView
from fedfs.policy.sharing import Refused, Sharing
from fedfs.tree.attributes import Attributes
from fedfs.tree.changes import Changes
from fedfs.tree.inodes import Inodes
from fedfs.tree.listing import DirListing, Listings
from fedfs.tree.lookup import Lookups
from fedfs.tree.names import BadName
from fedfs.tree.revalidate import Revalidation

log = logging.getLogger(__name__)

# The one table from fedfs errors to errno (most specific class first).
ERRNO: list[tuple[type[Exception], int]] = [
    (errors.NotFound, errno.ENOENT),
    (errors.AccessDenied, errno.EACCES),
    (errors.PreconditionFailed, errno.ESTALE),
    (errors.Stale, errno.ESTALE),
    (errors.Unavailable, errno.EIO),
    (errors.StoreRefused, errno.EINVAL),  # a key the store never accepts
    (errors.CacheFull, errno.ENOSPC),
    (errors.AlreadyExists, errno.EEXIST),
    (errors.NotEmpty, errno.ENOTEMPTY),
    (errors.IsDirectory, errno.EISDIR),
    (errors.NotDirectory, errno.ENOTDIR),
    (errors.NotPermitted, errno.EPERM),
    (errors.NotSupported, errno.ENOTSUP),
    (errors.CrossBucket, errno.EXDEV),
    (errors.NoAttribute, pyfuse3.ENOATTR),
    (errors.NoSpace, errno.ENOSPC),
    (Refused, errno.EPERM),  # policy said no (setfacl by someone who may not share)
    (errors.PolicyError, errno.EINVAL),  # bytes that are no valid ACL
    (errors.FedfsError, errno.EIO),
]
CLOCK_REALTIME_COARSE = 5  # Linux's clock id (the time module does not name it); see write()
STATFS_BLOCK = 4096
STATFS_SIZE = 2**50  # object stores have no fixed capacity; report 1 PiB free
STORE_DOWN_WAIT = 10.0  # seconds listings do not wait for metadata after the store failed

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def errno_of(e: BaseException) -> int:
    if isinstance(e, BadName):
        return errno.ENAMETOOLONG if e.too_long else errno.EINVAL
    if isinstance(e, OSError) and e.errno:
        return e.errno
    for cls, code in ERRNO:
        if isinstance(e, cls):
            return code
    return errno.EIO


def fuse_errors(fn: F) -> F:
    """Turn every fedfs error into the FUSEError the kernel understands (and count the request)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kw: Any) -> Any:
        ops = args[0]
        ops.ops += 1
        ops.last_request = time.monotonic()  # the flusher waits for a quiet moment
        try:
            return await fn(*args, **kw)
        except pyfuse3.FUSEError:
            raise
        except (errors.FedfsError, OSError) as e:
            code = errno_of(e)
            level = (
                logging.WARNING
                if code in (errno.EIO, errno.ENOSPC, errno.ESTALE)
                else logging.DEBUG
            )
            log.log(level, "%s: %s (%s)", fn.__name__, e, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return cast(F, wrapper)


@dataclass
class Handle:
    inode: Inode[Staging]
    writable: bool
    etag: str | None  # the object version this handle reads
    size: int
    next_offset: int = 0  # for sequential-read detection (readahead)
    ahead: int = 0  # the first block read-ahead has not asked for yet
    uid: int = 0  # who opened it (counted against their open_for_writing_per_user)


@dataclass
class Told:
    """The kernel's copy of an inode: the dentry it was handed under, and its attributes."""

    parent: int
    name: bytes
    entry_until: float  # monotonic time the dentry's lifetime ends
    attr_until: float  # the same for the attributes (and the ACLs read under them)
    sig: tuple[int, ...]


def _sig(a: pyfuse3.EntryAttributes) -> tuple[int, ...]:
    return (
        a.st_mode,
        a.st_uid,
        a.st_gid,
        a.st_size,
        a.st_mtime_ns,
        a.st_ctime_ns,
        a.st_atime_ns,
        a.st_nlink,
    )


ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
SOCKET_XATTR = "user.fedfs.socket"  # on the mount root: where the control socket is
ACL_NAMES = (ACL_ACCESS.encode(), ACL_DEFAULT.encode())


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = True  # the kernel enforces the ACLs policy computes, for every process

    def __init__(
        self,
        cfg: Config,
        inodes: Inodes,
        revalidation: Revalidation,
        lookups: Lookups,
        listings: Listings,
        changes: Changes,
        attributes: Attributes,
        writeback: WriteBack,
        cache: Cache,
        policy: Sharing,
        socket: str,
    ) -> None:
        super().__init__()
        self.inodes = inodes
        self.revalidation = revalidation
        self.lookups = lookups
        self.listings = listings
        self.changes = changes
        self.attributes = attributes
        self.writeback = writeback
        self.cache = cache
        self.policy = policy
        self.socket = socket
        self.handles: dict[int, Handle] = {}
        # Files open for writing per uid: each holds a staging descriptor of this one
        # process, so one user may hold only their share (root has no limit).
        self.writing: dict[int, int] = {}
        self.max_writing = cfg.fs.open_for_writing_per_user
        self.dir_handles: dict[int, DirListing] = {}
        # What the kernel was last told per inode, so readdir can leave out entries whose
        # dentry and attributes it still holds (see fuse_entry): ino -> Told.
        self.told: dict[int, Told] = {}
        self.next_fh = 1
        self.entry_ttl = cfg.fs.entry_timeout
        self.attr_ttl = cfg.fs.attr_timeout
        self.negative_ttl = cfg.fs.negative_timeout
        self.write_back = cfg.cache.write_back
        self.fsync_uploads = cfg.cache.fsync == "upload"
        self.ops = 0
        self.last_request = -math.inf  # monotonic time of the latest request
        self.bytes_read = 0  # through the mount, for metrics
        self.bytes_written = 0
        # After a metadata read found the store away, listings hand out entries without
        # waiting for their metadata until then (monotonic time).
        self.store_down_until = -math.inf
        self.nursery: trio.Nursery | None = None  # set by the daemon, for readahead

    # -- attributes --------------------------------------------------------

    def view(self, inode: Inode[Staging]) -> PosixView:
        """What the kernel enforces for this inode: owner, mode and ACLs from policy."""
        meta = ObjectMeta(inode.uid, inode.gid, inode.mode, inode.explicit_mask)
        if inode.kind is Kind.LINK or inode.ino == ROOT_INO:
            return PosixView(inode.uid, inode.gid, inode.mode, None, None)
        return self.policy.view(inode.path, meta, inode.is_dir, self._above(inode))

    def _above(self, inode: Inode[Staging]) -> Callable[[], list[Inode[Staging]]]:
        """The directories above inode, bucket root first (policy asks only when needed)."""

        def above() -> list[Inode[Staging]]:
            chain: list[Inode[Staging]] = []
            node = inode
            while not node.is_bucket_root and node.ino != ROOT_INO:
                node = self.inodes.get(node.parent)
                chain.append(node)
            chain.reverse()
            return chain

        return above

    def attrs(self, inode: Inode[Staging]) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(inode.ino)
        a.generation = 0
        known = inode.meta_known or inode.dirty
        # Entries whose metadata is not read yet get no caching, so the kernel asks
        # again (lookup) before it trusts mode, owner or even the file type.
        a.entry_timeout = self.entry_ttl if known else 0
        a.attr_timeout = self.attr_ttl if known else 0
        view = self.view(inode)
        a.st_mode = pyfuse3.ModeT(inode.kind.value | view.mode)
        a.st_nlink = 0 if inode.gone else 1
        a.st_uid = view.uid
        a.st_gid = view.gid
        a.st_rdev = inode.rdev
        size = inode.staging.size if inode.staging is not None else inode.size
        if inode.kind is Kind.LINK and inode.target is not None:
            size = len(inode.target)
        a.st_size = size
        a.st_blksize = 128 * 1024
        a.st_blocks = (size + 511) // 512
        a.st_mtime_ns = inode.mtime_ns
        a.st_ctime_ns = inode.ctime_ns
        a.st_atime_ns = inode.mtime_ns if inode.atime_ns is None else inode.atime_ns
        return a

    def _fh(self, handle: Handle) -> pyfuse3.FileInfo:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = handle
        inode = handle.inode
        # The kernel's pages are current when they hold the version the object has, or
        # when every byte of the file came through this mount (new, not uploaded yet).
        keep = inode.kernel_etag == inode.etag and (
            inode.etag is not None or inode.staging is not None
        )
        inode.kernel_etag = inode.etag
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep)

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        if name == b".":
            return self.attrs(parent)
        if name == b"..":
            return self.attrs(self.inodes.get(parent.parent))
        inode = await self.lookups.lookup(parent, name)
        if inode is None:
            neg = pyfuse3.EntryAttributes()
            neg.st_ino = pyfuse3.InodeT(0)
            neg.entry_timeout = self.negative_ttl
            return neg
        return self._tell(inode, self.attrs(inode), parent_inode, name)

    def _tell(
        self,
        inode: Inode[Staging],
        a: pyfuse3.EntryAttributes,
        parent: int | None = None,
        name: bytes | None = None,
    ) -> pyfuse3.EntryAttributes:
        """Note what a reply tells the kernel (a dentry too when parent and name are given)."""
        now = time.monotonic()
        if parent is not None and name is not None:
            self.told[inode.ino] = Told(
                parent, name, now + a.entry_timeout, now + a.attr_timeout, _sig(a)
            )
        elif (old := self.told.get(inode.ino)) is not None:
            old.attr_until, old.sig = now + a.attr_timeout, _sig(a)
        return a

    def _listed(
        self, inode: Inode[Staging], a: pyfuse3.EntryAttributes, parent: int, name: bytes
    ) -> pyfuse3.EntryAttributes:
        """A readdir entry: without attributes when the kernel holds them, current, already."""
        old = self.told.get(inode.ino)
        if (
            fuse_entry.SUPPORTED
            and old is not None
            and old.parent == parent
            and old.name == name
            and time.monotonic() < min(old.entry_until, old.attr_until)
            and old.sig == _sig(a)
        ):
            return fuse_entry.without_attributes(a)
        return self._tell(inode, a, parent, name)

    def forget_told(self, ino: int) -> None:
        """The kernel's copy of ino was invalidated: the next listing sends it again."""
        self.told.pop(ino, None)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # Inode numbers stay assigned for the life of the mount (stable st_ino),
        # so there is nothing to free when the kernel forgets one, but its copy is gone.
        for ino, _ in inode_list:
            self.told.pop(ino, None)

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        await self.revalidation.revalidate(node)
        return self._tell(node, self.attrs(node))

    @fuse_errors
    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        node = self.inodes.get(inode)
        mtime_ns = None
        if fields.update_mtime:
            mtime_ns = attr.st_mtime_ns
        mode: int | None = None
        mask: int | bool | None = False
        before = node.explicit_mask
        if fields.update_mode and node.kind is not Kind.LINK:
            meta = ObjectMeta(node.uid, node.gid, node.mode, node.explicit_mask)
            changed = self.policy.chmod(
                node.path,
                meta,
                node.is_dir,
                attr.st_mode,
                self._above(node),
                by_creator=self._by_creator(node, ctx),
                # A private default (docs/OBJECT_ACL.md "Who owns an object") limits grants
                # on chmod as the open default would: `chmod 700 d` still closes d to them.
                limits_as=open_mode(node.is_dir) if node.mode_default else None,
            )
            mode = changed.mode
            if changed.explicit_mask != before:
                mask = changed.explicit_mask
        await self.attributes.set_attrs(
            node,
            mode=mode,
            mask=mask,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            mtime_ns=mtime_ns,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mask_by="chmod",
        )
        if mask is not False:
            await self._limit_changed(node, before, ctx.uid, "chmod")
        if fields.update_mode or fields.update_uid or fields.update_gid:
            self.policy.attributes_changed(node.path, node.is_dir)
        return self._tell(node, self.attrs(node))

    async def _limit_changed(
        self, node: Inode[Staging], before: int | None, uid: int, via: str
    ) -> None:
        """The owner set, moved or lifted node's limit on grants: policy audits it."""
        actor = await self.policy.actor(uid)
        self.policy.note_limit(
            actor, node.path, before, node.explicit_mask, via, is_dir=node.is_dir
        )

    # -- directories -------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self.inodes.get(inode)
        fh = self.next_fh
        self.next_fh += 1
        self.dir_handles[fh] = self.listings.open(node)
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.dir_handles[fh]
        # Offsets 0 and 1 are "." and ".."; entry i of the listing has offset i + 2.
        index = start_id
        while True:
            if index < 2:
                d = listing.dir if index == 0 else self.inodes.by_ino[listing.dir.parent]
                name, attrs = (b"." if index == 0 else b".."), self.attrs(d)
            else:
                entry = await listing.entry(index - 2)
                if entry is None:
                    return
                node = entry[1]
                if (
                    not (node.meta_known or node.dirty)
                    and time.monotonic() >= self.store_down_until
                    and not await self._known(node)
                ):
                    index += 1  # removed from the object store since it was listed
                    continue
                name = entry[0].encode()
                attrs = self._listed(node, self.attrs(node), listing.dir.ino, name)
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                return
            index += 1

    async def _known(self, node: Inode[Staging]) -> bool:
        """Read a listed entry's metadata (joining the listing's prefetch), False if it is gone.

        Entries go to the kernel with their attributes and the usual lifetimes
        (readdirplus), so `ls -l` needs no LOOKUP or GETATTR per entry.
        """
        try:
            await self.revalidation.revalidate(node)
        except errors.NotFound:
            return False
        except errors.FedfsError as e:  # attrs() then gives lifetime 0: the kernel asks again
            log.debug("metadata of %s: %s", node.path, e)
            if isinstance(e, errors.Unavailable):  # the rest of the listing does not wait
                self.store_down_until = time.monotonic() + STORE_DOWN_WAIT
        return True

    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)

    @fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        d = await self.changes.mkdir(self.inodes.get(parent_inode), name, mode, ctx.uid, ctx.gid)
        d.creator_pid = ctx.pid
        return self.attrs(d)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        d = await self.changes.rmdir(self.inodes.get(parent_inode), name)
        await self._object_gone(d.path, True, "removed", ctx.uid)

    async def _object_gone(
        self, path: str, is_dir: bool, verb: str, uid: int, moved_to: str | None = None
    ) -> None:
        """path was removed or renamed away: the grants made on it end (docs/SEMANTICS.md).

        The tree change has happened, so this never fails the request: grants that
        could not be ended are logged, and `fedfs audit orphans` lists them.
        """
        if not self.policy.grants_on_object(path, is_dir):
            return  # the common case, without asking who did it
        try:
            actor = await self.policy.actor(uid)
            await self.policy.object_gone(actor, path, is_dir, verb, moved_to)
        except errors.FedfsError as e:
            log.warning(
                "%s was %s, but its grants stay: %s; `fedfs audit orphans` lists them and "
                "`fedfs unshare` removes each",
                path,
                verb,
                e,
            )

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return  # directory changes are written to S3 before the call returns

    # -- names -------------------------------------------------------------

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        gone = await self.changes.unlink(self.inodes.get(parent_inode), name)
        await self._object_gone(gone.path, False, "removed", ctx.uid)

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # no atomic exchange on an object store
        old_parent = self.inodes.get(parent_inode_old)
        src = await self.lookups.lookup(old_parent, name_old)
        old_path = src.path if src is not None else None
        moved, _replaced = await self.changes.rename(
            old_parent,
            name_old,
            self.inodes.get(parent_inode_new),
            name_new,
            noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
        )
        # The name it replaced (an atomic save) keeps its grants; the old name's end.
        if old_path is not None and moved.path != old_path:
            await self._object_gone(old_path, moved.is_dir, "renamed", ctx.uid, moved.path)

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        link = await self.changes.symlink(
            self.inodes.get(parent_inode), name, target, ctx.uid, ctx.gid
        )
        return self.attrs(link)

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return await self.changes.readlink(self.inodes.get(inode))

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        # One object per file cannot have two keys that stay in step.
        raise pyfuse3.FUSEError(errno.EPERM)

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            # FIFOs, sockets, device nodes: the kernel serves their I/O (devices: not at
            # all, the mount is nodev), so the object only keeps mode and device number.
            node = await self.changes.mknod(
                self.inodes.get(parent_inode), name, mode, rdev, ctx.uid, ctx.gid
            )
            node.creator_pid = ctx.pid
            return self._tell(node, self.attrs(node), parent_inode, name)
        inode = await self.changes.create(
            self.inodes.get(parent_inode), name, mode, ctx.uid, ctx.gid
        )
        inode.creator_pid = ctx.pid
        if self.write_back:
            self.writeback.closed(inode)
        else:
            await self.writeback.commit(inode)
        return self.attrs(inode)

    # -- files -------------------------------------------------------------

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._may_open_for_writing(ctx.uid)
        inode = await self.changes.create(
            self.inodes.get(parent_inode), name, mode, ctx.uid, ctx.gid
        )
        inode.creator_pid = ctx.pid
        inode.open_count += 1
        inode.writers += 1
        self.writing[ctx.uid] = self.writing.get(ctx.uid, 0) + 1
        fi = self._fh(Handle(inode, True, None, 0, uid=ctx.uid))
        return fi, self.attrs(inode)

    def _may_open_for_writing(self, uid: int) -> None:
        """EMFILE ("Too many open files") for a user already holding their share."""
        if uid != 0 and self.writing.get(uid, 0) >= self.max_writing:
            log.info(
                "uid %d holds %d files open for writing, its limit ([fs]"
                " open_for_writing_per_user); refusing another",
                uid,
                self.max_writing,
            )
            raise pyfuse3.FUSEError(errno.EMFILE)

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self.inodes.get(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        # Close-to-open: a new open sees the newest version once the attribute TTL passed
        # (its own HEAD: one already on its way may have been sent before the upload ended).
        await self.revalidation.revalidate(node, join=False)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable:
            self._may_open_for_writing(ctx.uid)
        if flags & os.O_TRUNC:
            await self.writeback.truncate(node, 0)  # nothing to fetch: the content goes anyway
        elif writable:
            await self.writeback.open_for_write(node)
        node.open_count += 1
        if writable:
            node.writers += 1
            self.writing[ctx.uid] = self.writing.get(ctx.uid, 0) + 1
        return self._fh(Handle(node, bool(writable), node.etag, node.size, uid=ctx.uid))

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # A memoryview of a fetched block may come back (Cache.read): pyfuse3 replies
        # with any buffer at once, without a checkpoint in between.
        h = self.handles[fh]
        inode = h.inode
        if inode.staging is not None:
            staged = inode.staging.read(off, size)
            self.bytes_read += len(staged)
            return staged
        if h.etag is None:
            return b""
        self._readahead(h, off, off + size)  # before this read waits: the GETs run alongside
        data = await self.cache.read(inode.bucket, inode.key, h.etag, h.size, off, size)
        self.bytes_read += len(data)
        h.next_offset = off + len(data)
        return data

    def _readahead(self, h: Handle, off: int, end: int) -> None:
        """Keep `readahead_blocks` blocks past a sequential reader fetched or on their way.

        Sequential means within a block of where the last read ended: with a large
        read-ahead the kernel has several reads of one file in flight, which may
        arrive out of order. Each block is asked for once per run of reads
        (`Handle.ahead`), and fetched in parallel with the others (worker threads).
        """
        if self.nursery is None or h.etag is None or h.size == 0:
            return
        bs = self.cache.block_size
        if abs(off - h.next_offset) > bs:
            h.ahead = 0  # a seek: no read-ahead until reads are sequential again
            return
        last = min(
            (min(end, h.size) - 1) // bs + self.cache.cfg.readahead_blocks, (h.size - 1) // bs
        )
        for block in range(max(h.ahead, (min(end, h.size) - 1) // bs + 1), last + 1):
            self.nursery.start_soon(
                self.cache.prefetch, h.inode.bucket, h.inode.key, h.etag, h.size, block
            )
        h.ahead = max(h.ahead, last + 1)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        while True:
            st = h.inode.staging or await self.writeback.open_for_write(h.inode)
            growth = off + len(buf) - st.size
            if growth > 0:
                await self.cache.wait_for_room(growth)  # backpressure, then ENOSPC
            if st.lock.locked():
                async with st.lock:  # an upload of this file is reading the staging copy
                    pass
            if h.inode.staging is st:
                break  # (a copy replaced while this write waited is never written to)
        n = st.write(off, buf)
        self.bytes_written += n
        h.inode.size = st.size
        h.inode.mtime_pending = True  # set at close (see Inode.mtime_pending)
        # The kernel stamped this write with its coarse clock; the same value at close
        # keeps its page cache (a different mtime makes it drop the file's pages).
        h.inode.written_mtime_ns = max(
            h.inode.written_mtime_ns, time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
        )
        return n

    @fuse_errors
    async def flush(self, fh: int) -> None:
        # close(): with write-back the data is in the cache and the journal when
        # this returns, and the flusher uploads it; without, it is in S3.
        h = self.handles[fh]
        if not h.writable:
            return
        if self.write_back:
            self.writeback.closed(h.inode)
        else:
            await self.writeback.commit(h.inode)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        inode = self.handles[fh].inode
        if self.fsync_uploads or not self.write_back:
            await self.writeback.commit(inode)
        else:
            await self.writeback.make_durable(inode)

    @fuse_errors
    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh)
        h.inode.open_count -= 1
        if h.writable:
            h.inode.writers -= 1
            left = self.writing.pop(h.uid) - 1
            if left:
                self.writing[h.uid] = left
        await self.writeback.release_data(h.inode)

    # -- xattrs ------------------------------------------------------------

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        node = self.inodes.get(inode)
        key = name.decode("utf-8", "surrogateescape")
        if key in (ACL_ACCESS, ACL_DEFAULT):
            await self._set_acl(node, value, ctx, default=key == ACL_DEFAULT)
            return
        await self.attributes.set_xattr(node, key, value, replace_only=False, create_only=False)

    @staticmethod
    def _by_creator(node: Inode[Staging], ctx: Any) -> bool:
        """Whether the request comes from the process that created node through this mount
        (cp -p, rsync -a and tar x restate the modes of what they write)."""
        return node.creator_pid != 0 and ctx.pid == node.creator_pid

    async def _set_acl(
        self, node: Inode[Staging], value: bytes | None, ctx: Any, default: bool
    ) -> None:
        """setfacl: the kernel checked the caller owns the file; policy decides the rest."""
        if node.kind is Kind.LINK or node.ino == ROOT_INO or node.is_bucket_root:
            raise errors.NotPermitted("ACLs of the mount root and bucket roots come from policy")
        actor = await self.policy.actor(ctx.uid)
        meta = ObjectMeta(node.uid, node.gid, node.mode, node.explicit_mask)
        try:
            new = await self.policy.set_acl(
                actor,
                node.path,
                node.is_dir,
                value,
                meta,
                default,
                self._above(node),
                by_creator=self._by_creator(node, ctx),
            )
        except Refused as e:  # the program sees only EPERM: the log says why
            log.warning(
                "setfacl on %s by %s refused: %s", self.policy.typed(node.path), actor.label, e
            )
            raise
        if new != meta:
            mask_changed = new.explicit_mask != meta.explicit_mask
            await self.attributes.set_attrs(
                node,
                mode=new.mode,
                mask=new.explicit_mask if mask_changed else False,
                mask_by="setfacl",
            )
            if mask_changed:
                self.policy.note_limit(
                    actor,
                    node.path,
                    meta.explicit_mask,
                    node.explicit_mask,
                    "setfacl",
                    is_dir=node.is_dir,
                )
            self.policy.attributes_changed(node.path, node.is_dir)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        node = self.inodes.get(inode)
        if not name.startswith(b"user.") and name not in ACL_NAMES:
            # security.*, trusted.*: not kept (docs/SEMANTICS.md). ENOTSUP rather than
            # ENODATA also tells `ls -l` (libselinux) to stop asking for every file here.
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        key = name.decode("utf-8", "surrogateescape")
        if key in (ACL_ACCESS, ACL_DEFAULT):
            view = self.view(node)
            value = view.acl_access if key == ACL_ACCESS else view.acl_default
            if value is None:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # the common answer: no grants here
            return value
        if node.ino == ROOT_INO:
            if key == SOCKET_XATTR:
                return self.socket.encode()
            raise errors.NoAttribute(f"no {key}")
        return await self.attributes.get_xattr(node, key)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        node = self.inodes.get(inode)
        if node.ino == ROOT_INO:
            return [SOCKET_XATTR.encode()]
        await self.revalidation.revalidate(node)
        names = [k.encode("utf-8", "surrogateescape") for k in sorted(node.xattrs)]
        view = self.view(node)
        if view.acl_access is not None:
            names.append(ACL_ACCESS.encode())
        if view.acl_default is not None:
            names.append(ACL_DEFAULT.encode())
        return names

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        node = self.inodes.get(inode)
        key = name.decode("utf-8", "surrogateescape")
        if key in (ACL_ACCESS, ACL_DEFAULT):
            await self._set_acl(node, None, ctx, default=key == ACL_DEFAULT)
            return
        await self.attributes.remove_xattr(node, key)

    # -- filesystem --------------------------------------------------------

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = STATFS_BLOCK
        s.f_blocks = s.f_bfree = s.f_bavail = STATFS_SIZE // STATFS_BLOCK
        s.f_files = s.f_ffree = s.f_favail = 2**32
        s.f_namemax = 255
        return s


ROOT = ROOT_INO
