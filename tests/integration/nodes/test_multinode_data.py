"""Data across nodes: two mounts of one bucket, as two compute nodes would have.

Each mount is a real `fedfs mount` process with its own node name, state and
cache; they share only the S3 server (and, in the last test, the clean cache
directory, as nodes sharing a Lustre directory would).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import FEDFS, REPO, Mount, wait_for

TTL = 1.0  # the mounts' attribute TTL (the default)


def sync(m: Mount, path: Path) -> None:
    r = subprocess.run([*FEDFS, "sync", str(path)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()


def status(path: Path) -> dict[str, Any]:
    r = subprocess.run([*FEDFS, "status", "--json", str(path)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def two_nodes(make_mount: Any, bucket: str, extra: str = "") -> tuple[Mount, Mount]:
    a = make_mount(
        [(bucket, "user:root")], name="nodeA", policy_extra='node = "nodeA"', extra=extra
    )
    b = make_mount(
        [(bucket, "user:root")], name="nodeB", policy_extra='node = "nodeB"', extra=extra
    )
    return a, b


def test_a_file_closed_on_one_node_is_read_with_its_new_content_on_another(
    make_mount: Any, bucket: str
) -> None:
    a, b = two_nodes(make_mount, bucket)
    fa, fb = a.path(bucket, "result.dat"), b.path(bucket, "result.dat")
    fa.write_bytes(b"version 1\n")
    sync(a, fa)
    assert (
        wait_for(lambda: fb.exists() and fb.read_bytes(), "B sees the file", 10) == b"version 1\n"
    )
    # B has it cached (kernel pages and attributes); A rewrites it with a different length.
    assert fb.read_bytes() == b"version 1\n"
    fa.write_bytes(b"version 2, longer\n")
    sync(a, fa)
    written = time.monotonic()
    time.sleep(TTL + 0.2)  # B's attributes are now older than the TTL: open() revalidates
    assert fb.read_bytes() == b"version 2, longer\n"
    # and a same-length rewrite (only the ETag changes) is seen too, not served from B's cache
    fa.write_bytes(b"version 3, longer\n")
    sync(a, fa)
    time.sleep(TTL + 0.2)
    assert fb.read_bytes() == b"version 3, longer\n"
    assert time.monotonic() - written < 60


def test_two_nodes_writing_one_file_keep_both_versions_and_say_so(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    a, b = two_nodes(make_mount, bucket, extra="flush_delay = 5")
    fa, fb = a.path(bucket, "shared.txt"), b.path(bucket, "shared.txt")
    fa.write_bytes(b"base\n")
    sync(a, fa)
    wait_for(lambda: fb.exists() and fb.read_bytes() == b"base\n", "B reads the base", 10)
    # Both open the version they know and write before either upload lands.
    with open(fa, "r+b") as f:
        f.write(b"from A\n")
    with open(fb, "r+b") as f:
        f.write(b"from B\n")
    sync(a, fa)
    sync(b, fb)
    keys = {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
    }
    assert keys["shared.txt"] == b"from A\n"  # A uploaded first
    kept = [k for k in keys if k.startswith("shared.txt.fedfs-conflict-nodeB-")]
    assert len(kept) == 1, keys
    assert keys[kept[0]] == b"from B\n"  # nothing lost: B's version is beside it
    assert "event=upload-conflict" in b.log_text() and kept[0] in b.log_text()
    assert status(b.path(bucket))["uploads"]["conflicts"] == 1
    assert status(a.path(bucket))["uploads"]["conflicts"] == 0
    # B now shows the version in the store; both versions are findable through the mount.
    time.sleep(TTL + 0.2)
    assert fb.read_bytes() == b"from A\n"
    assert b.path(bucket, kept[0]).read_bytes() == b"from B\n"


def test_a_shared_clean_cache_stays_correct_while_two_nodes_fill_and_evict_it(
    make_mount: Any, bucket: str, s3: Any, tmp_path: Path
) -> None:
    shared = tmp_path / "lustre-clean"
    extra = "\n".join(
        [f'clean_dir = "{shared}"', 'size = "8MiB"', 'block_size = "1MiB"', "readahead_blocks = 1"]
    )
    rng = random.Random(5)
    objects = {f"obj{i}": rng.randbytes(3 * 1024 * 1024 + i * 4097) for i in range(8)}  # 24+ MiB
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    a, b = two_nodes(make_mount, bucket, extra=extra)
    bad: list[str] = []
    reads = [0]

    def reader(m: Mount, seed: int) -> None:
        r = random.Random(seed)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not bad:
            key = r.choice(list(objects))
            want = objects[key]
            off = r.randrange(0, len(want) - 1)
            n = r.randrange(1, 2 * 1024 * 1024)
            fd = os.open(m.path(bucket, key), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # make reads reach fedfs
                got = os.pread(fd, n, off)
            finally:
                os.close(fd)
            reads[0] += 1
            if got != want[off : off + n]:
                bad.append(f"{m.config.stem} {key} [{off}, +{n}): {len(got)} bytes, differ")

    threads = [
        threading.Thread(target=reader, args=(m, seed)) for seed, m in enumerate([a, b, a, b])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:5]
    assert reads[0] > 40
    sa, sb = status(a.path(bucket))["cache"], status(b.path(bucket))["cache"]
    # Both nodes used the one directory and both evicted from it while reading.
    assert sa["evicted"] > 0 and sb["evicted"] > 0, (sa, sb)
    assert sa["misses"] > 0 and sb["misses"] > 0
    # Every block left in the shared directory holds exactly its part of its object.
    by_hash = {}
    for key, data in objects.items():
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        by_hash[hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()] = data
    files = [p for p in shared.rglob("*") if p.is_file()]
    assert files and all(not p.name.endswith(".tmp") for p in files)
    mib = 1024 * 1024
    for p in files:
        digest, block = p.name.split(".")
        data = by_hash[digest]
        assert p.read_bytes() == data[int(block) * mib : (int(block) + 1) * mib], p
    # The per-node parts stay per node.
    assert not (shared / "staging").exists() and not (shared / "journal.db").exists()
    assert (a.config.parent / "cache-nodeA" / "journal.db").exists()
