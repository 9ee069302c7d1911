"""FUSE read requests for one cold sequential read, with and without `[fs] read_ahead_kb`.

Starts moto, puts one object of --size MiB, and for each read-ahead setting
mounts fedfs with an empty cache, reads the file with 1 MiB `read()` calls and
prints the FUSE requests fedfs counted (`fedfs status`), the bytes per read
request, and the daemon's CPU seconds. Not part of the pytest suite:

    .venv/bin/python tests/perf/read_requests.py --size 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedfs.daemon.readahead import bdi_path, mount_device
from tests.perf.compare import CLK_TCK, MiB, read_file
from tests.support import FEDFS, KEY, REPO, MotoServer, Mount, wait_for, write_config


def status(m: Mount) -> dict[str, object]:
    out = subprocess.run(
        [*FEDFS, "status", "--json", str(m.mountpoint)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    return dict(json.loads(out))


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="MiB")
    args = p.parse_args()
    size = args.size * MiB
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="fedfs-rr-") as tmp:
        work = Path(tmp)
        moto = MotoServer(log=work / "moto.log").start()
        try:
            s3 = moto.client()
            s3.create_bucket(Bucket="rr-bucket")
            s3.put_object(Bucket="rr-bucket", Key="big.bin", Body=b"\1" * size)
            for kib in (0, 1024):
                cfg = write_config(
                    work / f"ra{kib}.toml",
                    moto.url,
                    [("rr-bucket", "user:root")],
                    work / f"cache-{kib}",
                    top=f"[fs]\nread_ahead_kb = {kib}",
                    keys=(KEY, KEY),
                )
                m = Mount(cfg, work / f"mnt-{kib}", work / f"ra{kib}.log").start()
                try:
                    path = m.mountpoint / "rr-bucket" / "big.bin"
                    path.stat()
                    assert m.proc is not None
                    if kib:  # set once the mount answered its first request

                        def raised(mp: Path = m.mountpoint, kib: int = kib) -> bool:
                            ra = bdi_path(mount_device(mp)).read_text().split()[0]
                            return ra == str(kib)

                        wait_for(raised, "the read-ahead")
                    before, c0 = status(m)["fuse_requests"], cpu(m.proc.pid)
                    assert isinstance(before, int)
                    t0 = time.perf_counter()
                    got = read_file(path)
                    wall = time.perf_counter() - t0
                    after, c1 = status(m)["fuse_requests"], cpu(m.proc.pid)
                    assert isinstance(after, int) and got == size
                    n = after - before
                    print(
                        f"read_ahead_kb = {kib or 'kernel default (128)'}: {n:,} FUSE requests "
                        f"for {args.size} MiB ({size / n / 1024:,.0f} KiB each on average), "
                        f"daemon CPU {c1 - c0:.2f} s, {args.size / wall:,.0f} MiB/s",
                        flush=True,
                    )
                finally:
                    m.stop()
        finally:
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
