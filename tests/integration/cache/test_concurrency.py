"""Many users at once: 16 processes under 16 uids on shared and private trees.

Each worker runs a random mix of create, write, read, rename, unlink, mkdir,
rmdir, stat and listdir for a bounded time, and counts every errno a local
filesystem would not give in its situation. Meanwhile the mount root must
answer a stat every second; afterwards the daemon's open file descriptors and
resident memory must not have grown beyond the bounds in docs/OPERATIONS.md.

FEDFS_CONCURRENCY_SECONDS sets the CI run's length (default 60); the slow test
runs FEDFS_CONCURRENCY_LONG_SECONDS (default 1800) with 20 workers (uids 2950-2969).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, Mount, ensure_user, wait_for

FD_GROWTH_MAX = 16  # descriptors: the daemon's pools are sized by config, not by load
RSS_GROWTH_MAX = 192 * 1024 * 1024  # bytes, as documented in docs/OPERATIONS.md
PROBE_BOUND = 10.0  # seconds a stat of the mount root may take while the load runs

WORKER = r"""
import errno, json, os, random, sys, time
root, me, seconds, seed, peers = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
shared = os.path.join(root, "shared")
mine = os.path.join(root, "home", f"u{me}")
# What a local disk may answer too, with other processes racing on the same names.
RACES = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY}
ops, unexpected, wrong = 0, [], []
expect = {}  # my private files -> content, to check every read of them

def content(name, version):
    return (f"{name} v{version} " * rng.randint(1, 3000)).encode()

def attempt(what, fn, allowed=RACES):
    global ops
    ops += 1
    try:
        value = fn()
        return True if value is None else value
    except OSError as e:
        if e.errno not in allowed:
            unexpected.append(f"{what}: {e}")
        return None

def write(path, data):
    with open(path, "wb") as f:
        return f.write(data)

def read(path):
    with open(path, "rb") as f:
        return f.read()

deadline = time.monotonic() + seconds
v = 0
while time.monotonic() < deadline:
    v += 1
    op = rng.randrange(12)
    s = os.path.join(shared, f"s{rng.randrange(40)}")        # shared file names everyone uses
    d = os.path.join(shared, f"dir{rng.randrange(8)}")          # shared directory names
    p = os.path.join(mine, f"p{rng.randrange(20)}")
    if op == 0:   # write a private file and read it back at once
        data = content(p, v)
        if attempt("write private", lambda: write(p, data)) is not None:
            expect[p] = data
        got = attempt("read private", lambda: read(p))
        if got is not None and got != expect.get(p):
            wrong.append(p)
    elif op == 1:  # rename a private file
        q = os.path.join(mine, f"p{rng.randrange(20)}")
        if p in expect and attempt("rename private", lambda: os.rename(p, q)) is not None:
            expect[q] = expect.pop(p)
    elif op == 2:  # unlink a private file
        if attempt("unlink private", lambda: os.unlink(p)) is not None:
            expect.pop(p, None)
    elif op == 3:  # create/overwrite a shared file: others' files in the sticky dir are theirs
        attempt("write shared", lambda: write(s, content(s, v)), RACES | {errno.EACCES})
    elif op == 4:  # read a shared file: one version (a prefix while it is being written), never a mix
        got = attempt("read shared", lambda: read(s), RACES | {errno.EACCES})
        if isinstance(got, bytes) and got:
            unit = b" ".join(got.split(b" ", 2)[:2]) + b" "
            if got != (unit * (len(got) // len(unit) + 1))[: len(got)]:
                wrong.append(s)
    elif op == 5:  # unlink a shared file: in a sticky directory only your own (EPERM/EACCES)
        attempt("unlink shared", lambda: os.unlink(s), RACES | {errno.EPERM, errno.EACCES})
    elif op == 6:  # mkdir / rmdir on shared names
        attempt("mkdir shared", lambda: os.mkdir(d))
    elif op == 7:
        attempt("rmdir shared", lambda: os.rmdir(d), RACES | {errno.EPERM, errno.EACCES})
    elif op == 8:  # a file inside a shared directory
        f = os.path.join(d, f"x{me}")
        attempt("write in shared dir", lambda: write(f, content(f, v)), RACES | {errno.EACCES})
        attempt("unlink in shared dir", lambda: os.unlink(f), RACES | {errno.EACCES})
    elif op == 9:  # rename my shared file to another shared name
        src = os.path.join(shared, f"s{rng.randrange(40)}")
        attempt("rename shared", lambda: os.rename(src, s), RACES | {errno.EPERM, errno.EACCES})
    elif op == 10:  # stat and list
        attempt("stat shared", lambda: os.stat(s))
        attempt("listdir shared", lambda: os.listdir(shared))
        attempt("listdir private", lambda: os.listdir(mine), set())
    else:  # another user's private tree is closed to me
        other = os.path.join(root, "home", f"u{(me + 1 + rng.randrange(peers - 1)) % peers}")
        try:
            os.listdir(other)
            unexpected.append(f"listed {other}, which is private to another user")
        except PermissionError:
            pass
        ops += 1
for path, data in expect.items():  # every private file ends as last written
    got = attempt("final read", lambda: read(path), set())
    if got != data:
        wrong.append(path)
print(json.dumps({"me": me, "ops": ops, "unexpected": unexpected[:20], "wrong": wrong[:20]}))
"""


def daemon_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def daemon_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def run_load(m: Mount, bucket: str, workers: int, seconds: float) -> None:
    users = [ensure_user(f"fedfs-c{i:02d}", 2950 + i) for i in range(workers)]
    root = m.path(bucket)
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o1777)
    (root / "home").mkdir()
    os.chmod(root / "home", 0o755)
    for i, u in enumerate(users):
        home = root / "home" / f"u{i}"
        home.mkdir()
        os.chown(home, u.uid, u.gid)
        os.chmod(home, 0o700)
    assert m.proc is not None
    pid = m.proc.pid
    subprocess.run([*FEDFS, "sync", str(m.mountpoint)], cwd=REPO, check=True, capture_output=True)
    fds_before, rss_before = daemon_fds(pid), daemon_rss(pid)

    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(root),
                str(i),
                str(seconds),
                str(1000 + i),
                str(workers),
            ],
            user=u.uid,
            group=u.gid,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        for i, u in enumerate(users)
    ]
    slowest = 0.0
    while any(p.poll() is None for p in procs):
        answered: list[float] = []

        def probe(answered: list[float] = answered) -> None:
            t = time.monotonic()
            os.stat(m.mountpoint)
            answered.append(time.monotonic() - t)

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(PROBE_BOUND)
        assert answered, f"the mount root did not answer a stat within {PROBE_BOUND}s under load"
        slowest = max(slowest, answered[0])
        time.sleep(1)
    total = 0
    problems = []
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        r = json.loads(out)
        total += r["ops"]
        if r["unexpected"] or r["wrong"]:
            problems.append(r)
    assert total > workers * 10, f"only {total} operations ran"
    assert problems == [], problems

    r = subprocess.run(
        [*FEDFS, "sync", str(m.mountpoint)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    # the kernel forgets inodes and handles lazily: settle, then count
    fds_after = wait_for(
        lambda: (n := daemon_fds(pid)) <= fds_before + FD_GROWTH_MAX and n,
        f"the daemon's descriptors to come back near {fds_before}",
        30,
    )
    rss_after = daemon_rss(pid)
    print(
        f"{workers} workers x {seconds:.0f}s: {total} operations; slowest root stat "
        f"{slowest:.2f}s; daemon fds {fds_before} -> {fds_after}; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )
    assert rss_after - rss_before <= RSS_GROWTH_MAX, (rss_before, rss_after)


def test_sixteen_users_at_once(make_mount: Any, bucket: str) -> None:
    seconds = float(os.environ.get("FEDFS_CONCURRENCY_SECONDS", "60"))
    m: Mount = make_mount([(bucket, "user:root")])
    run_load(m, bucket, 16, seconds)


@pytest.mark.slow
def test_twenty_users_for_half_an_hour(make_mount: Any, bucket: str) -> None:
    seconds = float(os.environ.get("FEDFS_CONCURRENCY_LONG_SECONDS", "1800"))
    m: Mount = make_mount([(bucket, "user:root")])
    run_load(m, bucket, 20, seconds)


def _open_and_write(
    path: Path, offset: int, byte: bytes, start: threading.Barrier, errors: list[BaseException]
) -> None:
    try:
        start.wait()
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(byte * 4096)
            f.flush()
            time.sleep(0.3)  # still open while the other open finishes
    except BaseException as e:  # reported by the test, in its own thread
        errors.append(e)


def test_two_writers_opening_an_old_file_at_once_both_keep_their_writes(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    """Both opens fetch the object into a staging copy; the slower one must not replace
    the copy the faster one's writer has written to (it did: that write was lost)."""
    size = 24 * 1024 * 1024
    old = os.urandom(size)
    m: Mount = make_mount([(bucket, "user:root")])
    for trial in range(4):
        key = f"both{trial}.bin"
        s3.put_object(Bucket=bucket, Key=key, Body=old)  # not cached: each open fetches it
        path = m.path(bucket, key)
        path.stat()
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        threads = [
            threading.Thread(target=_open_and_write, args=(path, 0, b"A", start, errors)),
            threading.Thread(target=_open_and_write, args=(path, size // 2, b"B", start, errors)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        r = subprocess.run([*FEDFS, "sync", str(path)], capture_output=True, cwd=REPO)
        assert r.returncode == 0, r.stderr.decode()
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        want = b"A" * 4096 + old[4096 : size // 2] + b"B" * 4096 + old[size // 2 + 4096 :]
        assert len(got) == size
        assert got[:4096] == b"A" * 4096, f"trial {trial}: the first writer's bytes were lost"
        assert got[size // 2 : size // 2 + 4096] == b"B" * 4096, f"trial {trial}: B lost"
        assert got == want
