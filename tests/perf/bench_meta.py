"""Metadata micro-benchmark: `ls -l` of N objects (cold, warm) and small creates, on moto.

Starts a moto server, puts N small objects with boto3, times a bare ListObjectsV2,
mounts fedfs and times `ls -l` on a fresh mount (cold) and right after (warm), then
M creates of 4 KiB files. Ratios within one run are what to compare.

    .venv/bin/python tests/perf/bench_meta.py --objects 10000 --creates 1000
    .venv/bin/python tests/perf/bench_meta.py --profile /tmp/prof   # py-spy of the daemon
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import MotoServer, Mount, write_config


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--creates", type=int, default=1_000)
    ap.add_argument("--profile", type=Path, help="py-spy record the daemon into this dir")
    ap.add_argument(
        "--extra", default="", help="extra config lines (e.g. '[fs]\\nattr_timeout = 60')"
    )
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfs-bench-", dir="/var/tmp"))
    server = MotoServer(log=work / "moto.log").start()
    mount: Mount | None = None
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="bench")
        keys = [f"ls/f{i:06d}" for i in range(args.objects)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket="bench", Key=k, Body=b"x" * 100), keys))
        t = time.perf_counter()
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="ls/"):
            n += len(page.get("Contents", []))
        boto = time.perf_counter() - t
        assert n == args.objects, n
        cfg = write_config(
            work / "fedfs.toml",
            server.url,
            [("bench", "user:root")],
            work / "cache",
            extra=args.extra.replace("\\n", "\n"),
        )
        mount = Mount(cfg, work / "mnt", work / "fedfs.log").start()
        assert mount.proc is not None
        pid = mount.proc.pid
        prof = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            prof = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(args.profile / "daemon.txt"),
                    "-p",
                    str(pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        d = str(mount.path("bench", "ls"))
        c0 = cpu_of(pid)
        cold = timed(["ls", "-l", d])
        c1 = cpu_of(pid)
        warm = timed(["ls", "-l", d])
        c2 = cpu_of(pid)
        out = subprocess.run(["ls", "-l", d], capture_output=True, text=True).stdout
        lines = out.count("\n") - 1
        cdir = mount.path("bench", "creates")
        cdir.mkdir()
        time.sleep(1.5)  # older than the 1 s listing lifetime, as in compare.py's Ceph runs
        data = b"y" * 4096
        c3 = cpu_of(pid)
        t = time.perf_counter()
        for i in range(args.creates):
            fd = os.open(cdir / f"c{i:05d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, data)
            os.close(fd)
        creates = time.perf_counter() - t
        c4 = cpu_of(pid)
        if prof is not None:
            prof.send_signal(signal.SIGINT)
            prof.wait()
        print(f"objects {args.objects}, ls -l shows {lines} entries")
        print(f"boto3 ListObjectsV2      {boto:8.3f} s")
        print(
            f"fedfs ls -l cold         {cold:8.3f} s  ({cold / boto:.2f}x boto3; daemon CPU {c1 - c0:.2f} s)"
        )
        print(f"fedfs ls -l warm         {warm:8.3f} s  (daemon CPU {c2 - c1:.2f} s)")
        print(
            f"fedfs {args.creates} creates       {creates:8.3f} s  ({args.creates / creates:.0f}/s; daemon CPU {c4 - c3:.2f} s)"
        )
        return 0
    finally:
        if mount is not None:
            mount.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
