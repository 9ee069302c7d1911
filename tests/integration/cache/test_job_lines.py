"""What `fedfs stage` and `fedfs sync` print for a batch job: exact lines, human units."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.support import FEDFS, REPO, MotoServer, Mount, TcpProxy, UnixUser


def cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_stage_names_what_it_could_not_stage_in_human_units(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, bob: UnixUser
) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/data-{i}.bin", Body=bytes([i]) * (3 * 1024 * 1024))
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    r = cli("stage", m.path(bucket, "in"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["staged 3 files (9.0 MiB) into the cache"]
    private = m.path(bucket, "private")
    alice.run("sh", "-c", f"mkdir -m 700 {private} && echo x > {private}/a", check=True)
    r2 = bob.run(*FEDFS, "stage", private)
    assert r2.returncode == 1, r2
    assert r2.stderr.decode().splitlines() == [
        f"fedfs: not staged: {private}: permission denied (you may not list this directory)"
    ]
    assert r2.stdout.decode().splitlines() == ["staged 0 files (0 B) into the cache"]


def test_sync_progress_moves_with_the_bytes_uploaded(
    make_mount: Any, moto: MotoServer, bucket: str
) -> None:
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            store_extra='multipart_threshold = "8MiB"\nmultipart_chunksize = "8MiB"\n'
            "max_connections = 2",
            extra="flush_delay = 30",
        )
        big = m.path(bucket, "big.bin")
        big.write_bytes(os.urandom(1024 * 1024) * 40)
        proxy.delay = 0.01  # about 6 MiB/s: the upload takes seconds
        r = cli("sync", m.mountpoint)
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    shape = re.compile(r"uploading 1 file: (\d+(?:\.\d)?) (B|KiB|MiB) of 40\.0 MiB")
    assert lines and all(shape.fullmatch(x) for x in lines), lines
    unit = {"B": 1, "KiB": 1024, "MiB": 1024**2}
    done = [float(g[0]) * unit[g[1]] for x in lines if (g := shape.fullmatch(x).groups())]  # type: ignore[union-attr]
    assert any(0 < d < 40 * 1024**2 for d in done), f"progress never moved: {lines}"
    assert done == sorted(done), lines
    assert r.stdout.splitlines() == [f"synced {m.mountpoint}: 1 file uploaded (40.0 MiB)"]
