"""Cold reads: large kernel read requests, parallel ranged GETs into the cache, faults.

What a user notices: a file read for the first time comes back byte for byte
whatever the read sizes and offsets (block boundaries included, several
readers at once), the mount asks the kernel for large read requests while it
is mounted and leaves nothing behind after, and an object store that fails
part-way through a read gives EIO with a log line naming the file, never
wrong bytes. Speed itself is measured by tests/perf/compare.py, not here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from fedfs.daemon.readahead import bdi_path, mount_device
from tests.support import FEDFS, REPO, MotoServer, Mount, TcpProxy, wait_for

MiB = 1024 * 1024
SMALL_BLOCKS = 'block_size = "1MiB"\nreadahead_blocks = 4'


def status(m: Mount) -> dict[str, Any]:
    r = subprocess.run(
        [*FEDFS, "status", "--json", str(m.mountpoint)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def drop_page_cache(path: Path) -> None:
    """Forget the kernel's cached pages of one file, so the next read goes to fedfs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_read_ahead_is_raised_while_mounted_and_gone_after_unmount(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    device = mount_device(m.mountpoint)
    assert device, "the mount is in /proc/self/mountinfo"
    setting = bdi_path(device)
    # set once the mount answers its first request, which may be just after ismount()
    wait_for(lambda: setting.read_text().split()[0] == "1024", "read-ahead of 1024 KiB")
    # The kernel now sends reads of up to 1 MiB: a 32 MiB cold read takes far fewer than
    # the 256 requests of 128 KiB it took before.
    s3.put_object(Bucket=bucket, Key="big.bin", Body=os.urandom(32 * MiB))
    path = m.path(bucket, "big.bin")
    path.stat()
    before = status(m)["fuse_requests"]
    with open(path, "rb", buffering=0) as f:
        while f.read(MiB):
            pass
    requests = status(m)["fuse_requests"] - before
    print(f"FUSE requests for a 32 MiB cold read with 1 MiB read-ahead: {requests}")
    assert requests < 128
    m.stop()

    def gone() -> bool:
        # The device number is free again, and another mount on this busy machine may
        # already have it: then the setting there is that mount's, not ours.
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        reused = any(line.split()[2] == device for line in mounts)
        return reused or not setting.exists()

    wait_for(gone, "the mount's device and its read-ahead setting to go away")


def test_read_ahead_zero_leaves_the_kernel_default(make_mount: Any, bucket: str) -> None:
    m: Mount = make_mount([(bucket, "user:root")], top="[fs]\nread_ahead_kb = 0")
    wait_for(lambda: "event=mount " in m.log_text(), "the mount event")
    assert bdi_path(mount_device(m.mountpoint)).read_text().split()[0] == "128"
    assert "read-ahead-not-set" not in m.log_text()


def test_cold_reads_across_block_boundaries_are_byte_identical(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    data = os.urandom(10 * MiB + 12345)  # ends inside a block
    s3.put_object(Bucket=bucket, Key="d/cold.bin", Body=data)
    m: Mount = make_mount([(bucket, "user:root")], extra=SMALL_BLOCKS)
    path = m.path(bucket, "d", "cold.bin")
    # Reads that straddle block boundaries, before those blocks were ever fetched.
    with open(path, "rb", buffering=0) as f:
        for off, size in [
            (3 * MiB - 100, 300),  # across 2|3
            (7 * MiB - 1, 2),  # the last byte of one block and the first of the next
            (len(data) - 5000, 10000),  # past the end
            (5 * MiB - 10, 2 * MiB + 20),  # three blocks
        ]:
            assert os.pread(f.fileno(), size, off) == data[off : off + size], (off, size)
    drop_page_cache(path)
    # A sequential read in an odd size, which parallel read-ahead runs ahead of.
    got = bytearray()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(333_333):
            got += chunk
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert len(got) == len(data)


@pytest.mark.parametrize(
    "memory",
    [
        "256MiB",  # the default: every block served from memory
        "2MiB",  # less than the readers' read-ahead: blocks leave memory, buffers are reused
        "0",  # none: every read from the block's cache file
    ],
)
def test_several_readers_of_different_cold_files_each_get_their_own_bytes(
    make_mount: Any, bucket: str, s3: Any, memory: str
) -> None:
    files = {f"r/f{i}": os.urandom(6 * MiB + i * 4099) for i in range(4)}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    m: Mount = make_mount([(bucket, "user:root")], extra=f'{SMALL_BLOCKS}\nmemory = "{memory}"')
    got: dict[str, bytes] = {}

    def read(key: str) -> None:
        with open(m.path(bucket, *key.split("/")), "rb") as f:
            got[key] = f.read()

    threads = [threading.Thread(target=read, args=(k,)) for k in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in files.items()
    }


def test_a_store_that_fails_mid_read_gives_eio_and_a_log_line_never_wrong_bytes(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    data = os.urandom(12 * MiB)
    s3.put_object(Bucket=bucket, Key="cold.bin", Body=data)
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            extra='block_size = "1MiB"\nreadahead_blocks = 1',
        )
        path = m.path(bucket, "cold.bin")
        with open(path, "rb", buffering=0) as f:
            first = f.read(MiB)
            assert first == data[:MiB]
            proxy.cut()  # the store goes away for good, in the middle of the file
            off, failure = MiB, None
            try:
                while chunk := f.read(MiB):
                    assert chunk == data[off : off + len(chunk)], f"wrong bytes at {off}"
                    off += len(chunk)
            except OSError as e:
                failure = e
        assert failure is not None and failure.errno == errno.EIO, failure
        assert off < len(data)
        log = m.log_text()
        line = next(ln for ln in log.splitlines() if "read: s3://" in ln and "(EIO)" in ln)
        print(f"after {off} bytes: {line}")
        assert f"s3://{bucket}/cold.bin" in line
        assert "did not answer" in line
        # Nothing half-written was kept: once the store is back the file reads whole.
        proxy.restore()
        drop_page_cache(path)
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        proxy.stop()
