"""Fair shares of the daemon's background work between local users.

Owns the limits that keep one user's stage-in requests from starving another
user's, or the mount's foreground FUSE reads: each user has a few stage
requests and block fetches in flight at a time (`PerUser`), and all users
together at most half of the S3 connection pool, so a FUSE read always finds
a free connection. Requests beyond a limit wait their turn; nothing is refused.
Also tells `fedfs status` who holds what of the write-back (`holdings`).

Concurrency: trio thread only. A limiter is borrowed and released by the same
task (CapacityLimiter's rule), so each holder is an `async with`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from fedfs.data.cache import Staging
from fedfs.data.flusher import Pending
from fedfs.meta.inode import Inode


class PerUser:
    """A CapacityLimiter of `tokens` for each uid, dropped again when nobody uses it."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._limiters: dict[int, trio.CapacityLimiter] = {}
        self._users: dict[int, int] = {}  # uid -> tasks holding or waiting for its limiter

    @asynccontextmanager
    async def hold(self, uid: int) -> AsyncIterator[None]:
        limiter = self._limiters.setdefault(uid, trio.CapacityLimiter(self.tokens))
        self._users[uid] = self._users.get(uid, 0) + 1
        try:
            async with limiter:
                yield
        finally:
            self._users[uid] -= 1
            if not self._users[uid]:
                del self._users[uid], self._limiters[uid]

    def in_use(self, uid: int) -> int:
        limiter = self._limiters.get(uid)
        return int(limiter.borrowed_tokens) if limiter else 0


class StageLimits:
    """How much stage-in work runs at once: per user, and for everyone together."""

    REQUESTS_PER_USER = 2
    FETCHES_PER_USER = 4

    def __init__(self, s3_connections: int) -> None:
        self.requests = PerUser(self.REQUESTS_PER_USER)
        self.fetches = PerUser(self.FETCHES_PER_USER)
        # Below the pool's size, so foreground reads never queue behind stage-in.
        self.everyone = trio.CapacityLimiter(max(1, s3_connections // 2))

    @asynccontextmanager
    async def fetch(self, uid: int) -> AsyncIterator[None]:
        """Hold one block fetch's share: the user's first, then everyone's."""
        async with self.fetches.hold(uid), self.everyone:
            yield


def holdings(inodes: Iterable[Inode[Staging]], pending: Iterable[Pending]) -> dict[int, Holding]:
    """Who holds what of the daemon's write-back: per owner uid (for `fedfs status`)."""
    held: dict[int, Holding] = {}
    for inode in inodes:
        if inode.writers > 0 and not inode.gone:
            held.setdefault(inode.uid, Holding()).open_for_writing += 1
    for p in pending:
        h = held.setdefault(p.inode.uid, Holding())
        h.queued += 1
        h.queued_bytes += p.inode.staging.size if p.inode.staging else 0
        h.failing += 1 if p.error else 0
    return held


@dataclass
class Holding:
    """One user's share: files open for writing, and uploads queued (and failing)."""

    open_for_writing: int = 0
    queued: int = 0
    queued_bytes: int = 0
    failing: int = 0
