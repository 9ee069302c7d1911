"""Nothing that was closed is lost: SIGKILL the daemon at random moments, remount, verify in S3."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from typing import Any

from tests.support import FEDFS, REPO, Mount

WRITER = r"""
import hashlib, os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
i = 0
while True:
    name = f"f-{seed}-{i:05d}"
    data = rng.randbytes(rng.choice([0, 1, 100, 4096, 65536, 300_000, 1_500_000]))
    try:
        fd = os.open(os.path.join(root, name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        for off in range(0, len(data), 131072):
            os.write(fd, data[off : off + 131072])
        os.close(fd)  # only a file whose close() returned success must survive
    except OSError:
        sys.exit(0)
    print(name, hashlib.sha256(data).hexdigest(), flush=True)
    i += 1
"""


def test_sigkill_at_random_moments_loses_nothing_closed(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    seed = int(os.environ.get("FEDFS_SEED", "4242"))
    rounds = int(os.environ.get("FEDFS_CRASH_ROUNDS", "6"))
    rng = random.Random(seed)
    print(f"crash test seed={seed} rounds={rounds}")
    # a long flush delay keeps many closed files queued (not uploaded) when the kill comes
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 5")
    closed: dict[str, str] = {}
    for r in range(rounds):
        root = m.path(bucket)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(seed * 100 + r)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.3, 2.0))  # the random moment of the crash
        m.kill()
        out, _ = writer.communicate(timeout=60)
        for line in out.splitlines():
            name, digest = line.split()
            closed[name] = digest
        print(f"round {r}: killed after {len(out.splitlines())} closed files")
        m.start()  # recovery uploads every journaled file before the mount answers
    r = subprocess.run(
        [*FEDFS, "sync", str(m.mountpoint)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert r.returncode == 0, r.stderr
    lost, corrupt = [], []
    for name, digest in sorted(closed.items()):
        try:
            body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        except s3.exceptions.NoSuchKey:
            lost.append(name)
            continue
        if hashlib.sha256(body).hexdigest() != digest:
            corrupt.append(name)
    print(f"{len(closed)} closed files checked: {len(lost)} lost, {len(corrupt)} corrupted")
    assert len(closed) > rounds, "the writer closed too few files for the test to mean anything"
    assert lost == [] and corrupt == [], f"seed={seed}: lost {lost[:5]}, corrupted {corrupt[:5]}"
    assert "recovering" in m.log_text()


def test_file_open_at_the_crash_is_uploaded_with_what_reached_the_cache(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 60")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            f"fd = os.open({str(m.path(bucket, 'checkpoint.dat'))!r}, os.O_CREAT | os.O_WRONLY, 0o644)\n"
            "os.write(fd, b'step 1 done\\n')\n"
            "os.fsync(fd)\n"  # durable in the cache: journal committed, file fdatasync'd
            "print('synced', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "synced"
    m.kill()
    writer.kill()
    writer.wait()
    m.start()
    assert s3.get_object(Bucket=bucket, Key="checkpoint.dat")["Body"].read() == b"step 1 done\n"
    assert "checkpoint.dat was open for writing when fedfs stopped" in m.log_text()
