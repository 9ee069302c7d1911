"""What server-side copies cost on a store, measured with boto3 alone (no fedfs, no mount).

Two questions docs/PERFORMANCE.md answers with it, each a subcommand:

`rewrite`: how long does the store take to produce an object that differs from
one it has in one byte? Times uploading SIZE bytes whole (`upload_file` in 16
MiB parts as fedfs does, twice: the first one warms a fresh cluster up, the
second is the reference; and one `put_object`), a multipart upload built from
UploadPartCopy of every part but the changed one plus that one uploaded (for each
`--part-sizes`; "max" is the fewest parts S3 allows: the two unchanged ranges
copied as one part each, up to 5 GiB, around one 8 MiB part sent), and one
CopyObject of the whole object. Ratios are against the whole upload.

`moves`: what moving a directory of FILES small objects costs: CopyObject of each
with CONCURRENCY requests in flight, through boto3 and through fedfs's lean
signed path (fedfs/store/lean.py), then deleting them in DeleteObjects batches of
BATCH keys (all batches in parallel).

Wall time, this process's CPU and the store's CPU (the Ceph cluster's own
daemons when the script starts one) are printed per step. Without --endpoint it
starts a throwaway Ceph RGW (tests/backends/ceph_rgw.py) under /var/tmp. Run as
root from the repository:

    .venv/bin/python tests/perf/store_copy_cost.py rewrite --size-mib 1024
    .venv/bin/python tests/perf/store_copy_cost.py moves --files 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import itertools

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig

from fedfs.store import lean
from tests.backends.ceph_rgw import CephRgw

MiB = 1024 * 1024
BUCKET = "copycost"
MIN_PART = 5 * MiB
MAX_PART = 5 * 1024 * MiB
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Bench:
    def __init__(self, url: str, access: str, secret: str, pids: Callable[[], list[int]]) -> None:
        self.url, self.access, self.secret, self.pids = url, access, secret, pids
        cfg = botocore.config.Config(
            max_pool_connections=80,
            retries={"mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.s3: Any = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=cfg,
        )
        self.lean = lean.LeanClient(
            url,
            "us-east-1",
            lambda: lean.Credentials(access, secret),
            connections=80,
            read_timeout=300,
        )
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def step(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        row: dict[str, Any] = {"step": name, **extra}
        server0, own0, began = cpu_of(self.pids()), own_cpu(), time.monotonic()
        yield row
        row["wall_s"] = round(time.monotonic() - began, 3)
        row["client_cpu_s"] = round(own_cpu() - own0, 2)
        row["server_cpu_s"] = round(cpu_of(self.pids()) - server0, 2)
        row["load"] = round(os.getloadavg()[0], 1)
        self.rows.append(row)
        shown = {k: v for k, v in row.items() if k != "step"}
        print(f"{name:<44} {shown}", flush=True)

    # -- rewrite ---------------------------------------------------------

    def rewrite(self, size: int, part_sizes: list[str], workdir: Path) -> None:
        local = workdir / "base.bin"
        with open(local, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        middle = size // 2 + 12345
        transfer = TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=8)
        with self.step("upload_file whole (16 MiB parts, 8 threads)", mib=size // MiB):
            self.s3.upload_file(str(local), BUCKET, "base", Config=transfer)
        # The first upload of a fresh cluster pays for its warm-up: the reference is the next.
        with self.step("upload_file whole, again (the reference)", mib=size // MiB) as r:
            self.s3.upload_file(str(local), BUCKET, "again", Config=transfer)
        whole = r["wall_s"]
        data = local.read_bytes()
        with self.step("put_object whole (one request)", mib=size // MiB) as r:
            self.s3.put_object(Bucket=BUCKET, Key="single", Body=data)
        r["ratio"] = round(r["wall_s"] / whole, 3)
        del data
        with self.step("copy_object of the whole object") as r:
            self.s3.copy_object(Bucket=BUCKET, Key="whole-copy", CopySource=f"{BUCKET}/base")
        r["ratio"] = round(r["wall_s"] / whole, 3)
        for ps in part_sizes:
            layout = self._layout(size, middle, None if ps == "max" else int(ps) * MiB)
            copied = sum(e - s for s, e, c in layout if c)
            with self.step(
                f"multipart: parts of {ps} MiB" if ps != "max" else "multipart: fewest parts",
                parts=len(layout),
                copied_mib=round(copied / MiB, 1),
                sent_mib=round((size - copied) / MiB, 1),
            ) as r:
                self._rebuild(local, f"rewrite-{ps}", layout, middle)
            r["ratio"] = round(r["wall_s"] / whole, 3)
            got = self.s3.get_object(
                Bucket=BUCKET, Key=f"rewrite-{ps}", Range=f"bytes={middle}-{middle}"
            )
            if got["Body"].read() != b"\xff" or got["ContentRange"].split("/")[1] != str(size):
                raise RuntimeError(f"rewrite-{ps}: the rebuilt object is wrong")

    @staticmethod
    def _layout(size: int, middle: int, part: int | None) -> list[tuple[int, int, bool]]:
        """(start, end, copied) of each part; the part holding `middle` is sent."""
        if part is None:  # the fewest parts: copy, one 8 MiB part sent, copy
            start = (middle // MiB) * MiB
            cuts = [0, start, start + 8 * MiB, size]
            out = []
            for s, e in itertools.pairwise(cuts):
                while e - s > MAX_PART:
                    out.append((s, s + MAX_PART, True))
                    s += MAX_PART
                if e > s:
                    out.append((s, e, not (s <= middle < e)))
            return out
        return [
            (s, min(s + part, size), not (s <= middle < s + part)) for s in range(0, size, part)
        ]

    def _rebuild(
        self, local: Path, key: str, layout: list[tuple[int, int, bool]], middle: int
    ) -> None:
        up = self.s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        common = {"Bucket": BUCKET, "Key": key, "UploadId": up}

        def one(item: tuple[int, tuple[int, int, bool]]) -> dict[str, Any]:
            n, (s, e, copied) = item
            if copied:
                r = self.s3.upload_part_copy(
                    CopySource=f"{BUCKET}/base",
                    CopySourceRange=f"bytes={s}-{e - 1}",
                    PartNumber=n,
                    **common,
                )
                return {"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]}
            with open(local, "rb") as f:
                body = bytearray(os.pread(f.fileno(), e - s, s))
            body[middle - s] = 0xFF
            r = self.s3.upload_part(Body=bytes(body), PartNumber=n, **common)
            return {"PartNumber": n, "ETag": r["ETag"]}

        with ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(one, enumerate(layout, 1)))
        self.s3.complete_multipart_upload(MultipartUpload={"Parts": parts}, **common)

    # -- moves -----------------------------------------------------------

    def moves(
        self, files: int, size: int, clients: list[str], concurrency: list[int], batches: list[int]
    ) -> None:
        body = os.urandom(size)
        keys = [f"src/f{i:05d}" for i in range(files)]
        with ThreadPoolExecutor(16) as pool, self.step("seed: put_object", files=files):
            list(pool.map(lambda k: self.s3.put_object(Bucket=BUCKET, Key=k, Body=body), keys))
        round_ = 0
        for client in clients:
            for c in concurrency:
                for b in batches:
                    round_ += 1
                    dst = [f"dst{round_}/{k[4:]}" for k in keys]
                    copy = self._copier(client)
                    with (
                        ThreadPoolExecutor(c) as pool,
                        self.step(f"copy ({client})", files=files, in_flight=c),
                    ):
                        list(pool.map(copy, keys, dst))
                    chunks = [dst[i : i + b] for i in range(0, len(dst), b)]
                    with (
                        ThreadPoolExecutor(len(chunks)) as pool,
                        self.step("delete_objects", keys=files, batch=b, batches=len(chunks)),
                    ):
                        list(pool.map(self._delete, chunks))

    def _copier(self, client: str) -> Callable[[str, str], object]:
        if client == "lean":
            return lambda src, dst: self.lean.copy(BUCKET, src, dst, {})
        return lambda src, dst: self.s3.copy_object(
            Bucket=BUCKET, Key=dst, CopySource={"Bucket": BUCKET, "Key": src}
        )

    def _delete(self, keys: list[str]) -> None:
        r = self.s3.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        if r.get("Errors"):
            raise RuntimeError(f"delete_objects: {r['Errors'][0]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="an S3 endpoint to use (default: start a Ceph RGW)")
    p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    p.add_argument("--json", type=Path, help="also write every step's figures here")
    sub = p.add_subparsers(dest="what", required=True)
    rw = sub.add_parser("rewrite", help="one byte changed in a large object")
    rw.add_argument("--size-mib", type=int, default=1024)
    rw.add_argument(
        "--part-sizes",
        default="8,16,64,512,max",
        help="comma-separated part sizes in MiB, or max (the fewest parts)",
    )
    mv = sub.add_parser("moves", help="copy, then delete, a directory of small objects")
    mv.add_argument("--files", type=int, default=1000)
    mv.add_argument("--file-size", type=int, default=4096)
    mv.add_argument("--clients", default="boto3,lean", help="boto3, lean (fedfs's signed path)")
    mv.add_argument("--concurrency", default="16,32,64", help="copies in flight")
    mv.add_argument("--batches", default="1000,100", help="keys per DeleteObjects request")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fedfs-copycost-", dir="/var/tmp"))
    rgw: CephRgw | None = None
    try:
        if args.endpoint:
            bench = Bench(args.endpoint, args.access_key, args.secret_key, lambda: [])
        else:
            rgw = CephRgw(workdir / "ceph").start()
            print(f"Ceph RGW up in {rgw.bring_up_seconds:.1f} s at {rgw.url}", flush=True)
            bench = Bench(rgw.url, rgw.access_key, rgw.secret_key, rgw.pids)
        bench.s3.create_bucket(Bucket=BUCKET)
        print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
        if args.what == "rewrite":
            bench.rewrite(args.size_mib * MiB, args.part_sizes.split(","), workdir)
        else:
            bench.moves(
                args.files,
                args.file_size,
                args.clients.split(","),
                [int(c) for c in args.concurrency.split(",")],
                [int(b) for b in args.batches.split(",")],
            )
        if args.json:
            args.json.write_text(json.dumps(bench.rows, indent=2) + "\n")
    finally:
        if rgw is not None:
            rgw.stop()
        for f in workdir.glob("*.bin"):
            f.unlink()
        if workdir.exists():
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
