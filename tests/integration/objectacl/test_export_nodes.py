"""Two nodes, one bucket, one bucket policy: daemons sharing a policy log on RGW (as in
tests/integration/nodes/) change grants at the same time, and the bucket policy both of
them keep converges to the statements of all the grants, with no leader."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.integration.objectacl.conftest import Rgw
from tests.integration.objectacl.test_export import BOUND, fedfs_statements, outcome, principal
from tests.support import FEDFS, REPO, Mount, UnixUser, wait_for

POLL = 0.2  # the policy log's poll interval


def run(*args: str | Path) -> str:
    r = subprocess.run([*FEDFS, *map(str, args)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, f"{args}: {r.stderr.decode()}"
    return r.stdout.decode()


def start_node(
    make_rgw_mount: Any, bucket: str, owner: str, name: str, control: str, admin_key: Path
) -> Mount:
    policy = "\n".join(
        [
            f'node = "{name}"',
            f'log_bucket = "{control}"',
            'log_prefix = "policy/"',
            f"poll_interval = {POLL}",
            "lookback = 5",
            f'admin_keys = ["{admin_key}.pub"]',
        ]
    )
    m: Mount = make_rgw_mount(
        [(bucket, owner)], object_acl={}, name=name, start=False, policy_extra=policy
    )
    pub = m.config.with_suffix(".pub")
    pub.write_text(run("admin", "node-key", "--config", m.config))
    run("admin", "enroll-node", "--config", m.config, "--admin-key", admin_key, "--node", name, pub)
    return m.start()


def share_at_once(alice: UnixUser, *changes: tuple[str, ...]) -> None:
    """Run each `fedfs` command line at the same time, as alice; all must succeed."""
    procs = [
        subprocess.Popen(
            [*FEDFS, *args],
            user=alice.uid,
            group=alice.gid,
            extra_groups=[],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
        )
        for args in changes
    ]
    for p, args in zip(procs, changes, strict=True):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"{args}: {err.decode()}"


def granted(rgw: Rgw, bucket: str) -> set[tuple[str, str]]:
    """(principal, first object resource) of every fedfs object statement in the policy."""
    return {
        (who, s["Resource"][0].split(":::", 1)[1])
        for s in fedfs_statements(rgw, bucket)
        if "s3:GetObject" in s["Action"]
        for who in s["Principal"]["AWS"]
    }


def test_two_nodes_changing_grants_at_once_converge_to_one_bucket_policy(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
    tmp_path: Path,
) -> None:
    b = rgw_bucket
    for key in ("runs/a.txt", "private/p.txt", "shared/s.txt"):
        rgw.client(alice.name).put_object(Bucket=b, Key=key, Body=b"x")
    control = f"ctl-{uuid.uuid4().hex[:12]}"
    rgw.client(alice.name).create_bucket(Bucket=control)  # svc, a system user, may use it
    admin_key = tmp_path / "admin.key"
    run("admin", "keygen", admin_key)
    owner = f"user:{alice.name}"
    one = start_node(make_rgw_mount, b, owner, "node1", control, admin_key)
    two = start_node(make_rgw_mount, b, owner, "node2", control, admin_key)

    bob_p, carol_p = principal(bob), principal(carol)
    rounds = [
        # (node1's change, node2's change, the grants that then exist)
        (
            ("share", one.path(b, "runs"), "--with", f"user:{bob.name}", "--read"),
            ("share", two.path(b, "private"), "--with", f"user:{carol.name}", "--read"),
            {(bob_p, f"{b}/runs"), (carol_p, f"{b}/private")},
        ),
        (
            ("unshare", one.path(b, "runs"), "--with", f"user:{bob.name}"),
            ("share", two.path(b, "shared"), "--with", f"user:{bob.name}", "--write"),
            {(carol_p, f"{b}/private"), (bob_p, f"{b}/shared")},
        ),
        (
            ("share", one.path(b, "runs"), "--with", f"user:{carol.name}", "--read"),
            ("unshare", two.path(b, "private"), "--with", f"user:{carol.name}"),
            {(bob_p, f"{b}/shared"), (carol_p, f"{b}/runs")},
        ),
    ]
    for first, second, expected in rounds:
        share_at_once(alice, first, second)
        wait_for(lambda e=expected: granted(rgw, b) == e, f"policy holding {expected}", BOUND)
    assert len(fedfs_statements(rgw, b)) == 4
    carol_s3 = rgw.client(carol.name)
    assert outcome(carol_s3.get_object, Bucket=b, Key="runs/a.txt") == "ok"
    assert outcome(carol_s3.get_object, Bucket=b, Key="private/p.txt") == "AccessDenied"
