"""What the kernel keeps between listings: fewer requests, never stale permissions.

A second `ls -l` within the [fs] lifetimes is answered from the kernel's caches
(readdir leaves out the attributes of entries the kernel already holds, so it keeps
their ACLs too); a share, a chmod or a change from elsewhere still shows at once.
Creating many files in a large directory lists it again rather than asking S3
about every new name, and their uploads wait (a bounded time) for the mount to
be idle, except when `fedfs sync` asks for them.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support import FEDFS, REPO, Mount, UnixUser

LONG = "[fs]\nattr_timeout = 60\nentry_timeout = 60\ndir_timeout = 60"


def status(path: Path) -> dict[str, Any]:
    r = subprocess.run([*FEDFS, "status", "--json", str(path)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def fuse_requests(m: Mount, bucket: str) -> int:
    return int(status(m.path(bucket))["fuse_requests"])


def s3_requests(m: Mount, bucket: str) -> int:
    return int(status(m.path(bucket))["s3"]["requests"])


def ls_l(path: Path) -> list[str]:
    out = subprocess.run(["ls", "-l", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[1:]  # without "total N"


def put_many(s3: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"x" * 10), keys))


def test_a_second_ls_l_costs_no_request_per_entry(make_mount: Any, bucket: str, s3: Any) -> None:
    put_many(s3, bucket, [f"many/f{i:04d}" for i in range(300)])
    m: Mount = make_mount([(bucket, "user:root")], extra=LONG)
    first = ls_l(m.path(bucket, "many"))
    assert len(first) == 300
    before = fuse_requests(m, bucket)
    second = ls_l(m.path(bucket, "many"))
    asked = fuse_requests(m, bucket) - before
    assert second == first
    # opendir, a few readdirs, the directory's own getattr/ACLs, and the status call
    # itself; before, every entry cost a GETXATTR of its ACL (300 more).
    assert asked < 30, asked


def test_a_share_and_a_chmod_show_in_the_next_ls_l_of_cached_entries(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser
) -> None:
    put_many(s3, bucket, [f"team/r{i}.csv" for i in range(20)])
    m: Mount = make_mount([(bucket, "user:root")], extra=LONG)
    d = m.path(bucket, "team")
    first = ls_l(d)
    assert len(first) == 20 and not any(line[10] == "+" for line in first), first
    ls_l(d)  # every entry is now cached in the kernel, attributes and ACLs

    r = subprocess.run(
        [*FEDFS, "share", str(d), "--with", f"user:{alice.name}", "--read"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    shared = ls_l(d)
    assert all(line[10] == "+" for line in shared), shared  # the grant's ACL, at once
    assert alice.run("cat", d / "r3.csv").returncode == 0

    os.chmod(d / "r5.csv", 0o600)
    after = {line.split()[-1]: line for line in ls_l(d)}
    assert after["r5.csv"].startswith("-rw-------"), after["r5.csv"]
    assert after["r6.csv"].startswith("-rw-r"), after["r6.csv"]


def test_creating_many_files_in_a_large_directory_lists_it_instead_of_asking_per_name(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    put_many(s3, bucket, [f"big/o{i:05d}" for i in range(1500)])
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 30")
    d = m.path(bucket, "big")
    assert len(os.listdir(d)) == 1500
    time.sleep(1.2)  # older than the 1 s listing lifetime
    before = s3_requests(m, bucket)
    for i in range(100):
        fd = os.open(d / f"new{i:03d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
    used = s3_requests(m, bucket) - before
    # A HEAD and a LIST per name would be 200; a few names, then the two pages of a
    # fresh listing (and the status calls) answer the rest.
    assert used < 30, used
    # An object put through S3 after the last listing is still seen: an exclusive
    # create of its name fails.
    s3.put_object(Bucket=bucket, Key="big/late", Body=b"from elsewhere")
    time.sleep(1.2)
    try:
        os.open(d / "late", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError as e:
        assert e.errno == errno.EEXIST
    else:
        raise AssertionError("created a name that exists in S3")
    assert len(os.listdir(d)) == 1500 + 1 + 100


def in_s3(s3: Any, bucket: str, prefix: str) -> int:
    """Objects under prefix, not counting the directory's own marker."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(1 for p in pages for o in p.get("Contents", []) if o["Key"] != prefix)


def write_files_for(d: Path, seconds: float, s3: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """Create small files without pause for `seconds`; (files made, of them in S3 at the end)."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        (d / f"f{n:05d}").write_bytes(b"z" * 100)
        n += 1
    return n, in_s3(s3, bucket, prefix)


def test_uploads_wait_for_a_busy_mount_only_so_long(make_mount: Any, bucket: str, s3: Any) -> None:
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 0.1\nflush_busy_max = 1")
    d = m.path(bucket, "burst")
    d.mkdir()
    # Busy for much longer than flush_busy_max: uploads start anyway, during the burst.
    made, uploaded = write_files_for(d, 6.0, s3, bucket, "burst/")
    assert made > 20 and uploaded > 0, (made, uploaded)
    r = subprocess.run([*FEDFS, "sync", str(d)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert in_s3(s3, bucket, "burst/") == made


def test_sync_uploads_at_once_while_the_mount_stays_busy(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 0.1\nflush_busy_max = 600")
    d = m.path(bucket, "busy")
    d.mkdir()
    # Another process keeps the mount busy (opendir and readdir reach the daemon every
    # time) while the files are written and synced: their uploads could wait 600 s.
    keep_busy = subprocess.Popen(
        [
            "python3",
            "-c",
            "import os, sys, time\nend = time.monotonic() + 120\n"
            "while time.monotonic() < end: os.listdir(sys.argv[1]); time.sleep(0.005)",
            str(d),
        ]
    )
    try:
        time.sleep(0.5)
        for i in range(20):
            (d / f"first{i}").write_bytes(b"q" * 100)
        time.sleep(0.3)
        r = subprocess.run(
            [*FEDFS, "sync", str(d)], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert in_s3(s3, bucket, "busy/") == 20
    finally:
        keep_busy.kill()
        keep_busy.wait()
