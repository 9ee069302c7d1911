"""A listing in parallel ranges hands out what one listing page after another would.

The store here is a model of ListObjectsV2 with a delimiter (MaxKeys counts keys and
common prefixes alike, a continuation resumes after the last one returned, StartAfter
starts after any string), because what matters is how the ranges are cut and stitched,
not the HTTP. The ranges are planned from the keys of an older listing, and the
directory changes in between: keys added (a range grows past one page), removed (a
range's last key is gone), whole subdirectories appearing where a range ends.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.store.s3 import ListPage, ObjectInfo
from fedfs.tree import pages as pages_mod
from fedfs.tree.pages import Pages, splittable

PRE = "d/"


class Store:
    """ListObjectsV2 of one prefix with delimiter "/", over a set of keys."""

    def __init__(self, keys: Iterable[str], page: int) -> None:
        self.keys = sorted(set(keys))
        self.page = page
        self.calls: list[tuple[str | None, str | None]] = []
        self.fail_once = False

    async def fetch(self, token: str | None, after: str | None) -> ListPage:
        self.calls.append((token, after))
        await trio.sleep(0)  # let the other ranges' requests interleave
        if self.fail_once:
            self.fail_once = False
            raise OSError("the store went away")
        start = token if token is not None else after
        out = ListPage()
        last: str | None = None
        for k in self.keys:
            if not k.startswith(PRE) or (start is not None and k <= start):
                continue
            rest = k[len(PRE) :]
            item = PRE + rest.split("/", 1)[0] + "/" if "/" in rest else k
            if item == last or (start is not None and item <= start):
                continue  # keys below a prefix already returned (or resumed after)
            if len(out.objects) + len(out.prefixes) == self.page:
                out.next_token = last
                return out
            if item.endswith("/"):
                out.prefixes.append(item)
            else:
                out.objects.append(ObjectInfo(key=k, size=0, etag="", last_modified=0.0))
            last = item
        return out


def entries(page: ListPage) -> list[str]:
    return sorted([o.key for o in page.objects] + page.prefixes)


async def one_after_another(store: Store) -> list[str]:
    got, pages = [], Pages(store.fetch, None)
    while True:
        page, _, more = await pages.next()
        got += entries(page)
        if not more:
            return got


async def in_ranges(
    store: Store, known: list[str], first_sequential: bool, fail: bool
) -> list[str]:
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        pages = Pages(store.fetch, nursery)
        more = True
        if first_sequential:  # as after a remount: one page, then the index's keys
            page, _, more = await pages.next()
            got += entries(page)
        store.fail_once = fail  # one range request fails: readdir's next call goes on
        pages.plan(k for k in known if "/" not in k[len(PRE) :])
        while more:
            try:
                page, _, more = await pages.next()
            except OSError:
                continue  # the listing goes on where it stopped, as readdir's next call does
            got += entries(page)
    seen: set[str] = set()
    return [x for x in got if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


names = st.text(alphabet="ab/-!é", min_size=1, max_size=5).filter(
    lambda s: not s.startswith("/") and "//" not in s
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(names, max_size=60),
    added=st.lists(names, max_size=30),
    removed=st.sets(st.integers(0, 59)),
    page=st.integers(1, 7),
    first_sequential=st.booleans(),
    fail=st.booleans(),
)
def test_ranges_give_what_one_listing_gives(
    before: list[str],
    added: list[str],
    removed: set[int],
    page: int,
    first_sequential: bool,
    fail: bool,
) -> None:
    old = sorted({PRE + n for n in before})
    now = [k for i, k in enumerate(old) if i not in removed] + [PRE + n for n in added]
    saved = pages_mod.PAGE
    pages_mod.PAGE = page
    try:
        expected = trio.run(one_after_another, Store(now, page))
        got = trio.run(in_ranges, Store(now, page), old, first_sequential, fail)
    finally:
        pages_mod.PAGE = saved
    assert got == expected
    assert got == sorted(set(got))  # handed out in key order


def test_a_known_directory_is_listed_in_ranges_side_by_side() -> None:
    keys = [f"{PRE}f{i:05d}" for i in range(10_000)]
    store = Store(keys, 1000)

    async def main() -> tuple[list[str], int]:
        async with trio.open_nursery() as nursery:
            pages = Pages(store.fetch, nursery)
            pages.plan(keys)
            got: list[str] = []
            more = True
            while more:
                page, _, more = await pages.next()
                got += entries(page)
            return got, pages.requests

    got, requests = trio.run(main)
    assert got == keys
    assert requests == 10  # a request per 1,000 keys, as one page after another
    assert sorted(store.calls, key=str) == sorted(
        [(None, None)] + [(None, keys[i]) for i in range(999, 9000, 1000)], key=str
    )
    assert all(token is None for token, _ in store.calls)  # no range needed continuing


def test_without_a_plan_pages_follow_one_another() -> None:
    keys = [f"{PRE}f{i:04d}" for i in range(2500)]
    store = Store(keys, 1000)
    assert trio.run(one_after_another, store) == keys
    assert [token for token, _ in store.calls] == [None, keys[999], keys[1999]]


def test_ranges_never_start_after_a_name_xml_cannot_carry() -> None:
    """A store echoes StartAfter in its answer; Ceph RGW writes a control character there
    as a character reference no XML parser accepts, so such names are no split points."""
    assert splittable("d/f00999 é+%") and not splittable("d/f00999\x1b[0m")
    assert not splittable("d/a\ufffe") and splittable("d/a\t".replace("\t", "b"))
    keys = [f"{PRE}f{i:05d}" for i in range(3000)]
    keys[999] = f"{PRE}f00999\x1b[0m"
    store = Store(keys, 1000)

    async def main() -> list[str | None]:
        async with trio.open_nursery() as nursery:
            pages = Pages(store.fetch, nursery)
            pages.plan(keys)
            more = True
            while more:
                _, _, more = await pages.next()
        return [after for _, after in store.calls]

    starts = trio.run(main)
    assert starts and all(a is None or splittable(a) for a in starts)
