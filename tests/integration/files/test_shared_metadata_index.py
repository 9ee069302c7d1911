"""The shared metadata index: a directory listed on one node needs no HEADs on the next.

What HEADs returned is kept in one index object per directory in the bucket,
so a listing after a remount with an empty cache (or on another node) takes
mode, owner and times from it; an object replaced through S3 shows its new
metadata, and an index that is corrupt or was written without the daemon's S3
key is ignored with a log line, never trusted for mode or owner.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fedfs.meta.index_format import INDEX_PREFIX, IndexEntry, encode, index_key
from tests.support import FEDFS, Mount, UnixUser, wait_for

N = 120
# The nodes that count HEADs keep attributes long enough that none expires during the
# test: every HEAD they send is one the index did not spare.
LONG = "[fs]\nattr_timeout = 60\nentry_timeout = 60\ndir_timeout = 60"


def heads(m: Mount, bucket: str) -> int:
    r = subprocess.run([*FEDFS, "status", "--json", str(m.path(bucket))], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return int(json.loads(r.stdout)["s3"]["by_operation"].get("head_object", 0))


def ls_ln(path: Path) -> dict[str, tuple[str, str, str, str]]:
    """name -> (mode, uid, gid, size) as `ls -ln` shows them."""
    out = subprocess.run(["ls", "-ln", str(path)], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    return {r[-1]: (r[0].rstrip("+."), r[2], r[3], r[4]) for r in rows}


def seed(s3: Any, bucket: str, prefix: str, owner: UnixUser) -> None:
    meta = {"mode": str(0o100640), "uid": str(owner.uid), "gid": str(owner.uid)}

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}f{i:04d}", Body=b"x" * i, Metadata=meta)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(N)))


def index_written(s3: Any, bucket: str, prefix: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=index_key(prefix))["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def list_on_a_first_node(
    make_mount: Any, s3: Any, bucket: str, prefix: str
) -> tuple[Mount, dict[str, tuple[str, str, str, str]]]:
    a: Mount = make_mount([(bucket, "user:root")], name="first")
    assert a.path(bucket, prefix.rstrip("/")).is_dir()
    before = heads(a, bucket)
    shown = ls_ln(a.path(bucket, prefix.rstrip("/")))
    assert len(shown) == N
    assert heads(a, bucket) - before >= N  # never seen: a HEAD each
    wait_for(lambda: index_written(s3, bucket, prefix), "the directory's index")
    return a, shown


def test_an_index_survives_a_remount_with_an_empty_cache_and_saves_every_head(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser
) -> None:
    seed(s3, bucket, "data/", alice)
    a, shown = list_on_a_first_node(make_mount, s3, bucket, "data/")
    assert shown["f0007"] == ("-rw-r-----", str(alice.uid), str(alice.uid), "7")
    a.stop()

    b: Mount = make_mount([(bucket, "user:root")], name="second", extra=LONG)  # empty cache
    assert b.path(bucket, "data").is_dir()  # the directory's own lookup: a HEAD and a LIST
    before = heads(b, bucket)
    assert ls_ln(b.path(bucket, "data")) == shown
    assert heads(b, bucket) - before == 0  # every entry from the index
    assert ".fedfs-index" not in ls_ln(b.path(bucket))  # no directory of the tree
    assert not b.path(bucket, ".fedfs-index").exists()


def test_an_object_replaced_through_s3_is_never_shown_with_its_old_metadata(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, bob: UnixUser
) -> None:
    seed(s3, bucket, "data/", alice)
    a, shown = list_on_a_first_node(make_mount, s3, bucket, "data/")
    # New content and metadata; and the same content with new metadata (a copy in
    # place keeps the ETag: only LastModified moves, in whole seconds on this server).
    new = {"mode": str(0o100600), "uid": str(bob.uid), "gid": str(bob.uid)}
    s3.put_object(Bucket=bucket, Key="data/f0003", Body=b"y" * 300, Metadata=new)
    old_time = s3.head_object(Bucket=bucket, Key="data/f0005")["LastModified"]

    def copied_later() -> bool:
        r = s3.copy_object(
            Bucket=bucket,
            Key="data/f0005",
            CopySource={"Bucket": bucket, "Key": "data/f0005"},
            Metadata=new,
            MetadataDirective="REPLACE",
        )
        return bool(r["CopyObjectResult"]["LastModified"] > old_time)

    wait_for(copied_later, "a copy in a later second", timeout=10, interval=0.2)
    want = {
        "f0003": ("-rw-------", str(bob.uid), str(bob.uid), "300"),
        "f0005": ("-rw-------", str(bob.uid), str(bob.uid), "5"),
    }

    # A fresh node with the index written before the change: HEADs only the two.
    b: Mount = make_mount([(bucket, "user:root")], name="second", extra=LONG)
    assert b.path(bucket, "data").is_dir()
    before = heads(b, bucket)
    now = ls_ln(b.path(bucket, "data"))
    assert {name: now[name] for name in want} == want
    assert now["f0004"] == shown["f0004"]
    assert heads(b, bucket) - before == 2

    # The node that listed before: once its listing is older than its lifetime, the new
    # versions show, never a new size with the old owner or the reverse.
    def shows_new() -> bool:
        now = ls_ln(a.path(bucket, "data"))
        for name in want:
            assert now[name] in (shown[name], want[name]), now[name]
        return all(now[name] == want[name] for name in want)

    wait_for(shows_new, "the replaced objects' new metadata on the first node", timeout=20)


def test_a_corrupt_or_forged_index_is_ignored_with_a_log_line(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser
) -> None:
    seed(s3, bucket, "data/", alice)
    seed(s3, bucket, "other/", alice)
    a, shown = list_on_a_first_node(make_mount, s3, bucket, "data/")
    ls_ln(a.path(bucket, "other"))
    other = wait_for(lambda: index_written(s3, bucket, "other/"), "the other index")
    a.stop()
    # Someone with write access to the bucket but without the daemon's S3 key claims
    # every file for root with mode 4777; then garbage; then a real index of another
    # directory under this one's key.
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]
    claims = {
        o["Key"][len("data/") :]: IndexEntry(
            o["ETag"].strip('"'),
            round(o["LastModified"].timestamp() * 1000),
            o["Size"],
            o["LastModified"].timestamp(),
            {"mode": str(0o104777), "uid": "0", "gid": "0"},
        )
        for o in listed
    }
    forged = encode(bucket, "data/", claims, b"not the daemon's key" * 2)
    for n, body in enumerate([forged, b"fedfs-meta-index 1\n\x00garbage", other]):
        s3.put_object(Bucket=bucket, Key=index_key("data/"), Body=body)
        m: Mount = make_mount([(bucket, "user:root")], name=f"n{n}")
        assert m.path(bucket, "data").is_dir()
        before = heads(m, bucket)
        assert ls_ln(m.path(bucket, "data")) == shown  # what the objects carry
        assert heads(m, bucket) - before >= N
        wait_for(lambda m=m: "event=metadata-index-ignored" in m.log_text(), "the log line")
        m.stop()
    # The node wrote a good index again after its listing.
    wait_for(lambda: index_written(s3, bucket, "data/") not in (forged, other), "a new index")
    assert all(
        o["Key"].startswith(INDEX_PREFIX)
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=".")["Contents"]
    )


def requests_by_operation(m: Mount, bucket: str) -> dict[str, int]:
    r = subprocess.run([*FEDFS, "status", "--json", str(m.path(bucket))], capture_output=True)
    return dict(json.loads(r.stdout)["s3"]["by_operation"])


def test_a_repeated_ls_l_costs_listings_not_a_request_per_file(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser
) -> None:
    """With the default 1 s lifetimes, all expired since the first `ls -l` (its HEADs take
    longer than that): the second lists the directory again and asks nothing per file."""
    n = 1500  # two pages
    meta = {"mode": str(0o100640), "uid": str(alice.uid), "gid": str(alice.uid)}
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(
                    Bucket=bucket, Key=f"big/o{i:05d}", Body=b"z", Metadata=meta
                ),
                range(n),
            )
        )
    m: Mount = make_mount([(bucket, "user:root")])
    d = m.path(bucket, "big")
    assert d.is_dir()
    before = requests_by_operation(m, bucket)
    first = ls_ln(d)
    cold = requests_by_operation(m, bucket)
    assert len(first) == n
    assert n <= cold.get("head_object", 0) - before.get("head_object", 0) < n + 50
    second = ls_ln(d)
    warm = requests_by_operation(m, bucket)
    assert second == first
    used = {op: warm[op] - cold.get(op, 0) for op in warm}
    # Before: a LOOKUP per expired entry cost a HEAD and a LIST, a GETATTR a HEAD.
    assert sum(used.values()) < n / 20, used


def test_a_large_directory_changed_through_s3_lists_each_name_once_as_it_is_now(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, bob: UnixUser
) -> None:
    """Known entries go out as their page arrives while later pages are listed: a directory
    of three pages changed through S3 between two `ls -l` (objects added in the first and
    last pages, removed, replaced with another owner and mode) shows every name once, with
    what the store holds now."""
    n = 2500
    meta = {"mode": str(0o100640), "uid": str(alice.uid), "gid": str(alice.uid)}

    def put(key: str, body: bytes = b"z", m: dict[str, str] = meta) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=m)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: put(f"pages/o{i:05d}"), range(n)))
    m: Mount = make_mount([(bucket, "user:root")])
    d = m.path(bucket, "pages")
    assert d.is_dir()
    first = ls_ln(d)
    assert len(first) == n
    a = str(alice.uid)
    assert set(first.values()) == {("-rw-r-----", a, a, "1")}
    for i in (5, 1700, 2499):
        s3.delete_object(Bucket=bucket, Key=f"pages/o{i:05d}")
    put("pages/a-first", b"new")
    put("pages/z-last", b"newest")
    other = {"mode": str(0o100600), "uid": str(bob.uid), "gid": str(bob.uid)}
    put("pages/o01200", b"replaced", other)
    put("pages/o02400", b"replaced", other)

    def now_shown() -> dict[str, tuple[str, str, str, str]] | None:
        shown = ls_ln(d)
        return shown if "z-last" in shown else None

    second = wait_for(now_shown, "a listing showing what S3 holds now")
    expected = {k: v for k, v in first.items() if k not in ("o00005", "o01700", "o02499")}
    expected["a-first"] = ("-rw-r-----", a, a, "3")
    expected["z-last"] = ("-rw-r-----", a, a, "6")
    for name in ("o01200", "o02400"):
        expected[name] = ("-rw-------", str(bob.uid), str(bob.uid), "8")
    assert second == expected
    # Repeated at once, now that every entry is known again: the same.
    assert ls_ln(d) == expected


def test_a_directory_listed_again_in_ranges_shows_what_the_store_holds_now(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    """A directory listed before is listed again in ranges side by side (tree/pages.py),
    split at the keys of its last listing. Changed through S3 in between: a range that
    grew past a page, a range whose last key is gone, a new subdirectory right after a
    split; the names are those S3 lists now, each once, and the listing costs about a
    request per 1,000 keys."""
    put = lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"r")  # noqa: E731
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, [f"ranges/o{i:05d}" for i in range(2100)]))
    m: Mount = make_mount([(bucket, "user:root")])
    d = m.path(bucket, "ranges")
    first = sorted(p.name for p in d.iterdir())
    assert first == [f"o{i:05d}" for i in range(2100)]
    grown = [f"ranges/o01000-{j:04d}" for j in range(1100)]  # inside the second range
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, [*grown, "ranges/o01999x/inner"]))
    s3.delete_object(Bucket=bucket, Key="ranges/o00999")  # where the first range ends
    s3.delete_object(Bucket=bucket, Key="ranges/o02050")
    expected = sorted({*first, *(k.split("/")[1] for k in grown), "o01999x"} - {"o00999", "o02050"})
    before = requests_by_operation(m, bucket).get("list_objects_v2", 0)

    def now_shown() -> list[str] | None:
        shown = [p.name for p in d.iterdir()]
        return shown if "o01999x" in shown else None

    shown = wait_for(now_shown, "a listing showing what S3 holds now")
    assert len(shown) == len(set(shown))  # each name once
    assert sorted(shown) == expected
    assert (d / "o01999x").is_dir() and (d / "o01000-0500").is_file()
    listed = requests_by_operation(m, bucket).get("list_objects_v2", 0) - before
    assert listed <= 12, listed  # 3,200 keys: 3 ranges, one continued, a few lookups


def test_a_range_that_comes_back_empty_keeps_a_directory_a_directory(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    """A file `log`, a directory `log/` and rotated logs `log.00000`..`log.01999` between
    them in key order: the ranges of the next listing are split inside the rotated logs.
    Once those are deleted through S3, those ranges list nothing; `log` must still wait
    for the range that brings `log/` and show as the directory it is."""
    put = lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"l")  # noqa: E731
    rotated = [f"logs/log.{i:05d}" for i in range(2000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, ["logs/log", "logs/log/today.txt", *rotated]))
        list(pool.map(put, [f"logs/zz{i:04d}" for i in range(500)]))
    m: Mount = make_mount([(bucket, "user:root")])
    d = m.path(bucket, "logs")
    assert len(list(d.iterdir())) == 2501 and (d / "log").is_dir()
    for i in range(0, 2000, 1000):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in rotated[i : i + 1000]]}
        )

    def relisted() -> list[str] | None:
        names = sorted(p.name for p in d.iterdir())
        return names if len(names) < 2501 else None

    names = wait_for(relisted, "a listing without the rotated logs")
    assert names == ["log", *(f"zz{i:04d}" for i in range(500))]
    assert (d / "log").is_dir()
    assert (d / "log" / "today.txt").read_bytes() == b"l"
