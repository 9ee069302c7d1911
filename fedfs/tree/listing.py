"""Directory listings: `DirListing` pages, when to list again, and metadata prefetch.

Owns what a listing of a prefix means: common prefixes become directories,
keys that are no POSIX names are hidden (and reported), a file shadowed by a
prefix of the same name shows as SHADOW_NAME, files this node created and
did not upload yet are listed too. The pages of a directory whose keys' spread
is known come in parallel ranges (tree/pages.py). Also owns the listing lifetime
(`fs.dir_timeout`), one listing at a time per directory when a lookup lists
again, the background HEADs that read listed entries' metadata, and the use
of the shared metadata index (meta/dir_index.py): entries it describes as the
listing shows them need no HEAD, and a listing that needed HEADs writes the
directory's index again once they are done. At a bucket's root the index
objects' prefix is not shown.

Concurrency: runs in the trio thread; prefetch workers, and the task that
lists an open directory's pages ahead of readdir, run in the daemon's
nursery. State may change at every `await`, so each operation re-reads what
it needs after awaiting and never holds a reference to a dict entry across
an await it depends on: an entry this node changed after a page was asked
for keeps what this node knows.

May call: the inode table, revalidation (prefetch), names, and the store
through worker threads.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable

import trio

from fedfs.data.cache import Staging
from fedfs.errors import NotDirectory, Unavailable
from fedfs.meta.dir_index import DirIndexes, apply_entry, entry_of, usable
from fedfs.meta.index_format import INDEX_PREFIX, IndexEntry, listed_ms
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.store.s3 import ListPage, ObjectInfo, ObjectStore
from fedfs.store.threads import WorkerThreads
from fedfs.tree.inodes import Inodes
from fedfs.tree.names import SHADOW_NAME, key_problem, report_hidden, report_shadow_taken
from fedfs.tree.pages import PAGE, Pages
from fedfs.tree.revalidate import Revalidation

log = logging.getLogger(__name__)

# How long a directory remembers what this node put in it, for listings that raced
# the upload (far longer than any listing takes).
PLACED_MEMORY = 300.0
# Keys in one ListObjectsV2 page: a directory with fewer entries is listed again to answer
# a lookup of a name its last listing did not have (see Listings.relist_rather).
SMALL_DIR = 1000
# Directories whose loaded metadata index is kept in memory for their next listings.
# (Another node's newer index is read again after INDEX_KEPT_FOR seconds.)
INDEXES_KEPT = 64
INDEX_KEPT_FOR = 60.0
# Directories with fewer listed files have no metadata index: their HEADs, in parallel,
# take about as long as reading one, and the bucket keeps no index objects for them.
INDEX_MIN_FILES = 64


class Listings:
    """Listings of the directories of one mount, and the metadata prefetch they start."""

    def __init__(
        self,
        inodes: Inodes,
        store: ObjectStore,
        s3: WorkerThreads,
        revalidation: Revalidation,
        dir_ttl: float,
        indexes: DirIndexes,
    ) -> None:
        self.inodes = inodes
        self.store = store
        self.s3 = s3
        self.revalidation = revalidation
        self.dir_ttl = dir_ttl
        self.indexes = indexes
        revalidation.by_listing = self.confirm_by_listing
        # The index each directory's latest listing loaded: the next listings of it use
        # it too (its entries are checked against every listing, so an old one costs
        # HEADs, never a wrong answer); and the directories whose index is being written.
        self.index_of: dict[int, tuple[float, dict[str, IndexEntry]]] = {}
        self.indexing: set[int] = set()
        self.relisting: dict[int, trio.Event] = {}  # directories with a listing on its way
        self.nursery: trio.Nursery | None = None  # set by the daemon, for metadata prefetch
        # Listed entries whose metadata is to be read, in listing order, and the workers
        # reading them (at most one per S3 connection).
        self.to_prefetch: deque[Inode[Staging]] = deque()
        self.prefetchers = 0

    def listing_fresh(self, inode: Inode[Staging]) -> bool:
        return inode.children is not None and time.monotonic() - inode.listed < self.dir_ttl

    def open(self, d: Inode[Staging]) -> DirListing:
        """A listing of d for one open directory handle."""
        if not d.is_dir:
            raise NotDirectory(f"{d.path} is not a directory")
        return DirListing(self, d)

    def relist_rather(self, d: Inode[Staging]) -> bool:
        """Whether to answer a missing name by listing d again rather than asking for it.

        A small directory: always (one request). A large one once the names asked for
        (and, from Revalidation.by_listing, files whose attributes expired)
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

    async def confirm_by_listing(self, f: Inode[Staging]) -> bool:
        """Re-read a listed file's attributes by listing its directory again, if that is cheaper.

        Once the files of a directory asked about since its last listing (getattr, lookup)
        would cost as many requests as a listing, one listing confirms them all: same ETag
        and LastModified means same attributes. So a repeated `ls -l` of a large directory
        costs about one listing per lifetime, not a HEAD per file. True if it listed.
        """
        d = self.inodes.by_ino.get(f.parent)
        if d is None or d.ino == ROOT_INO or d.children is None or d.children.get(f.name) != f.ino:
            return False
        pending = self.relisting.get(d.ino)
        if pending is not None:
            await pending.wait()
            return True
        if self.listing_fresh(d):
            return False
        if len(d.children) < SMALL_DIR:
            d.misses += 1  # a single stat: one HEAD; a second file asked about: list
            if d.misses < 2:
                return False
        elif not self.relist_rather(d):
            return False
        try:
            await self.relist(d)
        except Unavailable:
            return False  # the HEAD that follows says so, or serves what is known
        return True

    async def relist(self, d: Inode[Staging]) -> None:
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

    def prefetch_metadata(self, inodes: list[Inode[Staging]]) -> None:
        """Fetch unknown metadata for listed entries in the background (speeds up `ls -l`).

        One queue in listing order (first come, first read), by as many workers as S3
        connections, so readdir, which waits for each entry's metadata before handing it
        to the kernel, gets the first ones first, also while later pages arrive.
        """
        if self.nursery is None:
            return
        self.to_prefetch.extend(i for i in inodes if not i.meta_known and not i.dirty)
        wanted = min(len(self.to_prefetch), max(1, int(self.s3.limiter.total_tokens)))
        for _ in range(wanted - self.prefetchers):
            self.prefetchers += 1
            self.nursery.start_soon(self._prefetcher)

    async def _prefetcher(self) -> None:
        try:
            while self.to_prefetch:
                inode = self.to_prefetch.popleft()
                if inode.meta_known or inode.dirty or inode.gone:
                    continue  # read meanwhile (readdir, a lookup, the index)
                try:
                    await self.revalidation.revalidate(inode)
                except Exception as e:  # a prefetch failure is harmless: getattr retries
                    log.debug("metadata prefetch of %s failed: %s", inode.path, e)
        finally:
            self.prefetchers -= 1

    def index_later(
        self, d: Inode[Staging], listed: dict[str, ObjectInfo], before: dict[str, IndexEntry]
    ) -> None:
        """Once the HEADs a complete listing of d started are answered, write d's index."""
        if self.nursery is not None and self.indexes.enabled and d.ino not in self.indexing:
            self.indexing.add(d.ino)
            self.nursery.start_soon(self._write_index, d, listed, before)

    async def _write_index(
        self, d: Inode[Staging], listed: dict[str, ObjectInfo], before: dict[str, IndexEntry]
    ) -> None:
        try:
            await self._write_index_now(d, listed, before)
        finally:
            self.indexing.discard(d.ino)

    async def load_index(self, d: Inode[Staging]) -> dict[str, IndexEntry]:
        """d's index as its latest listing loaded it, else from the store."""
        kept = self.index_of.get(d.ino)
        if kept is not None and time.monotonic() - kept[0] < INDEX_KEPT_FOR:
            return kept[1]
        index = await self.indexes.load(d.bucket, d.prefix)
        self.index_of.pop(d.ino, None)
        if len(self.index_of) >= INDEXES_KEPT:
            self.index_of.pop(next(iter(self.index_of)))
        self.index_of[d.ino] = (time.monotonic(), index)
        return index

    async def _write_index_now(
        self, d: Inode[Staging], listed: dict[str, ObjectInfo], before: dict[str, IndexEntry]
    ) -> None:
        files = {name: self.inodes.find(d.bucket, o.key, False) for name, o in listed.items()}
        for f in files.values():
            if f is not None and not (f.meta_known or f.dirty or f.gone):
                try:  # joins the prefetch's or readdir's HEAD, or sends the one not sent yet
                    await self.revalidation.revalidate(f)
                except Exception as e:  # that entry is left out of the index
                    log.debug("metadata of %s for the index: %s", f.path, e)
        entries: dict[str, IndexEntry] = {}
        for name, o in listed.items():
            f = files[name]
            entry = entry_of(f, o) if f is not None else None
            if entry is not None:
                entries[name] = entry
        if entries != before:
            await self.indexes.save(d.bucket, d.prefix, entries)
            self.index_of[d.ino] = (time.monotonic(), entries)


class DirListing:
    """One open directory: a snapshot listing filled page by page, with stable offsets."""

    def __init__(self, listings: Listings, d: Inode[Staging]) -> None:
        self.listings, self.dir = listings, d
        self.entries: list[tuple[str, Inode[Staging]]] = []
        self.done = False
        self.more = False  # the last page handed out was not the listing's last
        self.pages = Pages(self._fetch, listings.nursery)
        self.seen: set[str] = set()
        self.held: list[ObjectInfo] = []
        self.started = False
        self.started_at = math.inf
        self.newest = 0.0  # the latest LastModified among the objects listed here
        # The shared metadata index: loaded once a page shows an object whose metadata
        # is unknown (None: not loaded), and the listed files it is written from.
        self.index: dict[str, IndexEntry] | None = None
        self.listed: dict[str, ObjectInfo] = {}
        self.index_stale = False  # some listed object was not described by the index
        # The background task listing pages ahead of entry(): running, its failure for
        # entry() to raise, and the event set whenever a page arrived (or it stopped).
        self.filling = False
        self.ready = 0  # entries of the pages processed whole (their index applied)
        self.failed: Exception | None = None
        self.arrived = trio.Event()

    async def _fetch(self, token: str | None, start_after: str | None) -> ListPage:
        ls, d = self.listings, self.dir
        return await ls.s3(ls.store.list_page, d.bucket, d.prefix, token, PAGE, "/", start_after)

    def _plan(self, names: Iterable[str]) -> None:
        """List the rest in parallel ranges, split at these file names (pages.py)."""
        pre = self.dir.prefix
        self.pages.plan(pre + name for name in names)

    async def entry(self, index: int) -> tuple[str, Inode[Staging]] | None:
        """The index-th entry (None past the end).

        An entry whose metadata is known (listed before with the same ETag and time, or
        described by the directory's metadata index) goes out as soon as its page is
        here, while the next pages are listed in the background: `ls -l`, which stats
        each entry as it reads it, works through the first pages of a large directory
        while the rest are on their way, so a repeated listing takes about as long as
        the listing itself rather than the listing and then the kernel's round trips.

        The first entry whose metadata is unknown waits for all pages: the metadata reads
        of every page start as it arrives, and lookups of names the kernel already had
        (their entries expire while a large first `ls -l` waits for metadata) are
        answered from the complete listing instead of S3.
        """
        while True:
            if index < (len(self.entries) if self.done else self.ready):
                node = self.entries[index][1]
                if self.done or node.meta_known or node.dirty:
                    return self.entries[index]
                while not self.done:
                    await self._more()
                continue
            if self.done:
                return None
            await self._more()

    async def _more(self) -> None:
        """Wait for the next page; with a nursery a background task lists ahead of readdir."""
        nursery = self.listings.nursery
        if nursery is None:
            await self._next_page()
            return
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed
        arrived = self.arrived
        if not self.filling:
            self.filling = True
            nursery.start_soon(self._fill)
        await arrived.wait()

    async def _fill(self) -> None:
        """List the remaining pages one after another, waking entry() after each."""
        try:
            while not self.done:
                await self._next_page()
                self._wake()
        except Exception as e:  # entry() raises it to its caller; the next call lists again
            self.failed = e
        finally:
            self.filling = False
            self._wake()

    def _wake(self) -> None:
        self.arrived.set()
        self.arrived = trio.Event()

    def _add(self, name: str, inode: Inode[Staging]) -> None:
        if name not in self.seen:
            self.seen.add(name)
            self.entries.append((name, inode))

    def _add_shadowed(self) -> None:
        """The file this directory shadows, as SHADOW_NAME, unless a real key has that name."""
        inodes, d = self.listings.inodes, self.dir
        if not d.shadows:
            return
        if SHADOW_NAME in self.seen:
            report_shadow_taken(d.bucket, d.key)
            return
        self._add(SHADOW_NAME, inodes.child(inodes.by_ino[d.parent], d.name, Kind.FILE))

    async def _next_page(self) -> None:
        ls, d = self.listings, self.dir
        inodes = ls.inodes
        if d.ino == ROOT_INO or (not self.started and ls.listing_fresh(d)):
            assert d.children is not None
            for name, ino in sorted(d.children.items()):
                inode = inodes.by_ino.get(ino)
                if inode is not None and not inode.gone:
                    self._add(name, inode)
            self._add_shadowed()
            self.done = True
            return
        if not self.started:
            self.started_at = time.monotonic()
            if d.children is not None and len(d.children) > PAGE:
                # Listed before: its keys' spread is known, so its pages can be listed
                # side by side (the files of its last listing split it into ranges).
                by_ino = inodes.by_ino
                self._plan(
                    name
                    for name, ino in d.children.items()
                    if name != SHADOW_NAME
                    and (i := by_ino.get(ino)) is not None
                    and i.kind is not Kind.DIR
                )
        self.started = True
        page, asked, self.more = await self.pages.next()
        pre = d.prefix
        new: list[Inode[Staging]] = []
        dirs: set[str] = set()
        for p in page.prefixes:
            name = p[len(pre) : -1]
            problem = key_problem(p)
            if not d.key and p == INDEX_PREFIX:
                continue  # the shared metadata index (meta/dir_index.py), not a directory
            if problem:
                report_hidden(d.bucket, p, problem)
                continue
            dirs.add(name)
        objects = self.held + page.objects
        self.newest = max([self.newest, *(o.last_modified for o in page.objects if o.key != pre)])
        self.held = []
        if self.more:
            # A file `foo` may be shadowed by a prefix `foo/` that comes in the next page:
            # held while the greatest key listed so far (not only on this page, which may be
            # an empty range) still starts with its name.
            last = self.pages.last or ""
            self.held = [o for o in objects if last.startswith(o.key)]
            objects = [o for o in objects if not last.startswith(o.key)]
        unknown: list[tuple[Inode[Staging], ObjectInfo]] = []
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
                sub = inodes.child(d, name, Kind.DIR)
                sub.shadows = True
                continue
            known = inodes.find(d.bucket, o.key, False)
            if known is not None and known.changed > asked:
                self._add(name, known)  # changed here since this page was asked for
                continue
            f = inodes.child(d, name, Kind.FILE)
            if not f.dirty and f.etag == o.etag and not f.last_modified:
                f.last_modified = o.last_modified  # our own upload: now we know its time
            # HEAD answers in whole seconds, listings (Ceph) in milliseconds: compare seconds,
            # and milliseconds with what the last listing showed (a copy in place within the
            # second keeps the ETag and the second).
            elif not f.dirty and (
                f.etag != o.etag
                or int(f.last_modified) != int(o.last_modified)
                or f.listed_ms not in (None, listed_ms(o.last_modified))
            ):
                f.size, f.etag, f.last_modified = o.size, o.etag, o.last_modified
                f.meta_known = False
                f.listed_ms = listed_ms(o.last_modified)
                if f.mtime_ns == 0:
                    f.mtime_ns = f.ctime_ns = int(o.last_modified * 1e9)
            elif not f.dirty and f.meta_known:
                # Same ETag and time as when its metadata was read: a change of content or
                # of metadata (a CopyObject) would have moved them, so the listing confirms
                # the attributes as well as a HEAD would.
                f.checked = asked
                f.listed_ms = listed_ms(o.last_modified)
            if not f.dirty:
                self.listed[name] = o
                if not f.meta_known:
                    unknown.append((f, o))
            self._add(name, f)
            new.append(f)
        if unknown:
            await self._from_index(unknown, asked)
            if self.index is not None and self.more:
                self._plan(self.index)  # a directory this node has not listed: its index
        for name in sorted(dirs):
            sub = inodes.child(d, name, Kind.DIR)
            self._add(name, sub)
            new.append(sub)
        ls.prefetch_metadata(new)
        self.ready = len(self.entries)
        if not self.more:
            self._finish()

    async def _from_index(
        self, unknown: list[tuple[Inode[Staging], ObjectInfo]], asked: float
    ) -> None:
        """Take listed objects' metadata from the directory's index where it describes them."""
        ls, d = self.listings, self.dir
        if not ls.indexes.enabled or len(self.listed) < INDEX_MIN_FILES:
            return  # a few HEADs in parallel: no index object for a small directory
        if self.index is None:
            self.index = await ls.load_index(d)
        for f, o in unknown:
            entry = self.index.get(o.key[len(d.prefix) :])
            # Re-read after the await: only an entry still as the listing showed it.
            if (
                not f.dirty
                and not f.meta_known
                and not f.gone
                and f.etag == o.etag
                and f.changed <= asked
                and entry is not None
                and usable(entry, o)
            ):
                apply_entry(f, entry, o, ls.inodes.owners, ls.inodes.seal)
                f.checked = asked
            else:
                self.index_stale = True

    def _finish(self) -> None:
        inodes, d = self.listings.inodes, self.dir
        if self.index is not None and (self.index_stale or self.index.keys() - self.listed):
            self.listings.index_later(d, self.listed, self.index)
        for o in self.held:
            self._add(o.key[len(d.prefix) :], inodes.child(d, o.key[len(d.prefix) :], Kind.FILE))
        self.held = []
        # Files created here and not uploaded yet are part of the directory too, and so
        # is anything this node put here after the listing began.
        recent = time.monotonic() - PLACED_MEMORY
        keep = set()
        for ino in d.placed:
            inode = inodes.by_ino[ino]
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
        newest_ns = int(self.newest) * 1_000_000_000  # whole seconds, as a HEAD gives them
        # A directory that is only a prefix has no time of its own: it shows the newest
        # object its listing returned, as a directory shows its latest change.
        if (d.key and not d.has_marker and newest_ns) and (
            d.mtime_ns == inodes.started_ns or newest_ns > d.mtime_ns
        ):
            d.mtime_ns = d.ctime_ns = newest_ns
        d.listed = time.monotonic()
        d.misses = 0
        # What this listing confirmed is as fresh as the listing itself, whose names count
        # from its end too: an `ls -l` that stats entries after a listing of many pages
        # (longer than attr_timeout under load) is answered from it, not by a HEAD each.
        for _, inode in self.entries:
            if inode.checked >= self.started_at and not inode.dirty:
                inode.checked = d.listed
        self.done = True
