"""The write-back path of one file: its staging copy, journal row and committing upload.

Owns what happens to a file's data between an open for writing and the
object store: the staging copy writes go to (open_for_write, truncate), the
journal row that lets a closed file survive a crash (closed, make_durable),
the upload that detects other writers (commit), and afterwards the copy's
move into the clean cache (release_data) or its removal (discard). A large
file staged from an existing object, of which only some parts changed, goes
up as a partial rewrite: the store copies the unchanged parts (parts.py). The
flusher decides when to commit; the tree decides names and calls in here.

Concurrency: everything runs in the trio thread. State may change at every
`await`, so each operation re-reads what it needs after awaiting and never
holds a reference to a dict entry across an await it depends on. An upload
holds the staging copy's `lock` while it reads the copy; writers wait for it
and then check the inode still has that copy. A directory rename holds
uploads under its prefix (`uploads_held`) while it moves the keys.

May call: the cache and journal, the store through worker threads, meta.
Calls back up only through `Uploads` (the flusher, wired by the daemon).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import trio

from fedfs.data.cache import Cache, Staging
from fedfs.data.journal import DirtyFile
from fedfs.data.parts import plan
from fedfs.errors import NotFound, PreconditionFailed, StoreRefused
from fedfs.events import event
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.meta.object_meta import Owner, apply_info, metadata_for
from fedfs.meta.seal import MetadataSeal
from fedfs.store.s3 import ObjectInfo, ObjectStore
from fedfs.store.threads import WorkerThreads

log = logging.getLogger(__name__)


class Uploads(Protocol):
    """Where closed dirty files wait for their upload (the flusher)."""

    def queue(self, inode: Inode[Staging], delay: float | None = None) -> None: ...

    def forget(self, ino: int) -> None: ...


class WriteBack:
    """Staging copies, journal rows and uploads of the files of one mount."""

    def __init__(
        self,
        store: ObjectStore,
        s3: WorkerThreads,
        cache: Cache,
        owners: Mapping[str, Owner],
        seal: MetadataSeal,
        node: str,
    ) -> None:
        self.store = store
        self.s3 = s3
        self.cache = cache
        self.owners = owners
        self.seal = seal
        self.node = node  # names conflict copies (default: the host name)
        self.uploads: Uploads | None = None  # set by the daemon
        self.conflicts = 0
        self.rewrites = 0  # uploads that copied unchanged parts inside the store
        self.rewrite_copied = 0  # bytes those copies did not have to send
        self.moving: list[tuple[str, str, trio.Event]] = []  # directory renames under way

    def recovered(self, row: DirtyFile, st: Staging) -> Inode[Staging]:
        """An inode outside the tree for a journaled file being recovered at start-up."""
        inode: Inode[Staging] = Inode(
            0, ROOT_INO, row.key.rsplit("/", 1)[-1], row.bucket, row.key, Kind.FILE
        )
        apply_info(
            inode,
            ObjectInfo(row.key, st.size, row.base_etag or "", time.time(), row.metadata),
            self.owners,
            self.seal,
            trusted=True,  # this node's own journal: the metadata it is about to upload
        )
        inode.etag, inode.base_etag, inode.local = (
            row.base_etag,
            row.base_etag,
            row.base_etag is None,
        )
        st.base_size, st.changed = row.base_size, row.changed
        st.exact_in_journal = row.base_size is not None and row.changed is not None
        inode.staging = st
        return inode

    # -- staging -----------------------------------------------------------

    def _journal(self, inode: Inode[Staging], state: str, durable: bool = False) -> None:
        st = inode.staging
        assert st is not None
        exact = st.base_size is not None and st.changed is not None and inode.base_etag is not None
        self.cache.journal.record(
            DirtyFile(
                bucket=inode.bucket,
                key=inode.key,
                staging=st.name,
                metadata=metadata_for(inode),
                base_etag=inode.base_etag,
                state=state,
                queued_at=time.time(),
                base_size=st.base_size if exact else None,
                changed=st.changed if exact else None,
            ),
            durable=durable,
        )
        st.exact_in_journal = exact

    def _stage(self, inode: Inode[Staging], st: Staging) -> Staging:
        inode.staging = st
        inode.base_etag = None if inode.local else inode.etag
        self._journal(inode, "open")
        return st

    def new_file(self, inode: Inode[Staging]) -> None:
        """A file just created here: its (empty) staging copy is its data until the upload."""
        self._stage(inode, self.cache.new_staging()).dirty = True

    async def open_for_write(self, inode: Inode[Staging]) -> Staging:
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

    async def truncate(self, inode: Inode[Staging], size: int) -> None:
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

    # -- closing -----------------------------------------------------------

    def touch_written(self, inode: Inode[Staging]) -> None:
        if inode.mtime_pending:
            inode.mtime_pending = False
            inode.mtime_ns = inode.ctime_ns = inode.written_mtime_ns or time.time_ns()
            inode.written_mtime_ns = 0

    def closed(self, inode: Inode[Staging]) -> None:
        """A writer closed the file: record it as queued and hand it to the flusher."""
        self.touch_written(inode)
        if inode.dirty and inode.staging is not None and not inode.gone:
            self._journal(inode, "queued")
            if self.uploads is not None:
                self.uploads.queue(inode)

    def carry_attributes(self, inode: Inode[Staging]) -> None:
        """New attributes of a dirty file: the next upload carries them.

        Recorded with the queued data, and an upload already on its way leaves
        the file dirty, so the attributes are uploaded too.
        """
        if inode.staging is not None:
            inode.staging.generation += 1
        if inode.writers == 0:
            self.closed(inode)
        else:
            self._journal(inode, "open")

    async def make_durable(self, inode: Inode[Staging]) -> None:
        """fsync in "local" mode: the data and its journal row survive a crash of the node."""
        self.touch_written(inode)
        st = inode.staging
        if st is not None and st.dirty and not inode.gone:
            await trio.to_thread.run_sync(st.sync)
            self._journal(inode, "queued" if inode.writers == 0 else "open", durable=True)

    # -- uploading ---------------------------------------------------------

    async def commit(self, inode: Inode[Staging]) -> None:
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

    @contextmanager
    def uploads_held(self, bucket: str, prefix: str) -> Iterator[None]:
        """No upload under prefix starts until this ends (a directory rename moves its keys)."""
        done = trio.Event()
        self.moving.append((bucket, prefix, done))
        try:
            yield
        finally:
            self.moving.remove((bucket, prefix, done))
            done.set()

    def _move_of(self, inode: Inode[Staging]) -> trio.Event | None:
        for bucket, prefix, done in self.moving:
            if inode.bucket == bucket and inode.key.startswith(prefix):
                return done
        return None

    async def _upload_locked(self, inode: Inode[Staging], st: Staging) -> None:
        if not st.dirty or inode.gone:
            return
        generation, key, bucket = st.generation, inode.key, inode.bucket
        meta = metadata_for(inode)
        new = inode.base_etag is None
        conflict = False
        current: ObjectInfo | None = None
        if not new or st.size >= self.store.cfg.multipart_threshold:
            current = await self.s3(self.store.head, bucket, key)
            conflict = current is not None and current.etag != inode.base_etag
        parts = None
        cfg = self.store.cfg
        if (
            not conflict
            and current is not None
            and cfg.copy_parts
            and st.size >= cfg.multipart_threshold
        ):
            base_size = st.base_size if current.size == st.base_size else None
            parts = plan(st.size, base_size, st.changed, cfg.multipart_chunksize)
        if not conflict:
            try:
                if parts is not None and inode.base_etag is not None:
                    info = await self.s3(
                        self.store.rewrite,
                        bucket,
                        key,
                        st.upload_path(),
                        parts,
                        inode.base_etag,
                        meta,
                    )
                    copied = sum(p.end - p.start for p in parts if p.copy)
                    self.rewrites += 1
                    self.rewrite_copied += copied
                    event(
                        log,
                        "upload-partial",
                        path=inode.path,
                        parts=len(parts),
                        copied=copied,
                        sent=st.size - copied,
                    )
                else:
                    info = await self.s3(
                        self.store.upload_file, bucket, key, st.upload_path(), meta, None, new
                    )
            except PreconditionFailed:
                conflict = True
            except NotFound as e:
                if "NoSuchBucket" in str(e):
                    raise  # the bucket is away (maybe for a while): retried
                # A PUT answered "not found" in an existing bucket: the store does not take
                # this key (moto: a newline in it), and never will.
                raise StoreRefused(f"{e}; the store does not accept this key") from e
        if conflict:
            await self._keep_conflicting(inode, st, meta)
            return
        if inode.gone or inode.key != key:
            # Removed or renamed while uploading: the upload must not resurrect the old
            # name, and a renamed file still has to reach its new key.
            await self.s3(self.store.delete, bucket, key)
            if not inode.gone and self.uploads is not None:
                self.uploads.queue(inode, delay=0)
            return
        # The staged bytes are now the object's (writers waited for the lock): later
        # changes count from this version.
        st.base_size, st.changed = st.size, []
        if st.generation == generation:
            st.dirty = False
            self.cache.journal.forget(bucket, key, st.name)
            st.exact_in_journal = False
        inode.local = False
        # The attributes here are what was uploaded or newer (a chmod during the upload):
        # take only what the store decided.
        inode.etag, inode.last_modified = info.etag, info.last_modified
        inode.checked = inode.changed = time.monotonic()
        inode.size = st.size
        inode.base_etag = info.etag
        inode.kernel_etag = info.etag  # the kernel's pages hold what we just wrote

    async def _keep_conflicting(
        self, inode: Inode[Staging], st: Staging, meta: dict[str, str]
    ) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        ckey = f"{inode.key}.fedfs-conflict-{self.node}-{stamp}"
        await self.s3(
            self.store.upload_file, inode.bucket, ckey, st.upload_path(), meta, None, False
        )
        event(
            log,
            "upload-conflict",
            severity=logging.WARNING,
            path=inode.path,
            bucket=inode.bucket,
            key=inode.key,
            kept_as=ckey,
            msg="another writer changed the object since this node read it; its version "
            "stays under the key and this node's version is kept beside it",
        )
        self.conflicts += 1
        st.dirty = False
        self.cache.journal.forget(inode.bucket, inode.key, st.name)
        st.base_size, st.changed, st.exact_in_journal = None, None, False
        inode.local = False
        inode.checked = -math.inf  # show the other writer's version from now on
        if inode.open_count == 0:
            st.close()
            inode.staging = None

    # -- after the upload, or instead of it --------------------------------

    def _adopt(self, inode: Inode[Staging]) -> None:
        """The uploaded staging copy becomes clean cached data of its new version."""
        st = inode.staging
        if st is not None and inode.etag and not inode.gone:
            self.cache.adopt(st, inode.bucket, inode.key, inode.etag)
        elif st is not None:
            st.close()
        inode.staging = None

    async def release_data(self, inode: Inode[Staging]) -> None:
        """After the last close: a clean staging copy moves into the clean cache."""
        st = inode.staging
        if st is None or inode.open_count > 0:
            return
        if st.dirty:
            if not st.lock.locked():  # an upload in flight still reads it
                st.park()  # dirty data waits for the flusher, without a descriptor
            return
        self._adopt(inode)

    async def settle(self, inode: Inode[Staging]) -> None:
        """Wait for an upload of this file in flight, so it cannot land after its key is reused."""
        st = inode.staging
        if st is not None and st.lock.locked():
            async with st.lock:
                pass

    def discard(self, inode: Inode[Staging]) -> None:
        """Drop local data of a removed file; open handles keep reading the staged copy."""
        inode.local = False
        if self.uploads is not None:
            self.uploads.forget(inode.ino)
        if inode.staging is not None:
            self.cache.journal.forget(inode.bucket, inode.key, inode.staging.name)
            inode.staging.dirty = False
            if inode.open_count == 0:
                inode.staging.close()
                inode.staging = None
