"""Lookups: finding the inode for a name in a directory.

Owns how a name is answered: from the directory's fresh listing, by listing
a small directory again, or by asking S3 whether the name is a file and/or a
prefix (both at once); a prefix shadows a file of the same name. Also owns
the negative cache: a name S3 just said is absent, so the create that
follows the kernel's LOOKUP need not ask again (`fs.negative_timeout`).
While the store does not answer, names are answered from the last listing.

Concurrency: runs in the trio thread. State may change at every `await`, so
each operation re-reads what it needs after awaiting and never holds a
reference to a dict entry across an await it depends on.

May call: the inode table, listings, revalidation, names, meta, and the
store through worker threads.
"""

from __future__ import annotations

import time

from fedfs.data.cache import Staging
from fedfs.errors import NotDirectory, NotFound, Unavailable
from fedfs.meta.dir_index import note_head
from fedfs.meta.index_format import INDEX_DIR_NAME
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.meta.object_meta import apply_info
from fedfs.store.s3 import ObjectInfo, ObjectStore
from fedfs.store.threads import WorkerThreads, concurrently
from fedfs.tree.inodes import Inodes
from fedfs.tree.listing import Listings
from fedfs.tree.names import SHADOW_NAME, join, name_to_str, report_shadow_taken
from fedfs.tree.revalidate import Revalidation


class Lookups:
    """Answers which inode a name in a directory is, for one mount."""

    def __init__(
        self,
        inodes: Inodes,
        store: ObjectStore,
        s3: WorkerThreads,
        revalidation: Revalidation,
        listings: Listings,
        negative_ttl: float,
    ) -> None:
        self.inodes = inodes
        self.store = store
        self.s3 = s3
        self.revalidation = revalidation
        self.listings = listings
        self.negative_ttl = negative_ttl
        self.absent: dict[tuple[int, str], float] = {}  # (parent ino, name) -> when S3 said no

    async def lookup(self, parent: Inode[Staging], raw_name: bytes) -> Inode[Staging] | None:
        if not parent.is_dir:
            raise NotDirectory(f"{parent.path} is not a directory")
        name = name_to_str(raw_name)
        inodes, revalidation = self.inodes, self.revalidation
        if parent.ino == ROOT_INO:
            ino = parent.children.get(name) if parent.children else None
            return inodes.by_ino[ino] if ino else None
        if parent.is_bucket_root and name == INDEX_DIR_NAME:
            return None  # the shared metadata index's objects are no part of the tree
        if name == SHADOW_NAME and parent.shadows:
            # A real key of that name is a real object and keeps its name; only without
            # one is the name the shadowed file's (one HEAD more, for a rare name).
            real = await self._lookup_key(parent, name)
            if real is not None:
                report_shadow_taken(parent.bucket, parent.key)
                return real
            alias = inodes.child(inodes.by_ino[parent.parent], parent.name, Kind.FILE)
            await revalidation.revalidate(alias)
            return alias
        return await self._lookup_key(parent, name)

    async def _lookup_key(self, parent: Inode[Staging], name: str) -> Inode[Staging] | None:
        """The object or prefix parent/name, from the listing if fresh, else from S3."""
        inodes, listings, revalidation = self.inodes, self.listings, self.revalidation
        if (
            not listings.listing_fresh(parent)
            and parent.children is not None
            and name not in parent.children
            and listings.relist_rather(parent)
        ):
            # A name the last listing did not have (a create's LOOKUP, typically): list the
            # directory again, requests that also answer the next names asked for within
            # dir_timeout, instead of a HEAD and a LIST for each name.
            try:
                await listings.relist(parent)
            except Unavailable:
                revalidation.note_outage()
                return None
        if listings.listing_fresh(parent):
            assert parent.children is not None
            ino = parent.children.get(name)
            if ino is None:
                return None
            inode = inodes.by_ino[ino]
            await revalidation.revalidate(inode)
            return None if inode.gone else inode
        # Not listed recently: ask S3 whether name is a file and/or a prefix, in parallel.
        key = join(parent.key, name)
        for kind in (Kind.DIR, Kind.FILE):
            known = inodes.find(parent.bucket, key, kind is Kind.DIR)
            if (
                known is None
                or known.gone
                or known.parent != parent.ino
                or not revalidation.fresh(known)
            ):
                continue
            if kind is Kind.DIR or not self._is_shadowed(parent, name):
                return known
        listed = await self._listed_file(parent, name)
        if listed is not None:
            return listed
        head: ObjectInfo | None = None
        marker: ObjectInfo | None = None
        is_prefix = False
        listed = inodes.find(parent.bucket, key, False)
        basis = (listed.etag, listed.listed_ms) if listed is not None else (None, None)

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
            revalidation.note_outage()
            return inodes.by_ino[ino] if ino is not None else None
        if is_prefix:
            d = inodes.child(parent, name, Kind.DIR)
            d.shadows = head is not None
            d.has_marker = marker is not None
            if marker is not None:
                apply_info(d, marker, inodes.owners, inodes.seal)
            else:
                d.checked = time.monotonic()
                d.meta_known = True
            if parent.children is not None:
                parent.children[name] = d.ino
            return d
        if head is not None:
            f = inodes.child(parent, name, Kind.FILE)
            apply_info(f, head, inodes.owners, inodes.seal)
            note_head(f, head, basis)  # what the shared metadata index may record
            if parent.children is not None:
                parent.children[name] = f.ino
            return f
        # Nothing in S3; a file created here and not uploaded yet still exists.
        local = inodes.find(parent.bucket, key, False)
        if local is not None and not local.gone and local.dirty:
            return local
        self._remember_absent(parent, name)
        return None

    async def _listed_file(self, parent: Inode[Staging], name: str) -> Inode[Staging] | None:
        """A file the directory's last listing showed, confirmed by one HEAD (or a listing).

        A name whose kernel entry expired (`ls -l` going through a large directory) is
        the file it was unless the object is gone: one HEAD says so, or, when many are
        asked about at once, one listing of the directory for all of them
        (Revalidation.by_listing). A prefix of the same name made meanwhile shows at the
        next listing, as a new name does.
        """
        ino = parent.children.get(name) if parent.children is not None else None
        f = self.inodes.by_ino.get(ino) if ino is not None else None
        if f is None or f.gone or f.is_dir or f.dirty:
            return None
        try:
            await self.revalidation.revalidate(f)
        except NotFound:
            return None  # removed: S3 is asked whether the name is a prefix now
        return None if f.gone else f

    def _remember_absent(self, parent: Inode[Staging], name: str) -> None:
        """S3 just said parent/name does not exist; a create right after need not ask again."""
        if len(self.absent) > 10_000:
            cutoff = time.monotonic() - self.negative_ttl
            self.absent = {k: t for k, t in self.absent.items() if t > cutoff}
        self.absent[(parent.ino, name)] = time.monotonic()

    def known_absent(self, parent: Inode[Staging], name: str) -> bool:
        """Absent in S3 within the negative lifetime (what the kernel's negative dentry trusts too)."""
        seen = self.absent.pop((parent.ino, name), None)
        return seen is not None and time.monotonic() - seen < self.negative_ttl

    def _is_shadowed(self, parent: Inode[Staging], name: str) -> bool:
        """Whether a directory of this name hides a file of the same name in parent."""
        d = self.inodes.find(parent.bucket, join(parent.key, name), True)
        return d is not None and not d.gone
