"""Fair share: one local user's load never refuses or starves another user's request.

mallory (a real uid with no grant anywhere) attacks the daemon the way a
hostile user on a shared login node can: many control connections, stage
floods, a path oracle over `pending`. While each attack runs, a victim's
ordinary request must succeed; its latency is printed and recorded beside the
attack's (never asserted: machines are noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.security.test_isolation import fedfs_as, raw_control
from tests.support import FEDFS, MotoServer, Mount, ThrottlingProxy, UnixUser, ensure_user, wait_for

# Run as mallory: open N control connections, send one request on each, print
# how many were served, then keep every served one busy (a request every
# second) until stdin closes.
HOG = r"""
import json, socket, sys, threading
path, n, op = sys.argv[1], int(sys.argv[2]), sys.argv[3]
served, busy = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rwb")
    try:
        f.write(json.dumps({"v": 1, "op": op, "args": {}}).encode() + b"\n"); f.flush()
        answer = json.loads(f.readline() or b"{}")
    except OSError:  # refused and closed before the request was sent
        answer = {}
    if answer.get("ok"):
        served.append((s, f))
    else:
        busy += 1
        s.close()
print(json.dumps({"served": len(served), "busy": busy}), flush=True)
stop = threading.Event()
def keep_busy():
    while not stop.wait(1.0):
        for s, f in served:
            try:
                f.write(json.dumps({"v": 1, "op": op, "args": {}}).encode() + b"\n"); f.flush()
                f.readline()
            except OSError:
                pass
threading.Thread(target=keep_busy, daemon=True).start()
sys.stdin.readline()
stop.set()
"""


MiB = 1024 * 1024


class SlowStore(ThrottlingProxy):
    """The S3 server behind a proxy that is a little slow on block reads and counts them.

    `peak_reads` is the most ranged GETs (block fetches) in flight at once;
    put_delay slows every upload.
    """

    def __init__(self, target_port: int, delay: float = 0.05, put_delay: float = 0.0) -> None:
        import threading

        super().__init__(target_port, fraction=0.0)
        self.in_flight = self.peak_reads = 0
        self.reads = self.puts = 0
        lock = threading.Lock()
        handler = self._server.RequestHandlerClass
        forward = handler.do_GET  # type: ignore[attr-defined]
        forward_put = handler.do_PUT  # type: ignore[attr-defined]
        proxy = self

        def slow_put(req: Any) -> None:
            with lock:
                proxy.puts += 1
            threading.Event().wait(put_delay)  # a slower store, not a test pause
            forward_put(req)

        if put_delay:
            handler.do_PUT = slow_put  # type: ignore[attr-defined]

        def counted(req: Any) -> None:
            if not req.headers.get("Range"):
                return forward(req)  # type: ignore[no-any-return]
            with lock:
                proxy.in_flight += 1
                proxy.reads += 1
                proxy.peak_reads = max(proxy.peak_reads, proxy.in_flight)
            try:
                threading.Event().wait(delay)  # a slower store, not a test pause
                forward(req)
            finally:
                with lock:
                    proxy.in_flight -= 1

        handler.do_GET = counted  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def mallory() -> UnixUser:
    return ensure_user("fedfs-mallory", 2914)


def as_user(user: UnixUser, code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def timed(fn: Callable[[], subprocess.CompletedProcess[bytes]]) -> tuple[float, Any]:
    began = time.monotonic()
    result = fn()
    return time.monotonic() - began, result


def report(record_property: Callable[[str, object], None], **latencies: float) -> None:
    """Latencies side by side in the test output (-s) and the junit properties."""
    line = "  ".join(f"{k}={v * 1000:.0f}ms" for k, v in latencies.items())
    print(f"\nlatency: {line}")
    for k, v in latencies.items():
        record_property(k, round(v, 4))


@pytest.fixture
def shared(make_mount: Any, bucket: str, alice: UnixUser) -> tuple[Mount, Path, str]:
    """alice's bucket with a small file; the control socket's path."""
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    r = alice.run("sh", "-c", f"mkdir {root}/proj && echo hello > {root}/proj/small.txt")
    assert r.returncode == 0, r.stderr.decode()
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    return m, root, sock


@pytest.fixture
def hog(mallory: UnixUser) -> Iterator[Callable[[str, int, str], dict[str, int]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(sock: str, n: int, op: str) -> dict[str, int]:
        p = as_user(mallory, HOG, sock, str(n), op)
        procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line, p.stderr.read().decode() if p.stderr else ""
        counts: dict[str, int] = json.loads(line)
        return counts

    yield start
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()
        p.wait(30)


def test_one_users_connections_never_refuse_another_users_share_status_or_unshare(
    shared: tuple[Mount, Path, str],
    alice: UnixUser,
    bob: UnixUser,
    mallory: UnixUser,
    hog: Callable[[str, int, str], dict[str, int]],
    record_property: Callable[[str, object], None],
) -> None:
    m, root, sock = shared
    quiet, r = timed(lambda: fedfs_as(alice, "status", m.mountpoint))
    assert r.returncode == 0, r.stderr.decode()

    counts = hog(sock, 70, "team-list")
    # mallory holds as many connections as one user may, and is told so for the rest
    assert counts["served"] < 70 and counts["busy"] > 0, counts

    share, r = timed(
        lambda: fedfs_as(alice, "share", root / "proj", "--with", f"user:{bob.name}", "--read")
    )
    assert r.returncode == 0, r.stderr.decode()
    status, r = timed(lambda: fedfs_as(alice, "status", m.mountpoint))
    assert r.returncode == 0, r.stderr.decode()
    unshare, r = timed(
        lambda: fedfs_as(alice, "unshare", root / "proj", "--with", f"user:{bob.name}")
    )
    assert r.returncode == 0, r.stderr.decode()
    r = fedfs_as(mallory, "status", root)
    assert r.returncode == 1 and b"(at most 16 per user)" in r.stderr, r
    # root (the admin) is never held to a user's limit either
    r = subprocess.run([*FEDFS, "status", str(m.mountpoint)], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    report(
        record_property,
        victim_status_quiet=quiet,
        victim_share_under_attack=share,
        victim_status_under_attack=status,
        victim_unshare_under_attack=unshare,
    )
    print(f"attack: mallory held {counts['served']} connections, {counts['busy']} refused")
    wait_for(lambda: m.proc is not None and m.proc.poll() is None, "the daemon to keep running")


def test_a_user_holding_all_her_connections_can_still_unshare(
    shared: tuple[Mount, Path, str],
    alice: UnixUser,
    bob: UnixUser,
    mallory: UnixUser,
    hog: Callable[[str, int, str], dict[str, int]],
) -> None:
    _, root, sock = shared
    closed = root / "closed"  # created private: only grants open it
    r = alice.run("sh", "-c", f"umask 077 && mkdir {closed} && echo hello > {closed}/small.txt")
    assert r.returncode == 0, r.stderr.decode()
    r = fedfs_as(alice, "share", closed, "--with", f"user:{mallory.name}", "--manage")
    assert r.returncode == 0, r.stderr.decode()
    r = fedfs_as(mallory, "share", closed, "--with", f"user:{bob.name}", "--read")
    assert r.returncode == 0, r.stderr.decode()
    assert bob.run("cat", closed / "small.txt").stdout == b"hello\n"

    counts = hog(sock, 20, "team-list")
    assert counts["busy"] > 0, counts
    r = fedfs_as(mallory, "status", root)
    assert r.returncode == 1 and b"(at most 16 per user)" in r.stderr, r
    # a revocation comes through the reserve of her connections
    r = fedfs_as(mallory, "unshare", closed, "--with", f"user:{bob.name}")
    assert r.returncode == 0, r.stderr.decode()
    wait_for(
        lambda: bob.run("cat", closed / "small.txt").returncode != 0,
        "bob's read to be refused",
    )


def test_pending_and_sync_of_a_path_tell_only_what_stat_would(
    make_mount: Any, bucket: str, alice: UnixUser, mallory: UnixUser
) -> None:
    # uploads wait an hour: alice's file stays pending while mallory asks about it
    m: Mount = make_mount([(bucket, f"user:{alice.name}")], extra="flush_delay = 3600")
    root = m.path(bucket)
    r = alice.run(
        "sh",
        "-c",
        f"mkdir -m 700 {root}/private && head -c 314572 /dev/zero > {root}/private/big.bin"
        f" && mkdir {root}/open && echo hi > {root}/open/note.txt",
    )
    assert r.returncode == 0, r.stderr.decode()
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    hidden, missing = f"/{bucket}/private/big.bin", f"/{bucket}/private/none.bin"
    # what stat tells mallory: nothing, the same for the file and for a missing name
    r = mallory.run("stat", "-c", "%s", root / "private" / "big.bin")
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r

    answers = raw_control(
        mallory,
        sock,
        *(
            {"op": op, "args": {"path": path}}
            for op in ("pending", "sync")
            for path in (hidden, missing, f"/{bucket}/private", f"/{bucket}/private/")
        ),
    )
    nothing = {
        "drain_timeout": 30.0,
        "files": 0,
        "bytes": 0,
        "sent": 0,
        "open": [],
        "failed": [],
        "refused": [],
    }
    assert all(a == {"v": 1, "ok": True, "result": nothing} for a in answers), answers

    # what she may stat she may ask about: a file in a directory she can search
    r = mallory.run("stat", "-c", "%s", root / "open" / "note.txt")
    assert r.returncode == 0 and r.stdout == b"3\n", r
    (visible,) = raw_control(mallory, sock, {"op": "pending", "args": {"path": f"/{bucket}/open"}})
    assert visible["result"]["files"] == 1 and visible["result"]["bytes"] == 3, visible
    # the owner is answered about her own private file, and mallory's sync did not upload it
    (mine,) = raw_control(alice, sock, {"op": "pending", "args": {"path": hidden}})
    assert mine["result"]["files"] == 1 and mine["result"]["bytes"] == 314572, mine


def test_a_stage_flood_takes_its_share_and_a_cached_read_goes_on(
    make_mount: Any,
    moto: MotoServer,
    bucket: str,
    s3: Any,
    bob: UnixUser,
    mallory: UnixUser,
    record_property: Callable[[str, object], None],
) -> None:
    body = os.urandom(3 * MiB)
    for i in range(60):
        s3.put_object(Bucket=bucket, Key=f"pub/f{i:03d}.bin", Body=body)
    s3.put_object(Bucket=bucket, Key="bob/small.txt", Body=b"bob's notes\n")
    store = SlowStore(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=store.url,
            store_extra="max_connections = 4",
            extra='block_size = "1MiB"',
        )
        root = m.path(bucket)
        small = root / "bob" / "small.txt"
        r = bob.run("cat", small)  # now in the cache
        assert r.returncode == 0 and r.stdout == b"bob's notes\n", r
        quiet, r = timed(lambda: bob.run("cat", small))
        assert r.returncode == 0, r

        flood = [
            subprocess.Popen(
                [*FEDFS, "stage", str(root / "pub")],
                user=mallory.uid,
                group=mallory.gid,
                extra_groups=[],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
            )
            for _ in range(6)
        ]
        wait_for(lambda: store.reads >= 4, "mallory's stage-in to reach the store")
        during, r = timed(lambda: bob.run("cat", small))
        assert r.returncode == 0 and r.stdout == b"bob's notes\n", r
        stat_during, r = timed(lambda: bob.run("stat", "-c", "%s", small))
        assert r.returncode == 0, r
        outs = [p.communicate(timeout=600) for p in flood]
        assert all(p.returncode == 0 for p in flood), outs
        assert all(b"staged 60 files" in out for out, _ in outs), outs
        # stage-in never held more than half of the daemon's 4 S3 connections, so a
        # read of something uncached always found one free
        assert store.peak_reads <= 2, store.peak_reads
        report(
            record_property,
            victim_cat_quiet=quiet,
            victim_cat_under_stage_flood=during,
            victim_stat_under_stage_flood=stat_during,
        )
        print(
            f"attack: 6 parallel stage requests, {store.reads} block reads, peak {store.peak_reads}"
        )
    finally:
        store.stop()


# Run as mallory: hold up to N files open for writing below a directory; print
# how many opened and the errors of the rest; keep them open until stdin closes.
HOLD_OPEN = r"""
import errno, json, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
held, errors = [], {}
for i in range(n):
    try:
        held.append(os.open(f"{d}/f{i:05d}", os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        errors[name] = errors.get(name, 0) + 1
print(json.dumps({"opened": len(held), "errors": errors}), flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def low_fd_limit() -> Iterator[None]:
    """Daemons started meanwhile inherit a soft open-files limit of 1,500 (hard unchanged)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1500), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_files_held_open_for_writing_by_one_user_leave_descriptors_for_others(
    make_mount: Any,
    bucket: str,
    alice: UnixUser,
    mallory: UnixUser,
    low_fd_limit: None,
    record_property: Callable[[str, object], None],
) -> None:
    m: Mount = make_mount([(bucket, "user:root")], extra="[fs]\nopen_for_writing_per_user = 1000")
    root = m.path(bucket)
    (root / "pub").mkdir()
    os.chmod(root / "pub", 0o1777)
    quiet, r = timed(lambda: alice.run("sh", "-c", f"echo before > {root}/pub/before.txt"))
    assert r.returncode == 0, r.stderr.decode()

    # mallory tries to hold 1,600 files open for writing: more than the daemon's start limit
    attack = as_user(mallory, HOLD_OPEN, str(root / "pub" / "mallory"), "1600")
    try:
        assert attack.stdout is not None
        line = attack.stdout.readline()
        assert line, attack.stderr.read().decode() if attack.stderr else ""
        held = json.loads(line)
        during, r = timed(lambda: alice.run("sh", "-c", f"echo mine > {root}/pub/new.txt"))
        assert r.returncode == 0, r.stderr.decode()
        status_took, r = timed(lambda: fedfs_as(alice, "status", m.mountpoint))
        assert r.returncode == 0, r.stderr.decode()
        # alice sees her own share; the rest is not hers to know
        assert b"fedfs-alice:" in r.stdout and b"fedfs-mallory" not in r.stdout, r.stdout
        # mallory got her share and "Too many open files" beyond it
        assert held == {"opened": 1000, "errors": {"EMFILE": 600}}, held
        # root (the admin) sees who holds what
        r = subprocess.run(
            [*FEDFS, "status", str(m.mountpoint)], capture_output=True, check=False, cwd="/"
        )
        assert b"user       fedfs-mallory: 1000 open for writing" in r.stdout, r.stdout
        report(
            record_property,
            victim_create_quiet=quiet,
            victim_create_under_attack=during,
            victim_status_under_attack=status_took,
        )
        print(f"attack: mallory held {held['opened']} files open, refused {held['errors']}")
    finally:
        assert attack.stdin is not None
        attack.stdin.close()
        attack.wait(60)
    assert (root / "pub" / "new.txt").read_text() == "mine\n"


def test_a_small_file_is_uploaded_in_turn_not_behind_another_users_backlog(
    make_mount: Any,
    moto: MotoServer,
    bucket: str,
    alice: UnixUser,
    mallory: UnixUser,
    record_property: Callable[[str, object], None],
) -> None:
    store = SlowStore(moto.port, put_delay=0.1).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=store.url,
            extra="uploads = 2\nflush_delay = 0",
        )
        root = m.path(bucket)
        (root / "pub").mkdir()
        os.chmod(root / "pub", 0o1777)
        sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
        # mallory queues 300 uploads (15 s of them at 2 at a time)
        r = mallory.python(
            "import os, sys\n"
            f"os.mkdir({str(root / 'pub' / 'm')!r})\n"
            "for i in range(300):\n"
            f"    open(f'{root}/pub/m/f{{i:03d}}', 'w').write('x' * 100)\n"
        )
        assert r.returncode == 0, r.stderr.decode()
        # her backlog is on its way before alice writes
        wait_for(lambda: store.puts >= 4, "mallory's uploads to start")
        r = alice.run("sh", "-c", f"echo results > {root}/pub/alice.txt")
        assert r.returncode == 0, r.stderr.decode()
        took, r = timed(lambda: fedfs_as(alice, "sync", root / "pub" / "alice.txt"))
        assert r.returncode == 0, r.stderr.decode()
        (answer,) = raw_control(mallory, sock, {"op": "pending", "args": {}})
        mallory_left = answer["result"]["files"]
        # alice's one file went up in turn: most of mallory's backlog is still queued
        assert mallory_left >= 100, answer
        # her closed files wait for their turn without holding a descriptor each
        r = subprocess.run(
            [*FEDFS, "status", "--json", str(m.mountpoint)], capture_output=True, check=True
        )
        descriptors = json.loads(r.stdout)["descriptors"]
        assert descriptors["open"] < 100, descriptors
        report(record_property, victim_sync_behind_backlog=took)
        print(f"attack: 300 queued uploads of mallory's, {mallory_left} still queued after")
    finally:
        store.stop()
