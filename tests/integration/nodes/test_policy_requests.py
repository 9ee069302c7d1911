"""What the shared policy log costs the object store: idle nodes never LIST it; and
the watcher nodes that read bucket policies for the others.

Three real `fedfs mount` processes share one policy log, each talking to the S3
server through its own counting proxy, so every request a node sends is seen. The
safety LIST is set far off (list_interval = 3600 s): what is left while nothing
changes is the change marker's conditional GET, and a change must still reach
every node. Counts, not times: progress is measured in marker reads.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.nodes.test_multinode import BOUND, POLL, Cluster, as_user, run
from tests.support import FEDFS, REPO, CountingProxy, MotoServer, Mount, UnixUser, wait_for

NODES = 3
READS = 10  # marker reads every node makes while we watch


class CountedCluster(Cluster):
    """Nodes whose safety LIST never comes during a test, each behind its own proxy."""

    proxies: dict[str, CountingProxy]

    def policy(self, name: str, snapshot_every: int = 1000) -> str:
        return super().policy(name, snapshot_every) + "\nlist_interval = 3600"

    def log_status(self, m: Mount) -> dict[str, Any]:
        return dict(json.loads(run("status", "--json", m.path(self.bucket)))["policy"]["log"])

    def counters(self) -> list[tuple[int, int]]:
        """(marker reads, LISTs) of every node, as its daemon counts them."""
        found = [self.log_status(m) for m in self.nodes]
        return [(int(s["marker_reads"]), int(s["lists"])) for s in found]

    def watch(self, reads: int) -> list[tuple[int, int]]:
        """Wait until every node read the marker `reads` more times; what each did meanwhile."""
        before = self.counters()

        def enough() -> list[tuple[int, int]] | None:
            now = self.counters()
            if any(n[0] - b[0] < reads for n, b in zip(now, before, strict=True)):
                return None
            return [(n[0] - b[0], n[1] - b[1]) for n, b in zip(now, before, strict=True)]

        return list(wait_for(enough, f"{reads} marker reads on every node", BOUND + reads * POLL))

    def log_requests(self) -> list[Counter[str]]:
        """Each node's requests to the control bucket since the last call."""
        return [self.proxies[m.config.stem].counted(self.control) for m in self.nodes]


@pytest.fixture
def counted(
    make_mount: Any, moto: MotoServer, s3: Any, bucket: str, alice: UnixUser, tmp_path: Path
) -> Iterator[CountedCluster]:
    control = f"ctl-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=control)
    admin_key = tmp_path / "admin.key"
    run("admin", "keygen", admin_key)
    c = CountedCluster(bucket, control, "policy/", admin_key, make_mount, s3)
    c.proxies = {}
    for i in range(1, NODES + 1):
        proxy = c.proxies[f"node{i}"] = CountingProxy(moto.port).start()
        c.add(f"node{i}", f"user:{alice.name}", endpoint=proxy.url)
    root = c.nodes[0].path(bucket)
    r = alice.run(
        "sh",
        "-c",
        f"mkdir -m 700 {root}/data && echo a > {root}/data/a.csv && echo b > {root}/data/b.csv",
    )
    assert r.returncode == 0, r.stderr
    run("sync", root)
    yield c
    for proxy in c.proxies.values():
        proxy.stop()


def settle(c: CountedCluster) -> None:
    """Until a whole watch window passes in which no node LISTed the log (start-up's
    own records have reached everyone)."""
    wait_for(lambda: all(lists == 0 for _, lists in c.watch(3)), "the nodes settle", BOUND * 3)


def test_idle_nodes_only_read_the_marker_and_a_change_still_reaches_every_node(
    counted: CountedCluster, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    c = counted
    settle(c)
    c.log_requests()  # count from here
    watched = c.watch(READS)
    sent = c.log_requests()
    for node, (reads, lists), requests in zip(c.nodes, watched, sent, strict=True):
        print(f"{node.config.stem}: {reads} marker reads, {lists} LISTs; sent {dict(requests)}")
        assert lists == 0, f"{node.config.stem} listed the log while nothing changed"
        assert not [op for op in requests if op.startswith("LIST")], requests
        assert set(requests) == {"GET policy/changed"}, requests
        assert requests["GET policy/changed"] >= READS
        out = run("status", node.path(c.bucket))
        assert "change-marker reads" in out and "LISTs of the log since start" in out, out

    # A change on one node reaches the others through the marker, not a safety LIST.
    files = [n.path(c.bucket) / "data" / "a.csv" for n in c.nodes]
    as_user(alice, "share", files[0], "--with", f"user:{bob.name}", "--read")
    for f in files:
        wait_for(lambda f=f: bob.run("cat", f).returncode == 0, f"bob reads {f}", BOUND)  # type: ignore[misc]
    sent = c.log_requests()
    for node, requests in zip(c.nodes[1:], sent[1:], strict=True):
        assert requests["LIST policy/events/"] >= 1, f"{node.config.stem}: {dict(requests)}"

    # Two nodes publish at once: whichever marker write wins, every node gets both changes.
    b_files = [n.path(c.bucket) / "data" / "b.csv" for n in c.nodes]
    results: list[Any] = []

    def share(on: Path, who: UnixUser) -> None:
        results.append(alice.run(*FEDFS, "share", on, "--with", f"user:{who.name}", "--read"))

    threads = [
        threading.Thread(target=share, args=(b_files[1], bob)),
        threading.Thread(target=share, args=(b_files[2], carol)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    for f in b_files:
        wait_for(lambda f=f: bob.run("cat", f).returncode == 0, f"bob reads {f}", BOUND)  # type: ignore[misc]
        wait_for(lambda f=f: carol.run("cat", f).returncode == 0, f"carol reads {f}", BOUND)  # type: ignore[misc]


def doctor_says(m: Mount) -> dict[str, Any]:
    r = subprocess.run(
        [*FEDFS, "doctor", "--json", "--config", str(m.config)], capture_output=True, cwd=REPO
    )
    return {f["check"]: f for f in json.loads(r.stdout)["findings"]}


def test_doctor_names_the_watchers_and_warns_when_none_is_up(
    make_mount: Any, s3: Any, bucket: str, alice: UnixUser, tmp_path: Path
) -> None:
    control = f"ctl-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=control)
    admin_key = tmp_path / "admin.key"
    run("admin", "keygen", admin_key)
    c = Cluster(bucket, control, "policy/", admin_key, make_mount, s3)
    acl = '[object_acl]\nprincipal = "arn:aws:iam:::user/{user}"\nwatcher = false\n'
    compute = c.add("compute1", f"user:{alice.name}", top=acl)
    found = doctor_says(compute)["watchers"]
    assert found["status"] == "WARN" and "no watcher node" in found["found"], found
    assert "not imported" in found["found"] and "watcher = true" in found["fix"], found
    assert c.status(compute)["log"]["watcher"] is False
    service = c.add("service1", f"user:{alice.name}", top=acl.replace("false", "true"))
    assert c.status(service)["log"]["watcher"] is True
    found = doctor_says(compute)["watchers"]  # the watcher's heartbeat is written at start
    assert found["status"] == "OK" and "service1" in found["found"], found
    assert "compute1" not in found["found"]
