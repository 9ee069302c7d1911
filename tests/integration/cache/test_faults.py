"""Faults a user notices: S3 dying mid-transfer, slow or throttling S3, fedfs killed mid-change.

Covered elsewhere and not repeated here: S3 down at start and during a run of
writes (test_startup_and_outage.py), SIGKILL while files are written
(test_crash.py), a full cache disk (test_cache.py), LDAP stopped mid-run
(test_sharing_ldap.py, test_identity_ldap.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fedfs import config
from tests.support import (
    FEDFS,
    REPO,
    MotoServer,
    Mount,
    TcpProxy,
    ThrottlingProxy,
    UnixUser,
    wait_for,
)

MiB = 1024 * 1024
SMALL_PARTS = 'multipart_threshold = "8MiB"\nmultipart_chunksize = "5MiB"'


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_s3_cut_mid_upload_of_a_large_file_then_restored(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url, store_extra=SMALL_PARTS)
        data = os.urandom(48 * MiB)
        proxy.delay = 0.002  # slow enough that the cut lands inside the multipart upload
        (m.path(bucket) / "big.bin").write_bytes(data)  # close returns: the data is in the cache
        wait_for(
            lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
            "the multipart upload to start",
        )
        proxy.cut()
        wait_for(
            lambda: "event=upload-failed" in m.log_text(), "the failed upload to be logged", 60
        )
        # while S3 is away the file reads back whole from the cache
        assert (m.path(bucket) / "big.bin").read_bytes() == data
        proxy.delay = 0.0
        proxy.restore()
        r = cli("sync", m.mountpoint)
        assert r.returncode == 0, r.stderr
        assert hashlib.sha256(body(s3, bucket, "big.bin")).digest() == hashlib.sha256(data).digest()
        assert "event=upload-resumed" in m.log_text()
    finally:
        proxy.stop()


def test_s3_cut_mid_cold_read_gives_eio_or_the_right_bytes_never_wrong_ones(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    data = os.urandom(40 * MiB)
    s3.put_object(Bucket=bucket, Key="cold.bin", Body=data)
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            extra='block_size = "1MiB"\nreadahead_blocks = 2',
        )
        path = m.path(bucket) / "cold.bin"
        assert path.stat().st_size == len(data)
        proxy.delay = 0.002
        read_so_far = [0]
        outcome: list[object] = []

        def reader() -> None:
            try:
                with open(path, "rb", buffering=0) as f:
                    off = 0
                    while chunk := f.read(256 * 1024):
                        # never a wrong byte, whatever happens to the store
                        assert chunk == data[off : off + len(chunk)], f"wrong bytes at {off}"
                        off += len(chunk)
                        read_so_far[0] = off
                outcome.append(off)
            except OSError as e:
                outcome.append(e)
            except AssertionError as e:
                outcome.append(e)

        t = threading.Thread(target=reader)
        t.start()
        wait_for(lambda: read_so_far[0] >= 4 * MiB, "the cold read to get going", 60)
        proxy.cut()
        time.sleep(3)  # the outage: longer than a connect timeout
        proxy.delay = 0.0
        proxy.restore()
        t.join(180)
        assert not t.is_alive(), "the read hung"
        result = outcome[0]
        assert not isinstance(result, AssertionError), result
        if isinstance(result, OSError):
            assert result.errno == errno.EIO, result
        else:
            assert result == len(data)
        print(f"cold read across the outage: {result!r} after {read_so_far[0]} bytes")
        # after the store is back, the whole file reads correctly
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        proxy.stop()


def test_slow_s3_uploads_complete_and_reads_are_right(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="in/cold.bin", Body=(cold := os.urandom(6 * MiB)))
    proxy = TcpProxy(moto.port).start()
    proxy.delay = 0.02  # 20 ms before every 64 KiB either way
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url)
        root = m.path(bucket)
        files = {f"out/f{i}": os.urandom(i * 300_000) for i in range(6)}
        (root / "out").mkdir()
        for name, content in files.items():
            (root / name).write_bytes(content)
        assert (root / "in" / "cold.bin").read_bytes() == cold
        r = cli("sync", m.mountpoint)
        assert r.returncode == 0, r.stderr
        for name, content in files.items():
            assert body(s3, bucket, name) == content
    finally:
        proxy.stop()


def test_throttling_s3_503_slowdown_uploads_complete_and_reads_are_right(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="in/cold.bin", Body=(cold := os.urandom(12 * MiB)))
    proxy = ThrottlingProxy(moto.port, fraction=0.3, seed=7).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            store_extra=SMALL_PARTS,
            extra='block_size = "1MiB"',
        )
        root = m.path(bucket)
        files = {f"out/f{i}": os.urandom(i * 100_000) for i in range(20)}
        files["out/big"] = os.urandom(20 * MiB)  # multipart: every part may be throttled
        (root / "out").mkdir()
        for name, content in files.items():
            (root / name).write_bytes(content)
        assert (root / "in" / "cold.bin").read_bytes() == cold
        assert sorted(os.listdir(root / "out")) == sorted(n[4:] for n in files)
        r = cli("sync", m.mountpoint)
        assert r.returncode == 0, r.stderr
        for name, content in files.items():
            assert body(s3, bucket, name) == content
        print(f"throttled {proxy.throttled} of {proxy.throttled + proxy.forwarded} requests")
        assert proxy.throttled >= 10  # the store really did push back
    finally:
        proxy.stop()


def s3_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_sigkill_during_a_directory_rename_leaves_every_file_once(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    n = 300
    content = {f"f{i:04d}": f"file {i} ".encode() * (i % 50 + 1) for i in range(n)}
    for name, data in content.items():
        s3.put_object(Bucket=bucket, Key=f"src/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="src/", Body=b"", ContentType="application/x-directory")
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url)
        root = m.path(bucket)
        assert len(os.listdir(root / "src")) == n
        proxy.delay = 0.001  # the rename takes seconds, so the kill lands inside it
        mv = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os; os.rename({str(root / 'src')!r}, {str(root / 'dst')!r})",
            ],
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: len(s3_keys(s3, bucket, "dst/")) >= 20, "the rename to be under way")
        m.kill()
        mv.wait(60)
        copied = len(s3_keys(s3, bucket, "dst/"))
        print(f"killed with {copied} keys copied to dst/")
        proxy.delay = 0.0
        m.start()
        # after the restart, every file is under exactly one of the names, intact
        src, dst = sorted(os.listdir(root / "src")) if (root / "src").exists() else [], []
        if (root / "dst").exists():
            dst = sorted(os.listdir(root / "dst"))
        assert sorted(src + dst) == sorted(content), (len(src), len(dst))
        assert not (src and dst), f"half a rename: {len(src)} under src, {len(dst)} under dst"
        where = "src" if src else "dst"
        for name, data in content.items():
            assert (root / where / name).read_bytes() == data
        # (fedfs's own metadata index objects aside: docs/PERFORMANCE.md)
        keys = {k for k in s3_keys(s3, bucket, "") if not k.startswith(".fedfs-index/")}
        assert keys == {f"{where}/{name}" for name in content} | {f"{where}/"}
    finally:
        proxy.stop()


SHARE_LOOP = r"""
import random, sys
sys.path.insert(0, {repo!r})
from fedfs.control.client import ControlClient
log = open({acks!r}, "a", buffering=1)
rng = random.Random(5)
shared = set()
with ControlClient({sock!r}, timeout=30) as c:
    while True:
        pair = (f"/{bucket}/d{{rng.randrange(7)}}", rng.choice(["user:fedfs-bob", "user:fedfs-carol"]))
        op = "unshare" if pair in shared else "share"
        log.write(f"try {{op}} {{pair[0]}} {{pair[1]}}\n")
        try:
            if op == "share":
                c.call("share", path=pair[0], principal=pair[1], level="read", expires=None)
            else:
                c.call("unshare", path=pair[0], principal=pair[1])
        except Exception as e:
            print("stopped:", type(e).__name__, e, file=sys.stderr)
            sys.exit(0)
        log.write(f"ok {{op}} {{pair[0]}} {{pair[1]}}\n")
        (shared.add if op == "share" else shared.discard)(pair)
"""


def test_sigkill_during_share_and_unshare_keeps_every_acknowledged_change(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser, carol: UnixUser, tmp_path: Path
) -> None:
    m: Mount = make_mount([(bucket, "user:fedfs-alice")])
    root = m.path(bucket)
    for i in range(7):
        assert alice.run("mkdir", root / f"d{i}").returncode == 0
    sock = str(config.load(m.config).control.socket)
    acks = m.mountpoint.parent / "acks"  # beside the mount point: alice can reach it
    acks.touch()
    acks.chmod(0o666)
    code = SHARE_LOOP.format(repo=str(REPO), acks=str(acks), sock=sock, bucket=bucket)
    loop = subprocess.Popen(
        [sys.executable, "-c", code],
        user=alice.uid,
        group=alice.gid,
        extra_groups=[],
        stderr=subprocess.PIPE,
        text=True,
    )

    def ok_lines() -> list[str]:
        if loop.poll() is not None:
            raise AssertionError(
                f"the share loop ended early: {loop.stderr.read() if loop.stderr else ''}"
            )
        return [x for x in acks.read_text().splitlines() if x.startswith("ok ")]

    wait_for(lambda: len(ok_lines()) >= 40, "40 acknowledged changes", 90)
    m.kill()
    _, err = loop.communicate(timeout=60)
    lines = acks.read_text().splitlines()
    print(
        f"killed after {sum(x.startswith('ok ') for x in lines)} acknowledged changes; the loop: {err.strip()[-200:]}"
    )
    expected: dict[tuple[str, str], bool] = {}
    for line in lines:
        kind, op, path, who = line.split()
        if kind == "ok":
            expected[(path, who)] = op == "share"
    in_flight = None
    if lines and lines[-1].startswith("try "):
        _, _, path, who = lines[-1].split()
        in_flight = (path, who)  # not acknowledged: either outcome is right

    m.start()  # the policy store opens
    r = cli("audit", "verify", "--mount", m.mountpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    checked = 0
    for (path, who), held in expected.items():
        if (path, who) == in_flight:
            continue
        r = alice.run(*FEDFS, "grants", root / path.split("/")[-1], "--json")
        assert r.returncode == 0, r.stderr
        found = who.split(":")[1] in r.stdout.decode()
        assert found == held, f"{who} on {path}: acknowledged {'share' if held else 'unshare'}"
        checked += 1
    assert checked >= 5, expected
    # and the kernel enforces the rebuilt policy
    d = next(
        (
            p
            for (p, w), held in expected.items()
            if held and w.endswith("bob") and (p, w) != in_flight
        ),
        None,
    )
    if d is not None:
        assert bob.run("ls", root / d.split("/")[-1]).returncode == 0
