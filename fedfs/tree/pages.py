"""The pages of one listing of a prefix, in key order, the later ones listed side by side.

ListObjectsV2 pages follow one another (each continues where the last one
ended), so a directory of 10,000 keys costs ten round trips one after the
other, and an `ls -l` of it cannot finish sooner. Once the spread of its keys
is known (this node's last listing of the directory, or its shared metadata
index), what is left to list is split at every 1,000th known key into ranges
that are listed at the same time (`StartAfter`), each one continued with its
own token where the directory grew, and handed out in order. The same entries
and about the same requests (one per range, plus one per 1,000 keys added
since), in the time of the slowest range rather than the sum of them all.

Ranges end at file keys (a name without "/", and none with a character XML
cannot carry, which a store would echo back unreadably), so no common prefix straddles
two of them: every key below a prefix that sorts before a range's last key
sorts before it too. A prefix can still come twice (a range that starts right
after a prefix lists the keys below it again); the listing drops names it has
already seen (tree/listing.py). A stale split costs requests, never entries:
a range whose last key is gone simply ends at the next key, and one that grew
is continued until it passes its last key.

Concurrency: runs in the trio thread; the range requests run as tasks in the
daemon's nursery, at most AHEAD ranges ahead of the one being handed out.
Without a nursery (or before the keys are known) pages come one after another.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from fedfs.errors import Unavailable
from fedfs.store.s3 import ListPage

PAGE = 1000  # keys per ListObjectsV2 page, and per range
AHEAD = 8  # ranges listed ahead of the one being handed out

# fetch(continuation token, start after): one page of the listing
Fetch = Callable[[str | None, str | None], Awaitable[ListPage]]


@dataclass(eq=False)
class _Range:
    after: str | None  # list keys after this one (None: from the start)
    upto: str | None  # the range's last key (None: to the end of the listing)
    token: str | None = None  # set to continue the range where its last page ended
    started: bool = False
    asked: float = 0.0
    page: ListPage | None = None
    error: Exception | None = None
    ready: trio.Event = field(default_factory=trio.Event)


def splittable(key: str) -> bool:
    """Whether a range may start after this key: not one with a character XML 1.0 cannot
    carry (C0 controls, U+FFFE, U+FFFF, lone surrogates). Stores echo StartAfter in
    their answer, and Ceph RGW writes such a character as a reference no XML parser takes."""
    return not any(c < " " or c in "\ufffe\uffff" or "\ud800" <= c <= "\udfff" for c in key)


class Pages:
    """The pages of one listing, handed out in key order by `next()`."""

    def __init__(self, fetch: Fetch, nursery: trio.Nursery | None) -> None:
        self.fetch = fetch
        self.nursery = nursery
        self.token: str | None = None  # one page after another: where the next one starts
        self.last: str | None = None  # the greatest key or prefix handed out so far
        self.ranges: deque[_Range] | None = None
        self.requests = 0

    def plan(self, keys: Iterable[str]) -> None:
        """Split what is left to list at every PAGE-th of these file keys (once, and only
        where that makes more than one range)."""
        if self.ranges is not None or self.nursery is None:
            return
        last = self.last
        rest = sorted(k for k in keys if (last is None or k > last) and splittable(k))
        bounds = rest[PAGE - 1 : -1 : PAGE]
        if not bounds:
            return
        ranges, after = deque[_Range](), last
        for b in bounds:
            ranges.append(_Range(after, b))
            after = b
        ranges.append(_Range(after, None))
        self.ranges = ranges
        self._start()

    async def next(self) -> tuple[ListPage, float, bool]:
        """The next page, when it was asked for, and whether more pages follow."""
        if self.ranges is None:
            asked = time.monotonic()
            self.requests += 1
            page = await self.fetch(self.token, None)
            self.token = page.next_token
            self._saw(page)
            return page, asked, bool(self.token)
        r = self.ranges[0]
        await r.ready.wait()
        if r.error is not None:
            error, r.error, r.started, r.ready = r.error, None, False, trio.Event()
            self._start()  # asked again when the listing goes on
            raise error
        got = r.page
        if got is None:  # its request was cancelled (the daemon is stopping)
            r.started, r.ready = False, trio.Event()
            raise Unavailable("the listing was interrupted")
        objects, prefixes = got.objects, got.prefixes
        if r.upto is None:
            ended = not got.next_token
        else:
            upto = r.upto
            ended = (
                not got.next_token or max([o.key for o in objects] + prefixes, default="") >= upto
            )
            objects = [o for o in objects if o.key <= upto]
            prefixes = [p for p in prefixes if p < upto]
        if ended:
            self.ranges.popleft()
        else:  # the range grew since its keys were known: continue it
            r.token, r.page, r.started, r.ready = got.next_token, None, False, trio.Event()
        self._start()
        out = ListPage(prefixes=prefixes, objects=objects)
        self._saw(out)
        return out, r.asked, bool(self.ranges)

    def _saw(self, page: ListPage) -> None:
        top = max([o.key for o in page.objects] + page.prefixes, default=None)
        if top is not None and (self.last is None or top > self.last):
            self.last = top

    def _start(self) -> None:
        assert self.ranges is not None and self.nursery is not None
        for i, r in enumerate(self.ranges):
            if i >= AHEAD:
                break
            if not r.started:
                r.started = True
                r.asked = time.monotonic()
                self.requests += 1
                self.nursery.start_soon(self._get, r)

    async def _get(self, r: _Range) -> None:
        try:
            r.page = await self.fetch(r.token, None if r.token else r.after)
        except Exception as e:  # next() raises it when the listing gets to this range
            r.error = e
        finally:
            r.ready.set()
