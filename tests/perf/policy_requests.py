"""Measure the object-store requests each fedfs node sends while idle, and per policy change.

Run as root, after scripts/install (moto is in the test extras):

    python tests/perf/policy_requests.py [--nodes 4] [--buckets 2] [--seconds 60]
        [--repo DIR] [--policy-extra "list_interval = 60"] [--watchers N] [--json FILE]

One run starts a moto S3 server, then NODES `fedfs mount` daemons of the code in
--repo (default: this checkout; point it at another worktree to measure another
version) that mount the same BUCKETS buckets and share one policy log, each
behind its own counting HTTP proxy, so every request a node sends is counted by
bucket and operation. It lets the nodes settle, counts for SECONDS while nothing
changes, then makes one policy change (`fedfs share` on node 1) and counts what
that costs each node. --watchers N turns on [object_acl] (principal template) with
`watcher = true` on the first N nodes and false on the others. It prints requests per second per node (the policy log and
each bucket) and the cost of a change; docs/OPERATIONS.md ("Scale") holds the
results and the formula for a large site. Not part of the pytest suite; it stops
everything it started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support import (  # noqa: E402
    CountingProxy,
    MotoServer,
    s3_operation,
    wait_for,
    write_config,
)

FEDFS_MOUNT = [sys.executable, "-m", "fedfs.cli", "mount", "--foreground", "--config"]
CONTROL = "policy-log"
PREFIX = "policy/"


class Node:
    """One `fedfs mount --foreground` daemon of the code under test, behind its own proxy."""

    def __init__(self, name: str, repo: Path, workdir: Path, proxy: CountingProxy) -> None:
        self.name, self.repo, self.proxy = name, repo, proxy
        self.dir = workdir / name
        self.dir.mkdir()
        self.mountpoint = self.dir / "mnt"
        self.mountpoint.mkdir()
        self.config = self.dir / f"{name}.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    def fedfs(self, *args: str | Path, check: bool = True) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "fedfs.cli", *map(str, args)],
            cwd=self.repo,
            capture_output=True,
            timeout=120,
        )
        if check and r.returncode != 0:
            raise SystemExit(f"fedfs {' '.join(map(str, args))}: {r.stderr.decode()}")
        return r.stdout.decode()

    def start(self) -> None:
        log = open(self.dir / "daemon.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*FEDFS_MOUNT, str(self.config), str(self.mountpoint)],
            cwd=self.repo,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if os.path.ismount(self.mountpoint):
            self.fedfs("umount", "--wait", "60", self.mountpoint, check=False)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def split(counted: collections.Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """{bucket: {"LIST": n, "GET": n, ...}} from (bucket, "METHOD what") counts."""
    out: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    for (bucket, op), n in counted.items():
        verb = op.split(" ", 1)[0]
        if verb == "GET" and op == f"GET {PREFIX}changed":
            verb = "GET marker"
        out[bucket][verb] += n
    return {b: dict(v) for b, v in out.items()}


def take(proxy: CountingProxy) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(s3_operation(m, p) for m, p in proxy.take())


def getfacl(path: Path) -> str:
    return subprocess.run(["getfacl", "-p", str(path)], capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--buckets", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="the idle window counted")
    ap.add_argument("--repo", type=Path, default=REPO, help="the fedfs checkout to run")
    ap.add_argument("--policy-extra", default="", help="extra [policy] lines, e.g. list_interval")
    ap.add_argument("--watchers", type=int, default=0, help="[object_acl] on; N watcher nodes")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fedfs-reqs-"))
    moto = MotoServer(log=workdir / "moto.log").start()
    proxies: list[CountingProxy] = []
    nodes: list[Node] = []
    try:
        s3 = moto.client()
        buckets = [f"data-{uuid.uuid4().hex[:8]}" for _ in range(args.buckets)]
        for b in [*buckets, CONTROL]:
            s3.create_bucket(Bucket=b)
        admin_key = workdir / "admin.key"
        for i in range(1, args.nodes + 1):
            proxy = CountingProxy(moto.port).start()
            proxies.append(proxy)
            node = Node(f"node{i}", args.repo.resolve(), workdir, proxy)
            if i == 1:
                node.fedfs("admin", "keygen", admin_key)
            policy = "\n".join(
                [
                    f'node = "{node.name}"',
                    f'log_bucket = "{CONTROL}"',
                    f'log_prefix = "{PREFIX}"',
                    f'admin_keys = ["{admin_key}.pub"]',
                    args.policy_extra,
                ]
            )
            acl = ""
            if args.watchers:
                watcher = "true" if i <= args.watchers else "false"
                acl = f'[object_acl]\nprincipal = "arn:aws:iam:::user/{{user}}"\nwatcher = {watcher}\n'
            write_config(
                node.config,
                proxy.url,
                [(b, "user:root") for b in buckets],
                node.dir / "cache",
                policy_extra=policy,
                socket=Path(f"/tmp/fedfs-reqs-{os.getpid()}-{i}.sock"),
                top=acl,
            )
            pub = node.dir / "node.pub"
            pub.write_text(node.fedfs("admin", "node-key", "--config", node.config))
            node.fedfs(
                *("admin", "enroll-node", "--config", node.config, "--admin-key", admin_key),
                *("--node", node.name, pub),
            )
            node.start()
            nodes.append(node)
        for node in nodes:
            wait_for(lambda n=node: os.path.ismount(n.mountpoint), f"{node.name} mounted", 120)  # type: ignore[misc]
        first = nodes[0].mountpoint / buckets[0] / "shared.txt"
        first.write_text("results\n")
        nodes[0].fedfs("sync", first)
        time.sleep(15)  # start-up's own records and the file reach every node
        for p in proxies:
            take(p)
        began = time.monotonic()
        time.sleep(args.seconds)
        idle = [take(p) for p in proxies]
        window = time.monotonic() - began
        nodes[0].fedfs("share", first, "--with", "user:nobody", "--read")
        for node in nodes:
            target = node.mountpoint / buckets[0] / "shared.txt"
            wait_for(
                lambda t=target: "user:nobody:r" in getfacl(t), f"the share on {node.name}", 60
            )  # type: ignore[misc]
        time.sleep(3)  # the last node's follow-up requests
        change = [take(p) for p in proxies]
        report(nodes, buckets, idle, window, change, args)
    finally:
        for node in nodes:
            node.stop()
        for p in proxies:
            p.stop()
        moto.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    nodes: list[Node],
    buckets: list[str],
    idle: list[collections.Counter[tuple[str, str]]],
    window: float,
    change: list[collections.Counter[tuple[str, str]]],
    args: argparse.Namespace,
) -> None:
    print(f"fedfs at {args.repo}; {len(nodes)} nodes, {len(buckets)} buckets, {window:.0f} s idle")
    print(f"extra [policy]: {args.policy_extra or '(none)'}; watchers: {args.watchers}")
    figures: dict[str, Any] = {"nodes": {}, "window": window}
    for node, counted, after in zip(nodes, idle, change, strict=True):
        per = split(counted)
        log = per.pop(CONTROL, {})
        rates = {k: round(v / window, 3) for k, v in sorted(log.items())}
        data = {
            b: {k: round(v / window, 3) for k, v in sorted(per.get(b, {}).items())} for b in buckets
        }
        cost = split(after)
        print(f"{node.name}: policy log {rates} req/s; buckets {data} req/s")
        print(f"{'':>{len(node.name)}}  one change cost it: {cost}")
        figures["nodes"][node.name] = {"log_per_s": rates, "buckets_per_s": data, "change": cost}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
