"""Several nodes, one policy: daemons sharing a policy log in one S3 server.

Each node is a real `fedfs mount` process with its own mount point, node key,
state and cache directory; all of them mount the same bucket and share one
policy log in a control bucket. Grants are made with the real CLI by alice (the
bucket owner) on one node; bob's access is a real open() on every node.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedfs.audit.chain import AuditRecord, AuditWriter, SigningKey
from tests.support import FEDFS, REPO, Mount, TcpProxy, UnixUser, wait_for

POLL = float(os.environ.get("FEDFS_TEST_POLL", "0.2"))  # the log poll interval (default 1 s)
BOUND = 20.0  # a generous upper bound for a change to reach every node on a loaded machine


def run(*args: str | Path) -> str:
    r = subprocess.run([*FEDFS, *map(str, args)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, f"{args}: {r.stderr.decode()}"
    return r.stdout.decode()


def popen_as(user: UnixUser, *args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*FEDFS, *map(str, args)],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
    )


def as_user(user: UnixUser, *args: str | Path) -> str:
    r = user.run(*FEDFS, *args)
    assert r.returncode == 0, f"{args}: {r.stderr.decode()}"
    return r.stdout.decode()


@dataclass
class Cluster:
    bucket: str
    control: str
    prefix: str
    admin_key: Path
    factory: Any
    s3: Any
    nodes: list[Mount] = field(default_factory=list)

    def policy(self, name: str, snapshot_every: int = 1000) -> str:
        return "\n".join(
            [
                f'node = "{name}"',
                f'log_bucket = "{self.control}"',
                f'log_prefix = "{self.prefix}"',
                f"poll_interval = {POLL}",
                "lookback = 5",
                f"snapshot_every = {snapshot_every}",
                f'admin_keys = ["{self.admin_key}.pub"]',
            ]
        )

    def add(
        self,
        name: str,
        owner: str,
        enroll: bool = True,
        snapshot_every: int = 1000,
        endpoint: str | None = None,
        top: str = "",
    ) -> Mount:
        m: Mount = self.factory(
            [(self.bucket, owner)],
            endpoint=endpoint,
            name=name,
            start=False,
            policy_extra=self.policy(name, snapshot_every),
            top=top,
        )
        if enroll:
            pub = m.config.with_suffix(".pub")
            pub.write_text(run("admin", "node-key", "--config", m.config))
            out = run(
                "admin",
                "enroll-node",
                "--config",
                m.config,
                "--admin-key",
                self.admin_key,
                "--node",
                name,
                pub,
            )
            assert f"for node {name}" in out
        m.start()
        self.nodes.append(m)
        return m

    def status(self, m: Mount) -> dict[str, Any]:
        return dict(json.loads(run("status", "--json", m.path(self.bucket)))["policy"])

    def announce(self) -> None:
        """Rewrite the log's change marker, as a node does after storing its events (with
        contents nobody wrote before), so records put straight into the log are read."""
        self.s3.put_object(
            Bucket=self.control, Key=self.prefix + "changed", Body=uuid.uuid4().bytes
        )

    def keys(self, under: str) -> list[str]:
        r = self.s3.list_objects_v2(Bucket=self.control, Prefix=self.prefix + under)
        return sorted(o["Key"] for o in r.get("Contents", []))


def grants_of(m: Mount) -> list[tuple[Any, ...]]:
    """A node's policy as its database holds it: grants (path, principal, level, expires)
    and teams (name, gid, members)."""
    db = m.config.parent / f"cache-{m.config.stem}-state" / "policy.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        grants = conn.execute(
            "SELECT path, principal, level, expires FROM grants ORDER BY path, principal"
        ).fetchall()
        teams = conn.execute(
            "SELECT t.name, t.gid, group_concat(m.user || ':' || m.owner) FROM teams t "
            "LEFT JOIN team_members m ON m.team = t.name GROUP BY t.name ORDER BY t.name"
        ).fetchall()
    conn.close()
    return [("grant", *g) for g in grants] + [("team", *t) for t in teams]


@pytest.fixture
def cluster(make_mount: Any, s3: Any, bucket: str, alice: UnixUser, tmp_path: Path) -> Cluster:
    control = f"ctl-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=control)
    admin_key = tmp_path / "admin.key"
    out = run("admin", "keygen", admin_key)
    assert "admin_keys" in out and admin_key.with_name("admin.key.pub").exists()
    c = Cluster(bucket, control, "policy/", admin_key, make_mount, s3)
    owner = f"user:{alice.name}"
    for i in range(1, 5):
        c.add(f"node{i}", owner, snapshot_every=8)
    root = c.nodes[0].path(bucket)
    r = alice.run("sh", "-c", f"mkdir -m 700 {root}/data && echo results > {root}/data/f.csv")
    assert r.returncode == 0, r.stderr
    run("sync", root)  # the file is in S3, so every node sees it
    return c


class Prober:
    """A process of `user` that opens `paths` in a loop and reports each change of outcome."""

    CODE = """
import os, sys, time
paths = sys.argv[1:]
state = [None] * len(paths)
while True:
    for i, p in enumerate(paths):
        try:
            os.close(os.open(p, os.O_RDONLY))
            ok = 1
        except OSError:
            ok = 0
        if ok != state[i]:
            state[i] = ok
            print(f"{time.time()} {i} {ok}", flush=True)
    time.sleep(0.005)
"""

    def __init__(self, user: UnixUser, paths: list[Path]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, *map(str, paths)],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            stdout=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        )
        self.state: list[int | None] = [None] * len(paths)
        self.changed_at: list[float] = [0.0] * len(paths)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, i, ok = line.split()
            with self.lock:
                self.state[int(i)] = int(ok)
                self.changed_at[int(i)] = float(t)

    def all(self, ok: int) -> bool:
        with self.lock:
            return all(s == ok for s in self.state)

    def last_change(self) -> float:
        with self.lock:
            return max(self.changed_at)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def prober(cluster: Cluster, bob: UnixUser) -> Iterator[Prober]:
    p = Prober(bob, [m.path(cluster.bucket, "data", "f.csv") for m in cluster.nodes])
    yield p
    p.stop()


def revocation_latency(c: Cluster, alice: UnixUser, prober: Prober, trials: int) -> list[float]:
    """Share on node 1, wait until bob reads everywhere, revoke on node 3: seconds until
    bob's new opens fail on every node, counted from the acknowledgement of the revoke."""
    path1 = c.nodes[0].path(c.bucket, "data", "f.csv")
    path3 = c.nodes[2].path(c.bucket, "data", "f.csv")
    out = []
    for _ in range(trials):
        as_user(alice, "share", path1, "--with", "user:fedfs-bob", "--read")
        wait_for(lambda: prober.all(1), "bob reads on every node after the share", BOUND)
        as_user(alice, "unshare", path3, "--with", "user:fedfs-bob")
        acked = time.time()
        wait_for(lambda: prober.all(0), "bob is refused on every node after the revoke", BOUND)
        out.append(max(0.0, prober.last_change() - acked))
    return out


def test_share_on_one_node_reaches_all_and_a_revoke_on_another_stops_every_node(
    cluster: Cluster, alice: UnixUser, bob: UnixUser, prober: Prober
) -> None:
    wait_for(lambda: prober.all(0), "bob's first attempts", 10)
    assert all(s == 0 for s in prober.state)  # nothing shared yet: refused on all four nodes
    latencies = revocation_latency(cluster, alice, prober, trials=3)
    print(f"revocation latency over 3 trials: {[round(x, 2) for x in latencies]} s")
    assert max(latencies) < BOUND
    # Each node says where it stands.
    for m in cluster.nodes:
        st = cluster.status(m)
        assert st["log"]["enrolment"].startswith("enrolled"), st
        assert st["log"]["rejected"] == 0, st
        assert st["lag"] < BOUND
    # Every node applied the others' records: node 2 shows node 1's share and node 3's unshare.
    rows = json.loads(
        run("audit", "log", "--json", "--mount", cluster.nodes[1].path(cluster.bucket))
    )
    seen = {(r["node"], r["action"]) for r in rows}
    assert {("node1", "share"), ("node3", "unshare")} <= seen, seen
    # The chains of all nodes, as the shared log holds them, verify together.
    out = run("audit", "verify", "--mount", cluster.nodes[3].path(cluster.bucket))
    for i in range(1, 5):
        assert f"node{i}: " in out and "FAIL" not in out, out


@pytest.mark.slow
def test_revocation_latency_benchmark(cluster: Cluster, alice: UnixUser, prober: Prober) -> None:
    """The benchmark: `pytest -m slow -s tests/integration/nodes/test_multinode.py -k benchmark`."""
    trials = int(os.environ.get("FEDFS_REVOKE_TRIALS", "50"))
    lat = sorted(revocation_latency(cluster, alice, prober, trials))
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(
        f"\nrevocation latency, {trials} trials, 4 nodes, poll {POLL}s: "
        f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {lat[-1]:.2f} s (target p99 <= 2 s)"
    )
    assert p99 < BOUND


def forge(
    cluster: Cluster, template: AuditRecord, key: SigningKey, node: str, seq: int, prev: str
) -> bytes:
    """A record that looks like a share of /data/f.csv to carol, signed with `key`."""
    writer = AuditWriter(node, key.private_key, key.key_id, None)
    made = writer.append(
        actor_uid=template.actor_uid,
        actor=template.actor,
        action="share",
        principal="user:fedfs-carol",
        path=f"/{cluster.bucket}/data/f.csv",
        level="read",
        detail={"hlc": f"{int(time.time() * 1000):013d}.00000"},
    )
    fields = json.loads(made.encode())
    fields.update(seq=seq, prev_hash=prev)  # re-chained after signing: signature no longer matches
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def test_forged_replayed_and_unknown_key_events_are_rejected_everywhere(
    cluster: Cluster, alice: UnixUser, carol: UnixUser
) -> None:
    c = cluster
    f1 = c.nodes[0].path(c.bucket, "data", "f.csv")
    as_user(alice, "share", f1, "--with", "user:fedfs-carol", "--read")
    as_user(alice, "unshare", f1, "--with", "user:fedfs-carol")
    for m in c.nodes:
        path = m.path(c.bucket, "data", "f.csv")
        wait_for(lambda p=path: carol.run("cat", p).returncode != 0, "carol refused", BOUND)  # type: ignore[misc]
    events = c.keys("events/")
    node1 = [k for k in events if "-node1-" in k]
    share_key = next(
        k
        for k in node1
        if json.loads(c.s3.get_object(Bucket=c.control, Key=k)["Body"].read())["action"] == "share"
    )
    share = AuditRecord.decode(c.s3.get_object(Bucket=c.control, Key=share_key)["Body"].read())
    last_seq = max(int(k.rsplit("-", 1)[1]) for k in node1)
    now = f"{int(time.time() * 1000) + 1000:013d}.00000"
    # 1. a replay: node 1's share of carol, copied to a new, later name
    replayed = f"{c.prefix}events/{now}-node1-{share.seq:010d}"
    c.s3.put_object(Bucket=c.control, Key=replayed, Body=share.encode())
    # 2. a forgery: node 1's next record, signed with node 1's key but altered after signing
    node_key = SigningKey.load(c.nodes[0].config.parent / "cache-node1-state" / "node.key")
    forged = f"{c.prefix}events/{now}-node1-{last_seq + 1:010d}"
    c.s3.put_object(
        Bucket=c.control,
        Key=forged,
        Body=forge(c, share, node_key, "node1", last_seq + 1, share.hash),
    )
    # 3. a record of a node whose key no admin enrolled
    stranger = SigningKey.generate()
    unknown = f"{c.prefix}events/{now}-intruder-{0:010d}"
    c.s3.put_object(
        Bucket=c.control,
        Key=unknown,
        Body=forge(c, share, stranger, "intruder", 0, "0" * 64),
    )
    # 4. a record far too large to be one (it is not read, and nothing stalls on it)
    huge = f"{c.prefix}events/{now}-bloat-{0:010d}"
    c.s3.put_object(Bucket=c.control, Key=huge, Body=b"x" * (600 * 1024))
    c.announce()
    for m in c.nodes[1:]:
        st = wait_for(
            lambda m=m: (s := c.status(m))["log"]["rejected"] >= 4 and s,  # type: ignore[misc]
            f"{m.config.stem} rejects the four events",
            BOUND,
        )
        assert st["log"]["rejected"] == 4, st
        log = m.log_text()
        assert f"key={replayed}" in log and "replayed" in log
        assert f"key={forged}" in log and "signature does not match" in log
        assert f"key={unknown}" in log and "unknown key" in log
        assert f"key={huge}" in log and "more than the 524288 expected" in log
    # Nothing of it took effect: carol is refused on every node, also after a few more polls.
    time.sleep(5 * POLL)
    for m in c.nodes:
        assert carol.run("cat", m.path(c.bucket, "data", "f.csv")).returncode != 0
    # Node 1 skips its own name in the log; its real next change still reaches the others.
    as_user(alice, "share", f1, "--with", "user:fedfs-bob", "--read")
    want = ("grant", f"/{c.bucket}/data/f.csv", "user:fedfs-bob", "read")
    for m in c.nodes[1:]:
        wait_for(
            lambda m=m: want in [g[:4] for g in grants_of(m)],  # type: ignore[misc]
            "node 1's next share applied despite the forged record in its place",
            BOUND,
        )


def test_a_late_node_converges_from_the_snapshot_and_the_tail(
    cluster: Cluster, alice: UnixUser, bob: UnixUser
) -> None:
    c = cluster
    root = c.nodes[0].path(c.bucket)
    as_user(alice, "team", "create", "cosmo", "--mount", root)
    as_user(alice, "team", "add", "cosmo", bob.name, "--mount", root)
    for i in range(6):
        r = alice.run("sh", "-c", f"echo {i} > {root}/data/g{i}")
        assert r.returncode == 0
    run("sync", root)
    for i in range(6):
        path = c.nodes[i % 4].path(c.bucket, "data", f"g{i}")
        wait_for(path.exists, f"{path} seen by its node", BOUND)
        who = "team:cosmo" if i % 2 else "user:fedfs-carol"
        node = c.nodes[i % 4]
        as_user(alice, "share", node.path(c.bucket, "data", f"g{i}"), "--with", who, "--read")
    as_user(alice, "unshare", c.nodes[1].path(c.bucket, "data", "g0"), "--with", "user:fedfs-carol")
    expected = {f"/{c.bucket}/data/g{i}" for i in range(1, 6)}
    for m in c.nodes:
        wait_for(
            lambda m=m: {g[1] for g in grants_of(m) if g[0] == "grant"} == expected,  # type: ignore[misc]
            f"{m.config.stem} has applied every change",
            BOUND,
        )
    reference = grants_of(c.nodes[0])
    assert all(grants_of(m) == reference for m in c.nodes[1:])
    # snapshot_every = 8: by now some node has written a signed snapshot
    wait_for(lambda: c.keys("snapshots/"), "a snapshot in the log", BOUND)
    late = c.add("node5", f"user:{alice.name}")
    assert "policy-snapshot-loaded" in late.log_text()
    assert grants_of(late) == reference
    # and it keeps following: a change made now reaches it
    as_user(alice, "unshare", c.nodes[2].path(c.bucket, "data", "g1"), "--with", "team:cosmo")
    wait_for(
        lambda: grants_of(late) == grants_of(c.nodes[2]) != reference,
        "node 5 follows the tail",
        BOUND,
    )
    assert bob.run("cat", late.path(c.bucket, "data", "g3")).returncode == 0  # via team:cosmo


def test_a_share_and_an_unshare_at_once_end_the_same_on_every_node(
    cluster: Cluster, alice: UnixUser
) -> None:
    c = cluster
    f = "data/f.csv"
    as_user(alice, "share", c.nodes[0].path(c.bucket, f), "--with", "user:fedfs-carol", "--read")
    want = ("grant", f"/{c.bucket}/{f}", "user:fedfs-carol", "read")
    for m in c.nodes:
        wait_for(
            lambda m=m: want in [g[:4] for g in grants_of(m)],  # type: ignore[misc]
            "the first share everywhere",
            BOUND,
        )
    # node 2 raises carol to write while node 3 removes her grant, before either hears of the other
    procs = [
        popen_as(
            alice, "share", c.nodes[1].path(c.bucket, f), "--with", "user:fedfs-carol", "--write"
        ),
        popen_as(alice, "unshare", c.nodes[2].path(c.bucket, f), "--with", "user:fedfs-carol"),
    ]
    for p in procs:
        assert p.wait(60) == 0
    time.sleep(10 * POLL)
    views = [grants_of(m) for m in c.nodes]
    assert all(v == views[0] for v in views), views
    # The documented rule: the later stamp wins; both changes are in every node's audit log.
    rows = json.loads(run("audit", "log", "--json", "--mount", c.nodes[3].path(c.bucket)))
    carol_rows = [
        (r["node"], r["action"], r["detail"].get("hlc"))
        for r in rows
        if r["principal"] == "user:fedfs-carol"
    ]
    assert ("node2", "share") in {(n, a) for n, a, _ in carol_rows}
    assert ("node3", "unshare") in {(n, a) for n, a, _ in carol_rows}
    latest = max((h, n, a) for n, a, h in carol_rows if n in ("node2", "node3"))
    granted = [v for v in views[0] if v[:3] == ("grant", f"/{c.bucket}/{f}", "user:fedfs-carol")]
    if latest[2] == "share":
        assert granted and granted[0][3] == "write", (latest, granted)
    else:
        assert not granted, (latest, granted)


def test_a_node_without_an_enrolled_key_refuses_changes_and_says_why(
    cluster: Cluster, alice: UnixUser
) -> None:
    m = cluster.add("stranger", f"user:{alice.name}", enroll=False)
    st = cluster.status(m)
    assert st["log"]["enrolment"].startswith("not enrolled"), st
    doctor = json.loads(
        subprocess.run(
            [*FEDFS, "doctor", "--json", "--config", str(m.config)], capture_output=True, cwd=REPO
        ).stdout
    )
    checks = {f["check"]: f for f in doctor["findings"]}
    assert checks["policy log"]["status"] == "OK", checks["policy log"]
    assert checks["node key"]["status"] == "WARN" and "not enrolled" in checks["node key"]["found"]
    assert "fedfs admin enroll-node" in checks["node key"]["fix"]
    enrolled = run("doctor", "--config", cluster.nodes[0].config)
    assert "is enrolled for node node1" in enrolled, enrolled
    r = alice.run(
        *FEDFS,
        "share",
        m.path(cluster.bucket, "data", "f.csv"),
        "--with",
        "user:fedfs-bob",
        "--read",
    )
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "not enrolled" in err and "fedfs admin enroll-node" in err, err
    # It still applies what enrolled nodes decide.
    as_user(
        alice,
        "share",
        cluster.nodes[0].path(cluster.bucket, "data", "f.csv"),
        "--with",
        "user:fedfs-bob",
        "--read",
    )
    wait_for(
        lambda: any(g[2] == "user:fedfs-bob" for g in grants_of(m)),
        "the stranger node applies an enrolled node's share",
        BOUND,
    )


def test_a_revoked_node_refuses_changes_and_its_signed_events_are_rejected(
    cluster: Cluster, alice: UnixUser, carol: UnixUser
) -> None:
    c = cluster
    node4 = c.nodes[3]
    out = run("admin", "revoke-node", "--config", node4.config, "--admin-key", c.admin_key, "node4")
    assert "revoked key" in out
    states = {
        r["node"]: r["state"]
        for r in json.loads(run("admin", "nodes", "--json", "--config", node4.config))
    }
    assert states["node4"].startswith("revoked") and states["node1"] == "enrolled", states
    wait_for(
        lambda: c.status(node4)["log"]["enrolment"].startswith("revoked"),
        "node 4 learns of its revocation",
        BOUND,
    )
    for m in c.nodes[:3]:
        wait_for(
            lambda m=m: any(k.startswith("node4:") for k in c.status(m)["log"]["revoked_keys"]),  # type: ignore[misc]
            f"{m.config.stem} learns of the revocation",
            BOUND,
        )
    r = alice.run(
        *FEDFS,
        "share",
        node4.path(c.bucket, "data", "f.csv"),
        "--with",
        "user:fedfs-carol",
        "--read",
    )
    assert r.returncode == 1 and "revoked" in r.stderr.decode(), r.stderr
    # A stolen node 4 key still signs a perfect next record of node 4's chain: rejected.
    keys = [k for k in c.keys("events/") if "-node4-" in k]
    last = AuditRecord.decode(c.s3.get_object(Bucket=c.control, Key=keys[-1])["Body"].read())
    stolen = SigningKey.load(node4.config.parent / "cache-node4-state" / "node.key")
    writer = AuditWriter("node4", stolen.private_key, stolen.key_id, last)
    rec = writer.append(
        actor_uid=alice.uid,
        actor=alice.name,
        action="share",
        principal="user:fedfs-carol",
        path=f"/{c.bucket}/data/f.csv",
        level="read",
        detail={"hlc": f"{int(time.time() * 1000):013d}.00000"},
    )
    key = f"{c.prefix}events/{int(time.time() * 1000) + 500:013d}.00000-node4-{rec.seq:010d}"
    c.s3.put_object(Bucket=c.control, Key=key, Body=rec.encode())
    c.announce()
    for m in c.nodes[:3]:
        wait_for(lambda m=m: f"key={key}" in m.log_text(), f"{m.config.stem} rejects it", BOUND)  # type: ignore[misc]
        assert "revoked" in m.log_text().split(f"key={key}", 1)[1].splitlines()[0]
        assert carol.run("cat", m.path(c.bucket, "data", "f.csv")).returncode != 0


def test_a_node_whose_policy_database_is_lost_rebuilds_it_from_its_chain_and_the_log(
    cluster: Cluster, alice: UnixUser, bob: UnixUser
) -> None:
    c = cluster
    root2 = c.nodes[1].path(c.bucket)
    as_user(alice, "team", "create", "lab", "--mount", root2)  # made on node 2 itself
    as_user(alice, "team", "add", "lab", bob.name, "--mount", root2)
    as_user(alice, "share", c.nodes[1].path(c.bucket, "data"), "--with", "team:lab", "--read")
    as_user(
        alice,
        "share",
        c.nodes[0].path(c.bucket, "data", "f.csv"),
        "--with",
        "user:fedfs-carol",
        "--write",
    )
    for m in c.nodes:
        wait_for(lambda m=m: len(grants_of(m)) == 3, f"{m.config.stem} has it all", BOUND)  # type: ignore[misc]
    reference = grants_of(c.nodes[0])
    node2 = c.nodes[1]
    assert node2.stop() == 0
    db = node2.config.parent / "cache-node2-state" / "policy.db"
    for p in db.parent.glob("policy.db*"):
        p.rename(p.with_name(p.name + ".lost"))
    node2.start()
    assert "event=policy-rebuilt" in node2.log_text()
    assert grants_of(node2) == reference  # its own changes from its chain, node 1's from the log
    assert bob.run("cat", node2.path(c.bucket, "data", "f.csv")).returncode == 0  # via team:lab


def test_a_change_made_while_the_store_is_away_says_so_and_reaches_the_others_later(
    cluster: Cluster, moto: Any, alice: UnixUser, bob: UnixUser
) -> None:
    c = cluster
    proxy = TcpProxy(moto.port).start()
    try:
        cut_off = c.add("islander", f"user:{alice.name}", endpoint=proxy.url)
        f = cut_off.path(c.bucket, "data", "f.csv")
        assert bob.run("cat", f).returncode != 0
        assert f.read_text() == "results\n"  # this node knows the file before the store goes
        proxy.cut()
        r = alice.run(*FEDFS, "share", f, "--with", "user:fedfs-bob", "--read")
        assert r.returncode == 0, r.stderr  # made and in force here ...
        assert b"shared" in r.stdout
        err = r.stderr.decode()
        assert "not yet in the shared policy log" in err and "other nodes keep" in err, err
        st = c.status(cut_off)["log"]
        assert st["unpublished"] >= 1 and st["error"], st
        time.sleep(10 * POLL)  # ... and nowhere else
        want = ("grant", f"/{c.bucket}/data/f.csv", "user:fedfs-bob", "read")
        assert all(want not in [g[:4] for g in grants_of(m)] for m in c.nodes[:4])
        proxy.restore()
        for m in c.nodes[:4]:
            wait_for(
                lambda m=m: want in [g[:4] for g in grants_of(m)],  # type: ignore[misc]
                f"{m.config.stem} gets the share once the store is back",
                BOUND,
            )
        wait_for(lambda: c.status(cut_off)["log"]["unpublished"] == 0, "all published", BOUND)
        # and with the store there, a change says nothing more
        r = alice.run(*FEDFS, "unshare", f, "--with", "user:fedfs-bob")
        assert r.returncode == 0 and b"note" not in r.stderr, r.stderr
    finally:
        proxy.stop()


def test_a_file_removed_on_one_node_takes_its_grant_from_every_node(
    cluster: Cluster, alice: UnixUser, bob: UnixUser
) -> None:
    c = cluster
    path = f"/{c.bucket}/data/f.csv"
    as_user(
        alice,
        "share",
        c.nodes[0].path(c.bucket, "data", "f.csv"),
        "--with",
        "user:fedfs-bob",
        "--read",
    )

    def held(m: Mount) -> bool:
        return ("grant", path, "user:fedfs-bob") in {g[:3] for g in grants_of(m)}

    wait_for(lambda: all(held(m) for m in c.nodes), "the grant on every node", BOUND)
    r = alice.run("rm", c.nodes[0].path(c.bucket, "data", "f.csv"))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not any(held(m) for m in c.nodes), "the grant gone from every node", BOUND)
    rows = json.loads(run("audit", "log", "--json", "--mount", c.nodes[1].path(c.bucket)))
    ended = [r for r in rows if r["action"] == "unshare" and r["path"] == path]
    assert [(r["node"], r["detail"].get("reason")) for r in ended] == [
        ("node1", f"{path} was removed by {alice.name}")
    ], ended
    # a new file at that name, made on another node, is private to bob everywhere
    r = alice.run("sh", "-c", f"umask 077; echo new > {c.nodes[2].path(c.bucket, 'data', 'f.csv')}")
    assert r.returncode == 0, r.stderr
    run("sync", c.nodes[2].path(c.bucket, "data"))
    for m in c.nodes:
        f = m.path(c.bucket, "data", "f.csv")
        wait_for(lambda f=f: alice.run("cat", f).returncode == 0, f"{f} seen", BOUND)
        assert bob.run("cat", f).returncode != 0, f
