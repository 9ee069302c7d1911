"""The flusher: uploads closed, dirty files in the background.

A file is uploaded `cache.flush_delay` seconds after its last close, so a
file rewritten quickly is uploaded once. While the mount is busy (a FUSE
request within the last IDLE_GAP seconds) due uploads wait, up to
`cache.flush_busy_max` seconds more, so a burst of small files (an untar, a
job writing its outputs) runs at local speed instead of sharing the CPU with
their uploads; `fedfs sync`, unmount and a cache half full of dirty data do
not wait. At most `cache.uploads` files go up
at a time (each multipart with parallel parts), taken in turns from each
owner's due files (round-robin by uid), so one user's thousands of files never
make another user's one file wait behind them. A failed upload stays queued
and is retried with backoff (capped at a minute) until it succeeds: the
staging copy and its journal row are the data until then. An upload the
store refuses for good (StoreRefused: a key it never accepts) is not
retried: the file is kept in the cache's lost+found, recorded in the
journal's `refused` table, its owner is told in the log, and every other
upload goes on (`fedfs status`, `sync`, `doctor` and `fsck` name it).

Runs as one task in the daemon's nursery; all state lives in the trio thread.
May call the cache and journal; a file is uploaded through the `commit`
callback the daemon wires in (WriteBack.commit), so the flusher imports no
write-back code, and write-back hands it files as its `Uploads`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import pwd
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from fedfs.data.cache import Cache, Staging
from fedfs.data.journal import RefusedFile
from fedfs.errors import FedfsError, StoreRefused
from fedfs.events import event
from fedfs.meta.inode import Inode

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
IDLE_GAP = 0.05  # seconds without a FUSE request after which the mount counts as idle


@dataclass
class Pending:
    inode: Inode[Staging]
    due: float
    first: float  # when it was first queued: coalescing never delays it past a bound
    attempts: int = 0
    error: str | None = None


class Flusher:
    def __init__(self, cache: Cache, commit: Callable[[Inode[Staging]], Awaitable[None]]) -> None:
        self.cache = cache
        self.commit = commit  # uploads one file now (WriteBack.commit)
        self.delay = cache.cfg.flush_delay
        self.pending: dict[int, Pending] = {}
        self.uploading: set[int] = set()
        # (due, n, ino): when each pending file is next due. Entries go stale when a file's
        # due time moves (the current one is Pending.due); they are skipped when popped.
        self.schedule: list[tuple[float, int, int]] = []
        self.counter = itertools.count()
        self.next_due = math.inf  # what the run loop sleeps until
        self.busy_max = cache.cfg.flush_busy_max
        # When the last FUSE request arrived (monotonic); the daemon wires in the adapter's.
        self.last_request: Callable[[], float] = lambda: -math.inf
        # Files asked for now (sync, unmount): while one waits, nothing waits for idleness.
        self.urgent: set[int] = set()
        self.wakeup = trio.Event()
        self.changed = trio.Event()  # set whenever an upload finished or failed
        self.max_uploads = cache.cfg.uploads
        # Due files waiting for an upload slot, per owner uid, and the uids in the order
        # their turn comes (round-robin: each takes one slot, then goes to the back).
        self.ready: dict[int, deque[int]] = {}
        self.turns: deque[int] = deque()
        self.in_line: set[int] = set()  # every ino in self.ready
        self.uploaded = 0
        self.uploaded_bytes = 0
        self.failures = 0
        self.refused = 0
        # ino -> (bucket, key, staging generation) of files the store refused for good
        self.refused_as: dict[int, tuple[str, str, int]] = {}

    def queue(self, inode: Inode[Staging], delay: float | None = None) -> None:
        if self.refused_as.get(inode.ino) == _version(inode):
            return  # refused for good as it is: only a new write or a rename queues it again
        self.refused_as.pop(inode.ino, None)
        now = time.monotonic()
        due = now + (self.delay if delay is None else delay)
        p = self.pending.get(inode.ino)
        if delay == 0:
            self.urgent.add(inode.ino)
        if p is None:
            p = self.pending[inode.ino] = Pending(inode, due, now)
            self._due(p, due)
        elif delay == 0:
            self._due(p, now)  # asked for now (sync, unmount): also retries a failing one at once
            p.error = None
        elif p.attempts == 0:
            # Rewritten before its upload: wait again (coalesce), but not forever.
            self._due(p, min(due, p.first + 10 * self.delay + 5))

    def forget(self, ino: int) -> None:
        """A removed file: nothing of it is uploaded any more."""
        self.pending.pop(ino, None)
        self.refused_as.pop(ino, None)

    def _due(self, p: Pending, due: float) -> None:
        """Set when p is next due; wake the run loop only if that is earlier than it sleeps."""
        p.due = due
        heapq.heappush(self.schedule, (due, next(self.counter), p.inode.ino))
        if due < self.next_due:
            self.next_due = due
            self.wakeup.set()

    def queued_bytes(self) -> int:
        return sum(p.inode.staging.size for p in self.pending.values() if p.inode.staging)

    def failed(self) -> list[Pending]:
        return [p for p in self.pending.values() if p.error]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                now = time.monotonic()
                hold = self._hold(now)
                while hold <= 0 and self.schedule and self.schedule[0][0] <= now:
                    due, _, ino = heapq.heappop(self.schedule)
                    p = self.pending.get(ino)
                    if p is None or p.due != due or ino in self.uploading:
                        continue  # uploaded, moved, or on its way (it is rescheduled after)
                    self._make_ready(p)
                self._start_uploads(nursery, now)
                if hold > 0:
                    self.next_due = now + hold
                else:
                    self.next_due = self.schedule[0][0] if self.schedule else math.inf
                self.wakeup = trio.Event()
                with trio.move_on_after(
                    max(0.0, self.next_due - now) if self.next_due < math.inf else 3600
                ):
                    await self.wakeup.wait()

    def _make_ready(self, p: Pending) -> None:
        """p is due: it waits for a slot in its owner's line."""
        if p.inode.ino in self.in_line:
            return
        uid = p.inode.uid
        line = self.ready.get(uid)
        if line is None:
            line = self.ready[uid] = deque()
            self.turns.append(uid)
        line.append(p.inode.ino)
        self.in_line.add(p.inode.ino)

    def _start_uploads(self, nursery: trio.Nursery, now: float) -> None:
        """Fill free upload slots, one file per owner in turn."""
        while len(self.uploading) < self.max_uploads and self.turns:
            uid = self.turns.popleft()
            line = self.ready[uid]
            ino = line.popleft()
            self.in_line.discard(ino)
            if line:
                self.turns.append(uid)
            else:
                del self.ready[uid]
            p = self.pending.get(ino)
            if p is None or ino in self.uploading:
                continue  # uploaded or removed meanwhile
            if p.inode.writers > 0:
                # still being written: wait for its close
                self._due(p, now + max(self.delay, 0.5))
                continue
            self.uploading.add(ino)
            nursery.start_soon(self._upload, p)

    def waiting(self) -> int:
        """Files due and waiting for an upload slot."""
        return sum(len(line) for line in self.ready.values())

    def _hold(self, now: float) -> float:
        """How long due uploads wait for the mount to be idle (0: start them now)."""
        if not self.schedule or self.schedule[0][0] > now:
            return 0.0
        if self.urgent:
            self.urgent = {i for i in self.urgent if i in self.pending and i not in self.uploading}
            if self.urgent:
                return 0.0
        quiet = now - self.last_request()
        if quiet >= IDLE_GAP or now - self.schedule[0][0] >= self.busy_max:
            return 0.0
        cache = self.cache
        if cache.staged_bytes * 2 > cache.cfg.size:
            return 0.0  # dirty data is filling the cache: make room rather than speed
        return IDLE_GAP - quiet

    async def _upload(self, p: Pending) -> None:
        inode = p.inode
        try:
            size = inode.staging.size if inode.staging else 0
            await self.commit(inode)
            if not inode.dirty or inode.gone:
                self.pending.pop(inode.ino, None)
                self.uploaded += 1
                self.uploaded_bytes += size
                if p.attempts:  # not p.error: sync and drain clear it to retry at once
                    event(log, "upload-resumed", path=inode.path, attempts=p.attempts)
            else:
                p.due = time.monotonic() + self.delay  # written again during the upload
        except StoreRefused as e:
            self.refuse(p, e)
        except Exception as e:  # one file's failure must not stop the flusher
            if not isinstance(e, FedfsError | OSError):
                log.exception("upload of %s failed unexpectedly", inode.path)
            p.attempts += 1
            self.failures += 1
            backoff = min(MAX_BACKOFF, 2 ** min(p.attempts, 10))
            p.due = time.monotonic() + backoff
            level = (
                logging.WARNING if p.attempts in (1, 3) or p.attempts % 10 == 0 else logging.DEBUG
            )
            st = inode.staging
            path = inode.path
            event(
                log,
                "upload-failed",
                severity=level,
                path=path,
                attempt=p.attempts,
                error=e,
                retry_in=f"{backoff:.0f}s",
                kept_in=st.path if st else None,
                msg=f"upload of {path} failed; retrying in {backoff:.0f}s, the data is safe in the cache",
            )
            p.error = str(e)
            self.cache.journal.failed(inode.bucket, inode.key, str(e))
        finally:
            self.uploading.discard(inode.ino)
            self.wakeup.set()  # a slot is free: the run loop starts the next in turn
            self.cache.room.set()
            self.changed.set()
            self.changed = trio.Event()
            if inode.ino in self.pending:
                self._due(p, p.due)  # still queued: the loop skipped it while it was on its way
                if inode.open_count == 0 and inode.staging is not None:
                    inode.staging.park()  # waits for its retry without a descriptor

    def refuse(self, p: Pending, e: StoreRefused) -> None:
        """The store refused this file for good: keep it aside, tell its owner, go on."""
        inode = p.inode
        self.pending.pop(inode.ino, None)
        self.urgent.discard(inode.ino)
        self.failures += 1
        self.refused += 1
        self.refused_as[inode.ino] = _version(inode)
        # The staging copy stays the file's data while mounted; a new write or a rename
        # queues it again (refused again unless the store takes the new name).
        try:
            keep_refused(self.cache, inode, e)
        except (OSError, FedfsError) as err:
            # Cannot keep it aside (the cache disk is full?): it stays queued and its
            # journal row stays the data; tried again later.
            log.error(
                "cannot keep the refused file %s aside (%s); trying again later", inode.path, err
            )
            self.refused_as.pop(inode.ino, None)
            p.attempts += 1
            p.due, p.error = time.monotonic() + MAX_BACKOFF, str(e)
            self.pending[inode.ino] = p

    async def drain(
        self,
        wanted: Callable[[Inode[Staging]], bool] = lambda i: True,
        progress: Callable[[int, int], None] | None = None,
        give_up_after: float = math.inf,
    ) -> list[Pending]:
        """Upload every queued file that `wanted` selects now; wait until done.

        Returns those still pending when a file failed and give_up_after passed.
        """
        for p in self.pending.values():
            if wanted(p.inode) and p.inode.ino not in self.uploading:
                self.urgent.add(p.inode.ino)
                self._due(p, min(p.due, time.monotonic()))
                p.error = None  # try each once more before giving up
        deadline = time.monotonic() + give_up_after
        while True:
            left = [p for p in self.pending.values() if wanted(p.inode)]
            if progress:
                progress(len(left), sum(p.inode.staging.size for p in left if p.inode.staging))
            if not left:
                return []
            if time.monotonic() > deadline and all(p.error for p in left):
                return left
            changed = self.changed
            with trio.move_on_after(1.0):
                await changed.wait()


def _version(inode: Inode[Staging]) -> tuple[str, str, int]:
    st = inode.staging
    return inode.bucket, inode.key, st.generation if st is not None else -1


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def keep_refused(cache: Cache, inode: Inode[Staging], e: StoreRefused) -> RefusedFile | None:
    """Keep a refused file's data in lost+found and its row in the journal; log for its owner."""
    st, path = inode.staging, inode.path
    if st is None:
        return None
    kept = cache.keep_aside(st)
    row = RefusedFile(
        bucket=inode.bucket,
        key=inode.key,
        kept=str(kept),
        uid=inode.uid,
        size=st.size,
        error=str(e),
        at=time.time(),
    )
    cache.journal.refuse(row)
    event(
        log,
        "upload-refused",
        severity=logging.ERROR,
        path=path,
        owner=owner_name(inode.uid),
        uid=inode.uid,
        error=e,
        kept_in=kept,
        msg=f"the object store refuses {path!r} for good ({e}); it is not retried. "
        f"Its data is kept in {kept}; its owner {owner_name(inode.uid)} can write it again "
        "under a name the store accepts (an admin hands the kept copy back: "
        "docs/OPERATIONS.md)",
    )
    return row
