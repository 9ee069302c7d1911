"""The write-back cache: full cache disk, stage-in, status and cached reads."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, MotoServer, Mount, TcpProxy


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 64 MiB tmpfs for the cache directory: a cache disk that really fills up."""
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(d)], check=True
    )
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_cache_applies_backpressure_then_enospc_and_loses_nothing(
    small_disk: Path, make_mount: Any, moto: MotoServer, bucket: str, s3: Any
) -> None:
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            extra=f'dir = "{small_disk}/cache"\nsize = "48MiB"\ndirty_wait = 2\nblock_size = "1MiB"',
        )
        root = m.path(bucket)
        os.listdir(root)
        proxy.cut()  # nothing can drain the cache
        chunk = os.urandom(1024 * 1024)
        written: list[str] = []
        with pytest.raises(OSError) as e:
            for i in range(100):
                (root / f"part-{i:03d}").write_bytes(chunk * 4)
                written.append(f"part-{i:03d}")
        assert e.value.errno == errno.ENOSPC
        assert 5 <= len(written) <= 12, written  # about 48 MiB of 4 MiB files
        log = m.log_text()
        assert "ENOSPC" in log and "full of data not yet uploaded" in log
        proxy.restore()
        r = cli("sync", m.mountpoint)
        assert r.returncode == 0, r.stderr
        for name in written:  # every file that closed is intact in S3
            assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == chunk * 4
        (root / "after").write_bytes(chunk)  # and the cache has room again
    finally:
        proxy.stop()


def test_a_cold_read_on_a_full_cache_disk_still_returns_the_bytes(
    small_disk: Path, make_mount: Any, bucket: str, s3: Any
) -> None:
    data = os.urandom(12 * 1024 * 1024 + 777)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    m: Mount = make_mount(
        [(bucket, "user:root")],
        extra=f'dir = "{small_disk}/cache"\nsize = "48MiB"\nblock_size = "1MiB"',
    )
    path = m.path(bucket, "big.bin")
    # Something else fills the cache's disk: fetched blocks have nowhere to go.
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 1024 * 1024):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    try:
        got = path.read_bytes()
        assert got == data  # straight from the object store
        log = m.log_text()
        assert "cannot keep fetched data in the cache" in log, log[-2000:]
    finally:
        filler.unlink()


def test_stage_status_and_reads_from_the_cache(make_mount: Any, bucket: str, s3: Any) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/data-{i}.bin", Body=bytes([i]) * (3 * 1024 * 1024))
    m: Mount = make_mount([(bucket, "user:root")])
    r = cli("stage", m.path(bucket, "in"))
    assert r.returncode == 0, r.stderr
    assert "staged 3 files (9.0 MiB) into the cache" in r.stdout
    status = json.loads(cli("status", m.mountpoint, "--json").stdout)
    assert status["cache"]["clean_bytes"] >= 9437184
    misses = status["cache"]["misses"]
    assert (m.path(bucket, "in", "data-1.bin")).read_bytes() == b"\x01" * (3 * 1024 * 1024)
    status = json.loads(cli("status", m.mountpoint, "--json").stdout)
    assert (
        status["cache"]["misses"] == misses and status["cache"]["hits"] > 0
    )  # served from the cache
    text = cli("status", m.mountpoint).stdout
    for label in ("mount", "store", "cache", "uploads", "policy", "identity", "latency p50", "lag"):
        assert label in text
    assert status["s3"]["latency_p50_ms"] > 0 and status["s3"]["requests"] > 0
    # staging something you may not read is refused
    os.chmod(m.path(bucket, "in", "data-2.bin"), 0o600)
    r = subprocess.run(
        [*FEDFS, "stage", str(m.path(bucket, "in", "data-2.bin"))],
        capture_output=True,
        text=True,
        user=65534,
        group=65534,
        extra_groups=[],
        cwd="/",
    )
    assert r.returncode == 1 and "permission denied" in r.stderr, r
