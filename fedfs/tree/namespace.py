"""The tree: inodes, directory listings and POSIX metadata over S3 keys.

Owns the mapping between inode numbers and (bucket, key), the attribute and
listing caches with their TTLs, and every tree-changing operation (create,
mkdir, unlink, rename, setattr, xattrs). Data bytes live in `cache.py`; S3 is
reached only through `store.py`, from worker threads.

Concurrency: everything here runs in the trio thread. State may change at
every `await`, so each operation re-reads what it needs after awaiting and
never holds a reference to a dict entry across an await it depends on.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, unquote

import trio

from fedfs.config import Config
from fedfs.data.cache import Cache, Staging
from fedfs.data.journal import DirtyFile
from fedfs.errors import (
    AlreadyExists,
    CrossBucket,
    IsDirectory,
    NoAttribute,
    NoSpace,
    NotDirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    PreconditionFailed,
    Unavailable,
)
from fedfs.events import event
from fedfs.store.s3 import DIR_CONTENT_TYPE, ObjectInfo, ObjectStore
from fedfs.tree.names import (
    SHADOW_NAME,
    join,
    key_problem,
    name_to_str,
    report_hidden,
    report_shadow_taken,
)

if TYPE_CHECKING:
    from fedfs.data.flusher import Flusher

log = logging.getLogger(__name__)

T = TypeVar("T")
ROOT_INO = 1
DEFAULT_FILE_MODE = 0o664
DEFAULT_DIR_MODE = 0o775
# S3 allows 2 KiB of user metadata; fedfs's own keys take < 100 bytes of it.
MAX_USER_METADATA = 2048
XATTR_META_KEY = "xattr"
# How long a directory remembers what this node put in it, for listings that raced
# the upload (far longer than any listing takes).
PLACED_MEMORY = 300.0
MASK_META_KEY = "fedfs-mask"
# Keys in one ListObjectsV2 page: a directory with fewer entries is listed again to answer
# a lookup of a name its last listing did not have (see Namespace._relist_rather).
SMALL_DIR = 1000


def honoured_mode(mode: int, is_dir: bool) -> int:
    """The permission bits of mode that this mount honours, and so shows.

    Never setuid (the mount is nosuid); setgid and sticky on directories only, where
    they work (new files take a setgid directory's group, the kernel enforces sticky
    deletion). Modes from object metadata written by any tool pass through here.
    """
    return stat.S_IMODE(mode) & (0o3777 if is_dir else 0o777)


class Kind(Enum):
    DIR = stat.S_IFDIR
    FILE = stat.S_IFREG
    LINK = stat.S_IFLNK


@dataclass(eq=False)
class Inode:
    ino: int
    parent: int
    name: str
    bucket: str  # "" for the mount root
    key: str  # object key of a file, prefix (without "/") of a directory; "" for a bucket root
    kind: Kind
    mode: int = DEFAULT_FILE_MODE  # permission bits only
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    etag: str | None = None
    last_modified: float = 0.0
    meta_known: bool = False  # mode/uid/gid/xattrs were read from the object (or set here)
    checked: float = -math.inf  # monotonic time the attributes were last confirmed in S3
    # monotonic time this node last changed the object: an S3 answer to a request sent
    # before then (a HEAD or a listing racing an upload) is older than what we know
    changed: float = -math.inf
    local: bool = False  # exists only here so far: created, not yet uploaded
    has_marker: bool | None = None  # directories: whether a "key/" marker object exists
    shadows: bool = False  # directories: a file object with the same key exists
    xattrs: dict[str, bytes] = field(default_factory=dict)
    explicit_mask: int | None = None  # ACL mask set by chmod/setfacl while grants apply
    target: bytes | None = None  # symlinks
    children: dict[str, int] | None = None  # directories: last complete listing
    # directories: inodes this node put here (create, mkdir, symlink, rename), so a
    # listing that raced their upload still shows them without scanning every inode
    placed: set[int] = field(default_factory=set)
    listed: float = -math.inf
    misses: int = 0  # directories: names asked for that the last listing did not have
    staging: Staging | None = None
    base_etag: str | None = None  # the version the staging copy was made from
    open_count: int = 0
    writers: int = 0
    # Written since the last close: mtime moves at close, not at every write(), so the
    # kernel's attribute refreshes during a long write do not drop the page cache.
    mtime_pending: bool = False
    written_mtime_ns: int = 0  # the kernel's (coarse) time of the latest write() seen
    kernel_etag: str | None = None  # the version the kernel page cache holds
    gone: bool = False

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def prefix(self) -> str:
        """Key prefix of this directory's children."""
        return f"{self.key}/" if self.key else ""

    @property
    def is_bucket_root(self) -> bool:
        return self.is_dir and self.key == "" and self.bucket != ""

    @property
    def dirty(self) -> bool:
        return self.local or (self.staging is not None and self.staging.dirty)

    @property
    def st_mode(self) -> int:
        return self.kind.value | self.mode


def metadata_for(inode: Inode) -> dict[str, str]:
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


async def concurrently(*fns: Callable[[], Awaitable[None]]) -> None:
    """Run fns in parallel; on failure raise the first real error itself, not a group."""
    try:
        async with trio.open_nursery() as n:
            for fn in fns:
                n.start_soon(fn)
    except BaseExceptionGroup as group:
        errors = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if not errors:
            raise
        raise errors[0] from None


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


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


class Owner(Protocol):
    """Who owns a bucket's objects that carry no metadata (from [[buckets]] owner)."""

    uid: int
    gid: int


class Namespace:
    """Inodes and the operations that change the tree, for one mount."""

    def __init__(
        self,
        cfg: Config,
        store: ObjectStore,
        cache: Cache,
        limiter: trio.CapacityLimiter,
        owners: Mapping[str, Owner],
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.cache = cache
        self.limiter = limiter
        self.owners = owners
        self.attr_ttl = cfg.fs.attr_timeout
        self.dir_ttl = cfg.fs.dir_timeout
        self.inodes: dict[int, Inode] = {}
        self.by_ident: dict[tuple[str, str, bool], int] = {}
        self.next_ino = ROOT_INO + 1
        self.nursery: trio.Nursery | None = None  # set by the daemon, for metadata prefetch
        self.flusher: Flusher | None = None  # set by the daemon
        self.node = cfg.policy.node  # names conflict copies (default: the host name)
        self.conflicts = 0
        self.outage_logged = -math.inf
        self.moving: list[tuple[str, str, trio.Event]] = []  # directory renames under way
        self.negative_ttl = cfg.fs.negative_timeout
        self.absent: dict[tuple[int, str], float] = {}  # (parent ino, name) -> when S3 said no
        self.revalidating: dict[int, trio.Event] = {}  # inodes with a HEAD on its way
        self.relisting: dict[int, trio.Event] = {}  # directories with a listing on its way
        now_ns = time.time_ns()
        root = Inode(
            ROOT_INO,
            ROOT_INO,
            "",
            "",
            "",
            Kind.DIR,
            mode=0o755,
            mtime_ns=now_ns,
            ctime_ns=now_ns,
            meta_known=True,
            checked=math.inf,
        )
        root.children = {}
        root.listed = math.inf
        self.inodes[ROOT_INO] = root
        for b in cfg.buckets:
            ino = self._new_inode(ROOT_INO, b.name, b.name, "", Kind.DIR)
            ino.mode, ino.uid, ino.gid = DEFAULT_DIR_MODE, owners[b.name].uid, owners[b.name].gid
            ino.mtime_ns = ino.ctime_ns = now_ns
            ino.meta_known, ino.checked, ino.has_marker = True, math.inf, True
            root.children[b.name] = ino.ino

    # -- plumbing ----------------------------------------------------------

    async def s3(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def detached_inode(
        self, bucket: str, key: str, metadata: dict[str, str], base_etag: str | None, st: Staging
    ) -> Inode:
        """An inode outside the tree for a journaled file being recovered at start-up."""
        inode = Inode(0, ROOT_INO, key.rsplit("/", 1)[-1], bucket, key, Kind.FILE)
        self._apply_info(inode, ObjectInfo(key, st.size, base_etag or "", time.time(), metadata))
        inode.etag, inode.base_etag, inode.local = base_etag, base_etag, base_etag is None
        inode.staging = st
        return inode

    def _new_inode(self, parent: int, name: str, bucket: str, key: str, kind: Kind) -> Inode:
        inode = Inode(self.next_ino, parent, name, bucket, key, kind)
        self.next_ino += 1
        self.inodes[inode.ino] = inode
        self.by_ident[(bucket, key, kind is Kind.DIR)] = inode.ino
        return inode

    def _child(self, parent: Inode, name: str, kind: Kind) -> Inode:
        """The inode for parent/name of this kind, created on first sight (numbers stay stable)."""
        key = join(parent.key, name)
        ident = (parent.bucket, key, kind is Kind.DIR)
        ino = self.by_ident.get(ident)
        inode = self.inodes.get(ino) if ino else None
        if inode is None:
            inode = self._new_inode(parent.ino, name, parent.bucket, key, kind)
            owner = self.owners[parent.bucket]
            inode.uid, inode.gid = owner.uid, owner.gid
            inode.mode = DEFAULT_DIR_MODE if kind is Kind.DIR else DEFAULT_FILE_MODE
        inode.parent, inode.name, inode.gone = parent.ino, name, False
        if kind is Kind.LINK:
            inode.kind = Kind.LINK  # a listing cannot tell links from files; never downgrade
        return inode

    def refresh_owners(self) -> None:
        """Bucket roots show their owner's current uid/gid (a team's gid may be new)."""
        root = self.inodes[ROOT_INO]
        assert root.children is not None
        for name, ino in root.children.items():
            self.inodes[ino].uid, self.inodes[ino].gid = (
                self.owners[name].uid,
                self.owners[name].gid,
            )

    def under(self, path: str) -> list[Inode]:
        """Known inodes at or below a fedfs path (for cache invalidation)."""
        parts = path.strip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        pre = key + "/"
        return [
            i
            for i in self.inodes.values()
            if i.bucket == bucket
            and not i.gone
            and (not key or i.key == key or i.key.startswith(pre))
        ]

    def above(self, path: str) -> list[Inode]:
        """Known directory inodes above a fedfs path: the bucket and each parent directory."""
        parts = path.strip("/").split("/")
        parents = {"/".join(parts[1:i]) for i in range(1, len(parts))}
        return [
            i
            for i in self.inodes.values()
            if i.bucket == parts[0] and i.is_dir and not i.gone and i.key.rstrip("/") in parents
        ]

    def get(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is None or (inode.gone and inode.open_count == 0):
            raise NotFound(f"inode {ino} no longer exists")
        return inode

    def path_of(self, inode: Inode) -> str:
        return f"/{inode.bucket}/{inode.key}".rstrip("/") if inode.bucket else "/"

    def _apply_info(self, inode: Inode, info: ObjectInfo) -> None:
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
        owner = self.owners[inode.bucket]
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
                log.warning("%s: ignoring unreadable xattr metadata", self.path_of(inode))
        inode.meta_known = True

    def _forget_child(self, parent: Inode | None, inode: Inode) -> None:
        inode.gone = True
        inode.changed = time.monotonic()
        self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
        siblings = parent.children if parent is not None else None
        if siblings is not None and siblings.get(inode.name) == inode.ino:
            del siblings[inode.name]

    # -- lookup and attributes ---------------------------------------------

    def fresh(self, inode: Inode) -> bool:
        return inode.dirty or time.monotonic() - inode.checked < self.attr_ttl

    def listing_fresh(self, inode: Inode) -> bool:
        return inode.children is not None and time.monotonic() - inode.listed < self.dir_ttl

    async def lookup(self, parent: Inode, raw_name: bytes) -> Inode | None:
        if not parent.is_dir:
            raise NotDirectory(f"{self.path_of(parent)} is not a directory")
        name = name_to_str(raw_name)
        if parent.ino == ROOT_INO:
            ino = parent.children.get(name) if parent.children else None
            return self.inodes[ino] if ino else None
        if name == SHADOW_NAME and parent.shadows:
            # A real key of that name is a real object and keeps its name; only without
            # one is the name the shadowed file's (one HEAD more, for a rare name).
            real = await self._lookup_key(parent, name)
            if real is not None:
                report_shadow_taken(parent.bucket, parent.key)
                return real
            alias = self._child(self.inodes[parent.parent], parent.name, Kind.FILE)
            await self.revalidate(alias)
            return alias
        return await self._lookup_key(parent, name)

    async def _lookup_key(self, parent: Inode, name: str) -> Inode | None:
        """The object or prefix parent/name, from the listing if fresh, else from S3."""
        if (
            not self.listing_fresh(parent)
            and parent.children is not None
            and name not in parent.children
            and self._relist_rather(parent)
        ):
            # A name the last listing did not have (a create's LOOKUP, typically): list the
            # directory again, requests that also answer the next names asked for within
            # dir_timeout, instead of a HEAD and a LIST for each name.
            try:
                await self._relist(parent)
            except Unavailable:
                self._note_outage()
                return None
        if self.listing_fresh(parent):
            assert parent.children is not None
            ino = parent.children.get(name)
            if ino is None:
                return None
            inode = self.inodes[ino]
            await self.revalidate(inode)
            return None if inode.gone else inode
        # Not listed recently: ask S3 whether name is a file and/or a prefix, in parallel.
        key = join(parent.key, name)
        for kind in (Kind.DIR, Kind.FILE):
            ino = self.by_ident.get((parent.bucket, key, kind is Kind.DIR))
            known = self.inodes.get(ino) if ino else None
            if known is None or known.gone or known.parent != parent.ino or not self.fresh(known):
                continue
            if kind is Kind.DIR or not self._is_shadowed(parent, name):
                return known
        head: ObjectInfo | None = None
        marker: ObjectInfo | None = None
        is_prefix = False

        async def get_head() -> None:
            nonlocal head
            head = await self.s3(self.store.head, parent.bucket, key)

        async def get_prefix() -> None:
            # One LIST tells whether the prefix exists and (sorting first) whether it has
            # a marker; only a marker's metadata (the directory's mode) needs a HEAD.
            nonlocal is_prefix, marker
            page = await self.s3(self.store.list_page, parent.bucket, key + "/", None, 1, None)
            is_prefix = bool(page.objects)
            if is_prefix and page.objects[0].key == key + "/":
                marker = await self.s3(self.store.head, parent.bucket, key + "/")

        try:
            await concurrently(get_head, get_prefix)
        except Unavailable:
            # The store is away: answer from the last listing, if there is one.
            if parent.children is None:
                raise
            ino = parent.children.get(name)
            self._note_outage()
            return self.inodes[ino] if ino is not None else None
        if is_prefix:
            d = self._child(parent, name, Kind.DIR)
            d.shadows = head is not None
            d.has_marker = marker is not None
            if marker is not None:
                self._apply_info(d, marker)
            else:
                d.checked = time.monotonic()
                d.meta_known = True
            if parent.children is not None:
                parent.children[name] = d.ino
            return d
        if head is not None:
            f = self._child(parent, name, Kind.FILE)
            self._apply_info(f, head)
            if parent.children is not None:
                parent.children[name] = f.ino
            return f
        # Nothing in S3; a file created here and not uploaded yet still exists.
        ino = self.by_ident.get((parent.bucket, key, False))
        local = self.inodes.get(ino) if ino else None
        if local is not None and not local.gone and local.dirty:
            return local
        self._remember_absent(parent, name)
        return None

    def _relist_rather(self, d: Inode) -> bool:
        """Whether to answer a missing name by listing d again rather than asking for it.

        A small directory: always (one request). A large one once the names asked for
        since its last listing would have cost as many requests as listing it does (a
        page per 1,000 keys); so a job creating thousands of files in one directory pays
        a listing per dir_timeout, not two requests per file, and a single lookup in a
        huge directory does not list it all.
        """
        assert d.children is not None
        if len(d.children) < SMALL_DIR:
            return True
        d.misses += 1
        return d.misses * 2 > len(d.children) // SMALL_DIR + 1

    async def _relist(self, d: Inode) -> None:
        """List directory d from S3 now (one listing at a time per directory)."""
        pending = self.relisting.get(d.ino)
        if pending is not None:
            await pending.wait()
            return
        done = self.relisting[d.ino] = trio.Event()
        try:
            listing = DirListing(self, d)
            while not listing.done:
                await listing._next_page()
        finally:
            del self.relisting[d.ino]
            done.set()

    def _remember_absent(self, parent: Inode, name: str) -> None:
        """S3 just said parent/name does not exist; a create right after need not ask again."""
        if len(self.absent) > 10_000:
            cutoff = time.monotonic() - self.negative_ttl
            self.absent = {k: t for k, t in self.absent.items() if t > cutoff}
        self.absent[(parent.ino, name)] = time.monotonic()

    def _known_absent(self, parent: Inode, name: str) -> bool:
        """Absent in S3 within the negative lifetime (what the kernel's negative dentry trusts too)."""
        seen = self.absent.pop((parent.ino, name), None)
        return seen is not None and time.monotonic() - seen < self.negative_ttl

    def _is_shadowed(self, parent: Inode, name: str) -> bool:
        ino = self.by_ident.get((parent.bucket, join(parent.key, name), True))
        return ino is not None and not self.inodes[ino].gone

    def _note_outage(self) -> None:
        now = time.monotonic()
        if now - self.outage_logged > 60:
            self.outage_logged = now
            event(
                log,
                "store-unreachable",
                severity=logging.WARNING,
                msg="the object store does not answer; serving cached attributes and listings",
            )

    async def revalidate(self, inode: Inode, join: bool = True) -> None:
        """Re-read an inode's attributes from S3 if they are older than the TTL.

        With join, a caller that finds a HEAD of this inode already on its way (a listing's
        metadata prefetch, another request) waits for that answer instead of sending its
        own; open() does not join (close-to-open wants a HEAD sent after the open).
        While the store does not answer, attributes read before stay in use (reads of
        cached data keep working); an inode never seen in S3 gives the error.
        """
        pending = self.revalidating.get(inode.ino)
        if pending is not None and join:
            await pending.wait()
        if self.fresh(inode) and inode.meta_known and not inode.gone:
            return
        mine = pending is None
        if mine:
            self.revalidating[inode.ino] = trio.Event()
        try:
            await self._revalidate(inode)
        except Unavailable:
            if not inode.meta_known or inode.gone:
                raise
            self._note_outage()
            inode.checked = time.monotonic()  # ask again after the TTL, not on every call
        finally:
            if mine:
                self.revalidating.pop(inode.ino).set()

    async def _revalidate(self, inode: Inode) -> None:
        if inode.gone and inode.open_count > 0:
            return  # unlinked while open: the open handles keep what they have
        if inode.gone:
            raise NotFound(f"{self.path_of(inode)} no longer exists")
        if self.fresh(inode) and inode.meta_known:
            return
        if inode.is_dir:
            asked = time.monotonic()
            marker = await self.s3(self.store.head, inode.bucket, inode.key + "/")
            if inode.changed > asked:
                return
            if marker is not None:
                inode.has_marker = True
                self._apply_info(inode, marker)
                return
            inode.has_marker = False
            if await self.s3(self.store.prefix_exists, inode.bucket, inode.key + "/"):
                inode.checked = time.monotonic()
                inode.meta_known = True
                return
            if self._has_local_descendants(inode):
                inode.checked = time.monotonic()
                return
        else:
            asked = time.monotonic()
            info = await self.s3(self.store.head, inode.bucket, inode.key)
            if inode.dirty or inode.changed > asked:
                return  # changed here while the HEAD was on its way: what we know is newer
            if info is not None:
                self._apply_info(inode, info)
                return
        self._forget_child(self.inodes.get(inode.parent), inode)
        raise NotFound(f"{self.path_of(inode)} was removed from the object store")

    def _has_local_descendants(self, d: Inode) -> bool:
        pre = d.prefix
        return any(
            i.local and not i.gone and i.bucket == d.bucket and i.key.startswith(pre)
            for i in self.inodes.values()
        )

    # -- listings ----------------------------------------------------------

    def open_listing(self, d: Inode) -> DirListing:
        if not d.is_dir:
            raise NotDirectory(f"{self.path_of(d)} is not a directory")
        return DirListing(self, d)

    def prefetch_metadata(self, inodes: list[Inode]) -> None:
        """Fetch unknown metadata for listed entries in the background (speeds up `ls -l`).

        In listing order, by as many workers as S3 connections, so readdir, which waits
        for each entry's metadata before handing it to the kernel, gets the first ones first.
        """
        todo = deque(i for i in inodes if not i.meta_known and not i.dirty)
        if self.nursery is None or not todo:
            return

        async def worker() -> None:
            while todo:
                inode = todo.popleft()
                try:
                    await self.revalidate(inode)
                except Exception as e:  # a prefetch failure is harmless: getattr retries
                    log.debug("metadata prefetch of %s failed: %s", self.path_of(inode), e)

        for _ in range(min(len(todo), max(1, int(self.limiter.total_tokens)))):
            self.nursery.start_soon(worker)

    # -- creating ----------------------------------------------------------

    def _writable_parent(self, parent: Inode) -> None:
        if not parent.is_dir:
            raise NotDirectory(f"{self.path_of(parent)} is not a directory")
        if parent.ino == ROOT_INO:
            raise NotPermitted(
                "the mount root lists the configured buckets; create inside a bucket"
            )

    async def _must_not_exist(self, parent: Inode, raw_name: bytes) -> str:
        self._writable_parent(parent)
        name = name_to_str(raw_name)
        if name == SHADOW_NAME and parent.shadows:
            raise AlreadyExists(f"{self.path_of(parent)}/{name} exists")
        if self._known_absent(parent, name):
            # The kernel's LOOKUP for this create just asked S3; nothing was created here since
            # (creating here would have made an inode, found below).
            ino = self.by_ident.get((parent.bucket, join(parent.key, name), False))
            dino = self.by_ident.get((parent.bucket, join(parent.key, name), True))
            if not any(i is not None and not self.inodes[i].gone for i in (ino, dino)):
                return name
        if await self.lookup(parent, raw_name) is not None:
            raise AlreadyExists(f"{self.path_of(parent)}/{name} exists")
        return name

    def _init_new(self, inode: Inode, mode: int, uid: int, gid: int, parent: Inode) -> None:
        now = time.time_ns()
        inode.mode = honoured_mode(mode, inode.is_dir)
        inode.uid = uid
        # A setgid directory passes its group on, as on every POSIX filesystem.
        inode.gid = parent.gid if parent.mode & stat.S_ISGID else gid
        if inode.is_dir and parent.mode & stat.S_ISGID:
            inode.mode |= stat.S_ISGID
        inode.mtime_ns = inode.ctime_ns = now
        inode.meta_known = True
        inode.xattrs = {}
        inode.target = None
        inode.gone = False
        inode.changed = time.monotonic()

    async def create(self, parent: Inode, raw_name: bytes, mode: int, uid: int, gid: int) -> Inode:
        """A new empty file, local until its first upload (on close or fsync)."""
        name = await self._must_not_exist(parent, raw_name)
        inode = self._child(parent, name, Kind.FILE)
        inode.kind = Kind.FILE
        self._init_new(inode, mode, uid, gid, parent)
        inode.size, inode.etag, inode.local = 0, None, True
        self._stage(inode, self.cache.new_staging()).dirty = True
        inode.checked = time.monotonic()
        self._place(parent, name, inode)
        self._touch(parent)
        return inode

    async def mkdir(self, parent: Inode, raw_name: bytes, mode: int, uid: int, gid: int) -> Inode:
        name = await self._must_not_exist(parent, raw_name)
        d = self._child(parent, name, Kind.DIR)
        self._init_new(d, mode, uid, gid, parent)
        info = await self.s3(
            self.store.put_bytes, d.bucket, d.key + "/", b"", metadata_for(d), DIR_CONTENT_TYPE
        )
        self._apply_info(d, info)
        d.has_marker, d.shadows = True, False
        d.children, d.listed = {}, time.monotonic()
        self._place(parent, name, d)
        self._touch(parent)
        return d

    async def symlink(
        self, parent: Inode, raw_name: bytes, target: bytes, uid: int, gid: int
    ) -> Inode:
        name = await self._must_not_exist(parent, raw_name)
        link = self._child(parent, name, Kind.LINK)
        link.kind = Kind.LINK
        self._init_new(link, 0o777, uid, gid, parent)
        info = await self.s3(
            self.store.put_bytes, link.bucket, link.key, target, metadata_for(link)
        )
        self._apply_info(link, info)
        link.target, link.local = target, False
        self._place(parent, name, link)
        self._touch(parent)
        return link

    async def readlink(self, link: Inode) -> bytes:
        if link.kind is not Kind.LINK:
            raise NotSupported(f"{self.path_of(link)} is not a symbolic link")
        if link.target is None:
            await self.revalidate(link)
            link.target = await self.s3(
                self.store.get_range, link.bucket, link.key, 0, max(link.size, 1), link.etag
            )
        return link.target

    def _place(self, parent: Inode, name: str, inode: Inode) -> None:
        """This node put inode into parent under name."""
        if parent.children is not None:
            parent.children[name] = inode.ino
        parent.placed.add(inode.ino)

    def _touch(self, d: Inode) -> None:
        d.mtime_ns = d.ctime_ns = time.time_ns()

    # -- removing ----------------------------------------------------------

    async def _keep_parent(self, parent: Inode) -> None:
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

    async def _existing(self, parent: Inode, raw_name: bytes) -> Inode:
        inode = await self.lookup(parent, raw_name)
        if inode is None:
            raise NotFound(f"{self.path_of(parent)}/{raw_name!r} does not exist")
        return inode

    async def unlink(self, parent: Inode, raw_name: bytes) -> Inode:
        self._writable_parent(parent)
        inode = await self._existing(parent, raw_name)
        if inode.is_dir:
            raise IsDirectory(f"{self.path_of(inode)} is a directory; use rmdir")
        await self._settle(inode)
        if not inode.local:
            await self._keep_parent(parent)
            await self.s3(self.store.delete, inode.bucket, inode.key)
        self._discard_data(inode)
        self._forget_child(parent, inode)
        if inode.name == parent.name and parent.shadows:
            parent.shadows = False
        self._touch(parent)
        return inode

    async def _settle(self, inode: Inode) -> None:
        """Wait for an upload of this file in flight, so it cannot land after its key is reused."""
        st = inode.staging
        if st is not None and st.lock.locked():
            async with st.lock:
                pass

    def _discard_data(self, inode: Inode) -> None:
        """Drop local data of a removed file; open handles keep reading the staged copy."""
        inode.local = False
        if self.flusher is not None:
            self.flusher.pending.pop(inode.ino, None)
        if inode.staging is not None:
            self.cache.journal.forget(inode.bucket, inode.key, inode.staging.name)
            inode.staging.dirty = False
            if inode.open_count == 0:
                inode.staging.close()
                inode.staging = None

    async def rmdir(self, parent: Inode, raw_name: bytes) -> Inode:
        self._writable_parent(parent)
        d = await self._existing(parent, raw_name)
        if not d.is_dir:
            raise NotDirectory(f"{self.path_of(d)} is not a directory")
        await self._check_empty(d)
        await self._keep_parent(parent)
        await self.s3(self.store.delete, d.bucket, d.key + "/")
        self._forget_child(parent, d)
        self._touch(parent)
        return d

    async def _check_empty(self, d: Inode) -> None:
        if d.shadows or self._has_local_descendants(d):
            raise NotEmpty(f"{self.path_of(d)} is not empty")
        page = await self.s3(self.store.list_page, d.bucket, d.prefix, None, 2, None)
        if any(o.key != d.prefix for o in page.objects):
            raise NotEmpty(f"{self.path_of(d)} is not empty")

    # -- rename ------------------------------------------------------------

    async def rename(
        self, old_parent: Inode, old_raw: bytes, new_parent: Inode, new_raw: bytes, noreplace: bool
    ) -> tuple[Inode, Inode | None]:
        """Move a file or directory; returns (moved inode, replaced inode or None)."""
        self._writable_parent(old_parent)
        self._writable_parent(new_parent)
        new_name = name_to_str(new_raw)
        src = await self._existing(old_parent, old_raw)
        if old_parent.bucket != new_parent.bucket:
            raise CrossBucket("rename between buckets is not supported; copy, then delete")
        if (
            src.is_dir
            and (new_parent.key + "/").startswith(src.key + "/")
            and new_parent.bucket == src.bucket
        ):
            raise NotPermitted(f"cannot move {self.path_of(src)} into itself")
        dst = await self.lookup(new_parent, new_raw)
        if dst is src:
            return src, None
        if dst is not None:
            if noreplace:
                raise AlreadyExists(f"{self.path_of(dst)} exists")
            if src.is_dir and not dst.is_dir:
                raise NotDirectory(f"{self.path_of(dst)} is not a directory")
            if dst.is_dir and not src.is_dir:
                raise IsDirectory(f"{self.path_of(dst)} is a directory")
            if dst.is_dir:
                await self._check_empty(dst)
        new_key = join(new_parent.key, new_name)
        await self._keep_parent(old_parent)
        if dst is not None:
            # The replaced file goes first: an upload of it still on its way could
            # otherwise land on the key after the moved file's copy.
            await self._settle(dst)
            replaced_in_s3 = not dst.is_dir and not dst.local
            self._discard_data(dst)
            self._forget_child(self.inodes.get(dst.parent), dst)
            if replaced_in_s3 and src.local:
                # No copy will overwrite the replaced object: it must not outlive the rename.
                await self.s3(self.store.delete, dst.bucket, dst.key)
        if src.is_dir:
            await self._rename_dir(src, new_key)
        else:
            await self._rename_file(src, new_key)
        self._forget_child(old_parent, src)
        self._rekey(src, new_parent, new_name, new_key)
        self._place(new_parent, new_name, src)
        self._touch(old_parent)
        self._touch(new_parent)
        return src, dst

    def _rekey(self, inode: Inode, parent: Inode, name: str, key: str) -> None:
        self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
        inode.parent, inode.name, inode.key, inode.gone = parent.ino, name, key, False
        inode.changed = time.monotonic()
        self.by_ident[(inode.bucket, key, inode.is_dir)] = inode.ino

    async def _rename_file(self, src: Inode, new_key: str) -> None:
        if src.local:
            # Nothing in S3 yet: the first upload goes to the new key.
            self.cache.journal.rename(src.bucket, src.key, new_key)
            return
        await self.commit(src)
        info = await self.s3(self.store.copy, src.bucket, src.key, new_key, src.size, None, None)
        await self.s3(self.store.delete, src.bucket, src.key)
        src.etag, src.last_modified = info.etag, info.last_modified

    async def _rename_dir(self, d: Inode, new_key: str) -> None:
        """Copy every key under the prefix, then delete the old ones (crash-safe order).

        A crash part-way leaves every object in the old place, the new one or both,
        never in neither: copies all finish before the first delete, and the old
        marker is deleted last so the old directory exists until the end.
        """
        old_pre, new_pre = d.key + "/", new_key + "/"
        for inode in list(self.inodes.values()):
            if (
                inode.bucket == d.bucket
                and inode.key.startswith(old_pre)
                and inode.dirty
                and not inode.local
            ):
                await self.commit(inode)
        # From here no upload under the old prefix starts (commit waits for the move),
        # and the ones already on their way finish before the listing.
        done = trio.Event()
        self.moving.append((d.bucket, old_pre, done))
        try:
            for inode in list(self.inodes.values()):
                if inode.bucket == d.bucket and inode.key.startswith(old_pre):
                    await self._settle(inode)
            await self._move_keys(d, old_pre, new_pre)
        finally:
            self.moving.remove((d.bucket, old_pre, done))
            done.set()

    async def _move_keys(self, d: Inode, old_pre: str, new_pre: str) -> None:
        # Journaled first: if fedfs dies part-way, the next start finishes the move.
        self.cache.journal.begin_move(d.bucket, old_pre, new_pre)
        await self._copy_then_delete(d.bucket, old_pre, new_pre, metadata_for(d))
        d.has_marker = True
        self.cache.journal.end_move(d.bucket, old_pre)
        # Re-key every inode below, so inode numbers survive the move.
        for inode in list(self.inodes.values()):
            if inode.bucket == d.bucket and inode.key.startswith(old_pre) and not inode.gone:
                self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
                new_child_key = new_pre + inode.key[len(old_pre) :]
                if inode.staging is not None:
                    self.cache.journal.rename(inode.bucket, inode.key, new_child_key)
                inode.key = new_child_key
                inode.changed = time.monotonic()
                self.by_ident[(inode.bucket, inode.key, inode.is_dir)] = inode.ino

    async def finish_moves(self) -> None:
        """Finish the directory renames that were under way when fedfs stopped (at start-up).

        The keys still under the old prefix are the data (the copies were made from
        them), so copying them again and deleting them completes the rename.
        """
        for bucket, old_pre, new_pre in self.cache.journal.moves():
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
            self.cache.journal.end_move(bucket, old_pre)

    async def _copy_then_delete(
        self, bucket: str, old_pre: str, new_pre: str, marker_meta: dict[str, str] | None
    ) -> None:
        """Copy every key under old_pre to new_pre, the marker last, then delete the old keys.

        marker_meta: the new marker's metadata when the old prefix has no marker (None: none).
        """
        keys: list[ObjectInfo] = []
        for page in await self.s3(lambda: list(self.store.list_all(bucket, old_pre, None))):
            keys.extend(page.objects)
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

        await concurrently(*(functools.partial(copy, o) for o in children))
        # The new marker goes last among the writes, so a half-copied tree is recognisable.
        if marker is not None:
            await copy(marker)
        elif marker_meta is not None:
            await self.s3(self.store.put_bytes, bucket, new_pre, b"", marker_meta, DIR_CONTENT_TYPE)
        await self.s3(self.store.delete_many, bucket, [o.key for o in children])
        if marker is not None:
            await self.s3(self.store.delete, bucket, old_pre)

    # -- attributes --------------------------------------------------------

    async def set_attrs(
        self,
        inode: Inode,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        mtime_ns: int | None = None,
        size: int | None = None,
        mask: int | bool | None = False,
    ) -> None:
        """Change attributes and store them; mask False leaves the explicit mask alone."""
        if inode.ino == ROOT_INO or inode.is_bucket_root:
            if size is None and mode is None and uid is None and gid is None and mask is False:
                return  # touching a bucket root changes nothing that is stored
            raise NotPermitted(
                "a bucket root's owner and mode come from the config ([[buckets]] owner)"
            )
        if size is not None:
            if inode.is_dir:
                raise IsDirectory(f"{self.path_of(inode)} is a directory")
            await self.truncate(inode, size)
        if mode is not None:
            inode.mode = honoured_mode(mode, inode.is_dir)
        if mask is not False:
            inode.explicit_mask = (
                mask if isinstance(mask, int) and not isinstance(mask, bool) else None
            )
        if uid is not None:
            inode.uid = uid
        if gid is not None:
            inode.gid = gid
        inode.mtime_ns = mtime_ns if mtime_ns is not None else inode.mtime_ns
        inode.ctime_ns = time.time_ns()
        if size is not None and mtime_ns is None:
            inode.mtime_ns = inode.ctime_ns
        await self._store_metadata(inode)

    async def _store_metadata(self, inode: Inode) -> None:
        """Persist the POSIX attributes: in the next upload if dirty, else by CopyObject/PUT."""
        meta = metadata_for(inode)
        if sum(len(k) + len(v) for k, v in meta.items()) > MAX_USER_METADATA:
            raise NoSpace(f"{self.path_of(inode)}: attributes exceed the 2 KiB of S3 user metadata")
        if inode.dirty:
            # The next upload carries the attributes; record them with the queued data,
            # and make an upload already on its way leave the file dirty.
            if inode.staging is not None:
                inode.staging.generation += 1
            if inode.writers == 0:
                self.closed(inode)
            else:
                self._journal(inode, "open")
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
        self, inode: Inode, name: str, value: bytes, replace_only: bool, create_only: bool
    ) -> None:
        self._user_xattr(name)
        await self.revalidate(inode)
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

    async def remove_xattr(self, inode: Inode, name: str) -> None:
        self._user_xattr(name)
        await self.revalidate(inode)
        if name not in inode.xattrs:
            raise NoAttribute(f"attribute {name} does not exist")
        del inode.xattrs[name]
        await self.set_attrs(inode)

    async def get_xattr(self, inode: Inode, name: str) -> bytes:
        await self.revalidate(inode)
        if name not in inode.xattrs:
            raise NoAttribute(f"attribute {name} does not exist")
        return inode.xattrs[name]

    def _user_xattr(self, name: str) -> None:
        if not name.startswith("user.") or len(name) <= 5:
            raise NotSupported(f"only user.* extended attributes are stored, not {name!r}")

    # -- data --------------------------------------------------------------

    def _journal(self, inode: Inode, state: str, durable: bool = False) -> None:
        st = inode.staging
        assert st is not None
        self.cache.journal.record(
            DirtyFile(
                bucket=inode.bucket,
                key=inode.key,
                staging=st.name,
                metadata=metadata_for(inode),
                base_etag=inode.base_etag,
                state=state,
                queued_at=time.time(),
            ),
            durable=durable,
        )

    def _stage(self, inode: Inode, st: Staging) -> Staging:
        inode.staging = st
        inode.base_etag = None if inode.local else inode.etag
        self._journal(inode, "open")
        return st

    async def open_for_write(self, inode: Inode) -> Staging:
        """The staging copy that writes go to, holding the current content."""
        if inode.staging is None:
            st = await self.cache.stage_existing(inode.bucket, inode.key, inode.etag, inode.size)
            if inode.staging is None:
                self._stage(inode, st)
            else:
                # Another open staged the file while this one fetched it, and its writer
                # may have written already: keep that copy, never swap in an older one.
                st.close()
        assert inode.staging is not None
        return inode.staging

    async def truncate(self, inode: Inode, size: int) -> None:
        while True:
            if inode.staging is None:
                if size == 0:
                    self._stage(inode, self.cache.new_staging())
                else:
                    await self.open_for_write(inode)
            st = inode.staging
            assert st is not None
            if size > st.size:
                await self.cache.wait_for_room(size - st.size)
            if st.lock.locked():
                async with st.lock:  # an upload is reading the staging copy: not under it
                    pass
            if inode.staging is st:
                break  # else it moved into the clean cache meanwhile: stage again
        st.truncate(size)
        inode.size = size

    def touch_written(self, inode: Inode) -> None:
        if inode.mtime_pending:
            inode.mtime_pending = False
            inode.mtime_ns = inode.ctime_ns = inode.written_mtime_ns or time.time_ns()
            inode.written_mtime_ns = 0

    def closed(self, inode: Inode) -> None:
        """A writer closed the file: record it as queued and hand it to the flusher."""
        self.touch_written(inode)
        if inode.dirty and inode.staging is not None and not inode.gone:
            self._journal(inode, "queued")
            if self.flusher is not None:
                self.flusher.queue(inode)

    async def make_durable(self, inode: Inode) -> None:
        """fsync in "local" mode: the data and its journal row survive a crash of the node."""
        self.touch_written(inode)
        st = inode.staging
        if st is not None and st.dirty and not inode.gone:
            await trio.to_thread.run_sync(st.sync)
            self._journal(inode, "queued" if inode.writers == 0 else "open", durable=True)

    async def commit(self, inode: Inode) -> None:
        """Upload a dirty file's staged content with its metadata now; raises on failure.

        A writer elsewhere is detected, not overwritten: a new file is uploaded
        with If-None-Match, an existing one only if its ETag is still the one we
        staged from. On a conflict the other version stays under the key and ours
        is kept beside it as KEY.fedfs-conflict-NODE-TIME (logged).
        """
        st = inode.staging
        if st is None or inode.gone:
            return
        self.touch_written(inode)
        while True:
            # A directory rename under way moves this file's key: upload after it.
            while (move := self._move_of(inode)) is not None:
                await move.wait()
            async with st.lock:
                if self._move_of(inode) is None:
                    await self._upload_locked(inode, st)
                    break
        if not st.dirty and inode.open_count == 0 and inode.staging is st:
            self._adopt(inode)

    def _move_of(self, inode: Inode) -> trio.Event | None:
        for bucket, prefix, done in self.moving:
            if inode.bucket == bucket and inode.key.startswith(prefix):
                return done
        return None

    async def _upload_locked(self, inode: Inode, st: Staging) -> None:
        if not st.dirty or inode.gone:
            return
        generation, key, bucket = st.generation, inode.key, inode.bucket
        meta = metadata_for(inode)
        new = inode.base_etag is None
        conflict = False
        if not new or st.size >= self.store.cfg.multipart_threshold:
            current = await self.s3(self.store.head, bucket, key)
            conflict = current is not None and current.etag != inode.base_etag
        if not conflict:
            try:
                info = await self.s3(
                    self.store.upload_file, bucket, key, st.upload_path(), meta, None, new
                )
            except PreconditionFailed:
                conflict = True
        if conflict:
            await self._keep_conflicting(inode, st, meta)
            return
        if inode.gone or inode.key != key:
            # Removed or renamed while uploading: the upload must not resurrect the old
            # name, and a renamed file still has to reach its new key.
            await self.s3(self.store.delete, bucket, key)
            if not inode.gone and self.flusher is not None:
                self.flusher.queue(inode, delay=0)
            return
        if st.generation == generation:
            st.dirty = False
            self.cache.journal.forget(bucket, key, st.name)
        inode.local = False
        # The attributes here are what was uploaded or newer (a chmod during the upload):
        # take only what the store decided.
        inode.etag, inode.last_modified = info.etag, info.last_modified
        inode.checked = inode.changed = time.monotonic()
        inode.size = st.size
        inode.base_etag = info.etag
        inode.kernel_etag = info.etag  # the kernel's pages hold what we just wrote

    async def _keep_conflicting(self, inode: Inode, st: Staging, meta: dict[str, str]) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ckey = f"{inode.key}.fedfs-conflict-{self.node}-{stamp}"
        await self.s3(
            self.store.upload_file, inode.bucket, ckey, st.upload_path(), meta, None, False
        )
        event(
            log,
            "upload-conflict",
            severity=logging.WARNING,
            path=self.path_of(inode),
            bucket=inode.bucket,
            key=inode.key,
            kept_as=ckey,
            msg="another writer changed the object since this node read it; its version "
            "stays under the key and this node's version is kept beside it",
        )
        self.conflicts += 1
        st.dirty = False
        self.cache.journal.forget(inode.bucket, inode.key, st.name)
        inode.local = False
        inode.checked = -math.inf  # show the other writer's version from now on
        if inode.open_count == 0:
            st.close()
            inode.staging = None

    def _adopt(self, inode: Inode) -> None:
        """The uploaded staging copy becomes clean cached data of its new version."""
        st = inode.staging
        if st is not None and inode.etag and not inode.gone:
            self.cache.adopt(st, inode.bucket, inode.key, inode.etag)
        elif st is not None:
            st.close()
        inode.staging = None

    async def release_data(self, inode: Inode) -> None:
        """After the last close: a clean staging copy moves into the clean cache."""
        st = inode.staging
        if st is None or inode.open_count > 0 or st.dirty:
            return  # dirty data waits for the flusher
        self._adopt(inode)


class DirListing:
    """One open directory: a snapshot listing filled page by page, with stable offsets."""

    def __init__(self, ns: Namespace, d: Inode) -> None:
        self.ns, self.dir = ns, d
        self.entries: list[tuple[str, Inode]] = []
        self.done = False
        self.token: str | None = None
        self.seen: set[str] = set()
        self.held: list[ObjectInfo] = []
        self.started = False
        self.started_at = math.inf

    async def entry(self, index: int) -> tuple[str, Inode] | None:
        """The index-th entry, listing more pages from S3 as needed."""
        while index >= len(self.entries) and not self.done:
            await self._next_page()
        return self.entries[index] if index < len(self.entries) else None

    def _add(self, name: str, inode: Inode) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.entries.append((name, inode))

    def _add_shadowed(self) -> None:
        """The file this directory shadows, as SHADOW_NAME, unless a real key has that name."""
        ns, d = self.ns, self.dir
        if not d.shadows:
            return
        if SHADOW_NAME in self.seen:
            report_shadow_taken(d.bucket, d.key)
            return
        self._add(SHADOW_NAME, ns._child(ns.inodes[d.parent], d.name, Kind.FILE))

    async def _next_page(self) -> None:
        ns, d = self.ns, self.dir
        if d.ino == ROOT_INO or (not self.started and ns.listing_fresh(d)):
            assert d.children is not None
            for name, ino in sorted(d.children.items()):
                inode = ns.inodes.get(ino)
                if inode is not None and not inode.gone:
                    self._add(name, inode)
            self._add_shadowed()
            self.done = True
            return
        if not self.started:
            self.started_at = time.monotonic()
        self.started = True
        asked = time.monotonic()
        page = await ns.s3(ns.store.list_page, d.bucket, d.prefix, self.token)
        self.token = page.next_token
        pre = d.prefix
        new: list[Inode] = []
        dirs: set[str] = set()
        for p in page.prefixes:
            name = p[len(pre) : -1]
            problem = key_problem(p)
            if problem:
                report_hidden(d.bucket, p, problem)
                continue
            dirs.add(name)
        objects = self.held + page.objects
        self.held = []
        if self.token:
            # A file `foo` may be shadowed by a prefix `foo/` that comes in the next page.
            last = max([o.key for o in page.objects] + page.prefixes, default="")
            self.held = [o for o in objects if last.startswith(o.key)]
            objects = [o for o in objects if not last.startswith(o.key)]
        for o in objects:
            if o.key == pre:
                d.has_marker = True
                continue
            name = o.key[len(pre) :]
            problem = key_problem(o.key)
            if problem:
                report_hidden(d.bucket, o.key, problem)
                continue
            if name in dirs or name in self.seen:
                sub = ns._child(d, name, Kind.DIR)
                sub.shadows = True
                continue
            known = ns.by_ident.get((d.bucket, o.key, False))
            if known is not None and ns.inodes[known].changed > asked:
                self._add(name, ns.inodes[known])  # changed here since this page was asked for
                continue
            f = ns._child(d, name, Kind.FILE)
            if not f.dirty and f.etag == o.etag and not f.last_modified:
                f.last_modified = o.last_modified  # our own upload: now we know its time
            # HEAD answers in whole seconds, listings (Ceph) in milliseconds: compare seconds.
            elif not f.dirty and (f.etag != o.etag or int(f.last_modified) != int(o.last_modified)):
                f.size, f.etag, f.last_modified = o.size, o.etag, o.last_modified
                f.meta_known = False
                if f.mtime_ns == 0:
                    f.mtime_ns = f.ctime_ns = int(o.last_modified * 1e9)
            elif not f.dirty and f.meta_known:
                # Same ETag and time as when its metadata was read: a change of content or
                # of metadata (a CopyObject) would have moved them, so the listing confirms
                # the attributes as well as a HEAD would.
                f.checked = asked
            self._add(name, f)
            new.append(f)
        for name in sorted(dirs):
            sub = ns._child(d, name, Kind.DIR)
            self._add(name, sub)
            new.append(sub)
        ns.prefetch_metadata(new)
        if not self.token:
            self._finish()

    def _finish(self) -> None:
        ns, d = self.ns, self.dir
        for o in self.held:
            self._add(o.key[len(d.prefix) :], ns._child(d, o.key[len(d.prefix) :], Kind.FILE))
        self.held = []
        # Files created here and not uploaded yet are part of the directory too, and so
        # is anything this node put here after the listing began.
        recent = time.monotonic() - PLACED_MEMORY
        keep = set()
        for ino in d.placed:
            inode = ns.inodes[ino]
            if inode.gone or inode.parent != d.ino:
                continue
            if inode.local or inode.changed > self.started_at:
                self._add(inode.name, inode)
            if inode.local or inode.changed > recent:
                keep.add(ino)
        d.placed = keep
        self._add_shadowed()
        # The shadowed file is the parent's child, not this directory's; a real key is.
        d.children = {
            name: inode.ino
            for name, inode in self.entries
            if name != SHADOW_NAME or inode.parent == d.ino
        }
        d.listed = time.monotonic()
        d.misses = 0
        self.done = True
