"""Revalidation: whether an inode's attributes are fresh, and re-reading them from S3.

Owns the attribute lifetime (`fs.attr_timeout`), the HEADs on their way (a
second caller joins the first one's answer), and what happens while the
store does not answer: attributes read before stay in use, noted once a
minute as `store-unreachable`. An object found removed is forgotten here.

Concurrency: runs in the trio thread. State may change at every `await`, so
each operation re-reads what it needs after awaiting and never holds a
reference to a dict entry across an await it depends on; an answer to a
request sent before this node last changed the inode is dropped.

May call: the inode table, meta (including what the shared metadata index may
record of a HEAD), and the store through worker threads.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import trio

from fedfs.data.cache import Staging
from fedfs.errors import NotFound, Unavailable
from fedfs.events import event
from fedfs.meta.dir_index import note_head
from fedfs.meta.inode import Inode
from fedfs.meta.object_meta import apply_info
from fedfs.store.s3 import ObjectStore
from fedfs.store.threads import WorkerThreads
from fedfs.tree.inodes import Inodes

log = logging.getLogger(__name__)


class Revalidation:
    """Keeps inode attributes within their lifetime of what S3 says."""

    def __init__(
        self, inodes: Inodes, store: ObjectStore, s3: WorkerThreads, attr_ttl: float
    ) -> None:
        self.inodes = inodes
        self.store = store
        self.s3 = s3
        self.attr_ttl = attr_ttl
        self.revalidating: dict[int, trio.Event] = {}  # inodes with a HEAD on its way
        self.outage_logged = -math.inf
        # Set by the listings: confirms a file by listing its directory again when many of
        # its files are asked about at once (`ls -l`, `stat *`); True if it listed (or joined
        # a listing), after which the file is fresh unless the listing showed it changed.
        self.by_listing: Callable[[Inode[Staging]], Awaitable[bool]] | None = None

    def fresh(self, inode: Inode[Staging]) -> bool:
        return inode.dirty or time.monotonic() - inode.checked < self.attr_ttl

    def note_outage(self) -> None:
        now = time.monotonic()
        if now - self.outage_logged > 60:
            self.outage_logged = now
            event(
                log,
                "store-unreachable",
                severity=logging.WARNING,
                msg="the object store does not answer; serving cached attributes and listings",
            )

    async def revalidate(self, inode: Inode[Staging], join: bool = True) -> None:
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
            await self._revalidate(inode, listing_ok=join)
        except Unavailable:
            if not inode.meta_known or inode.gone:
                raise
            self.note_outage()
            inode.checked = time.monotonic()  # ask again after the TTL, not on every call
        finally:
            if mine:
                self.revalidating.pop(inode.ino).set()

    async def _revalidate(self, inode: Inode[Staging], listing_ok: bool = True) -> None:
        if inode.gone and inode.open_count > 0:
            return  # unlinked while open: the open handles keep what they have
        if inode.gone:
            raise NotFound(f"{inode.path} no longer exists")
        if self.fresh(inode) and inode.meta_known:
            return
        if inode.is_dir:
            asked = time.monotonic()
            marker = await self.s3(self.store.head, inode.bucket, inode.key + "/")
            if inode.changed > asked:
                return
            if marker is not None:
                inode.has_marker = True
                apply_info(inode, marker, self.inodes.owners, self.inodes.seal)
                return
            inode.has_marker = False
            if await self.s3(self.store.prefix_exists, inode.bucket, inode.key + "/"):
                inode.checked = time.monotonic()
                inode.meta_known = True
                return
            if self.inodes.has_local_descendants(inode):
                inode.checked = time.monotonic()
                return
        else:
            if (
                listing_ok
                and inode.meta_known
                and self.by_listing is not None
                and await self.by_listing(inode)
                and self.fresh(inode)
                and inode.meta_known
                and not inode.gone
            ):
                return
            asked = time.monotonic()
            basis = (inode.etag, inode.listed_ms)  # what the last listing showed
            info = await self.s3(self.store.head, inode.bucket, inode.key)
            if inode.dirty or inode.changed > asked:
                return  # changed here while the HEAD was on its way: what we know is newer
            if info is not None:
                apply_info(inode, info, self.inodes.owners, self.inodes.seal)
                note_head(inode, info, basis)  # what the shared index may record
                return
        self.inodes.forget(self.inodes.by_ino.get(inode.parent), inode)
        raise NotFound(f"{inode.path} was removed from the object store")
