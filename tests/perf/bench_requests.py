"""Client CPU per S3 request: boto3's path against fedfs's lean path (fedfs/store/lean.py).

Starts moto or a single-node Ceph RGW (as compare.py does), puts one object
of --size MiB and --heads small objects, then measures in this process, with
`time.thread_time()` of the one thread making the requests:

- HEAD: --heads HEADs of existing objects, through `ObjectStore.head` with
  `[store] lean = false` (boto3's head_object) and with the lean path;
- GET: the big object in 8 MiB ranged GETs written into a file, through
  `ObjectStore.get_range_into` the same two ways, and as one boto3
  `get_object` read in 8 MiB chunks (compare.py's "one boto3 GET stream").

Prints CPU seconds per 1,000 HEADs and per GiB read, and the wall time. Not
part of the pytest suite:

    .venv/bin/python tests/perf/bench_requests.py --backend ceph
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fedfs.config import StoreConfig
from fedfs.store.s3 import ObjectStore
from tests.perf.compare import BUCKET, MiB, s3_client, start_server

BLOCK = 8 * MiB


def measure(what: str, fn: object, per: float, unit: str) -> None:
    assert callable(fn)
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
    print(f"  {what:<34} {cpu / per:8.3f} CPU s {unit}   wall {wall:6.2f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["ceph", "moto"], default="moto")
    p.add_argument("--heads", type=int, default=1000)
    p.add_argument("--size", type=int, default=512, help="MiB of the object read")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="fedfs-req-") as tmp:
        server = start_server(args.backend, Path(tmp))
        try:
            s3 = s3_client(server)
            s3.create_bucket(Bucket=BUCKET)
            size = args.size * MiB
            s3.put_object(Bucket=BUCKET, Key="big", Body=os.urandom(MiB) * args.size)
            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda i: s3.put_object(
                            Bucket=BUCKET, Key=f"h/{i}", Body=b"x", Metadata={"mode": "33188"}
                        ),
                        range(args.heads),
                    )
                )
            base = StoreConfig(
                endpoint=server.url, access_key=server.access_key, secret_key=server.secret_key
            )
            out = Path(tmp) / "block"
            for name, cfg in (("boto3", replace(base, lean=False)), ("lean", base)):
                store = ObjectStore(cfg)
                store.head(BUCKET, "h/0")  # connections and signing key ready

                def heads(store: ObjectStore = store) -> None:
                    for i in range(args.heads):
                        assert store.head(BUCKET, f"h/{i}") is not None

                def ranged(store: ObjectStore = store) -> None:
                    buf = memoryview(bytearray(BLOCK))
                    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                    try:
                        for start in range(0, size, BLOCK):
                            length = min(BLOCK, size - start)
                            store.get_range_into(BUCKET, "big", start, length, None, buf)
                            os.pwrite(fd, buf[:length], start)
                    finally:
                        os.close(fd)

                print(f"{name}:")
                measure("HEAD", heads, args.heads / 1000, "per 1,000 HEADs")
                measure("ranged GETs of 8 MiB into a file", ranged, size / 1024**3, "per GiB")

            def stream() -> None:
                body = s3.get_object(Bucket=BUCKET, Key="big")["Body"]
                while body.read(BLOCK):
                    pass

            print("boto3 single GET stream:")
            measure("get_object, read in 8 MiB chunks", stream, size / 1024**3, "per GiB")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
