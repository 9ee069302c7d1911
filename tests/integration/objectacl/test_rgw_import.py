"""The bucket's own policy and ACL, written by alice with her own keys on RGW, seen and
enforced through the mount for real uids: what she allows, denies, and what fedfs
cannot map. The poll interval is 2 s (make_rgw_mount's [object_acl] table)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.integration.objectacl.conftest import Rgw
from tests.support import FEDFS, REPO, Mount, UnixUser, wait_for

POLL = 2.0
BOUND = POLL * 1.2 + 2  # the longest poll (jitter 20%) and a margin for a loaded machine


def arn(user: UnixUser) -> str:
    return f"arn:aws:iam:::user/{user.name}"


def put_policy(rgw: Rgw, bucket: str, owner: UnixUser, *statements: dict[str, Any]) -> None:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    rgw.client(owner.name).put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))


def reads(who: UnixUser, path: Path) -> bool:
    return who.run("cat", str(path)).returncode == 0


def alices_tree(m: Mount, bucket: str, alice: UnixUser) -> Path:
    """shared/, private/ and runs/secret/ with files only alice may read (0600 in 0700,
    made so by her umask: a chmod would also limit what grants give, docs/SEMANTICS.md)."""
    root = m.path(bucket)
    script = (
        f"umask 077 && cd {root} && mkdir -p shared private runs/secret && "
        "echo shared > shared/a.txt && echo private > private/b.txt && "
        "echo run > runs/a.txt && echo secret > runs/secret/x.txt"
    )
    r = alice.run("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    return root


def carol_may_read_shared(alice: UnixUser, carol: UnixUser, bucket: str) -> dict[str, Any]:
    return {
        "Sid": "CarolReadsShared",
        "Effect": "Allow",
        "Principal": {"AWS": [arn(carol)]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/shared/*"],
    }


def test_alices_statement_lets_carol_read_shared_and_nothing_else_until_she_removes_it(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = alices_tree(m, rgw_bucket, alice)
    shared, private = root / "shared" / "a.txt", root / "private" / "b.txt"
    assert not reads(carol, shared)

    put_policy(rgw, rgw_bucket, alice, carol_may_read_shared(alice, carol, rgw_bucket))
    wait_for(lambda: reads(carol, shared), "carol reading shared/a.txt", timeout=BOUND + 10)
    # GetObject alone lists nothing, on the store as through the mount (s3:ListBucket does)
    assert carol.run("ls", str(root / "shared")).returncode != 0
    assert not reads(carol, private)
    assert not reads(carol, root / "runs" / "a.txt")
    assert not reads(bob, shared)
    assert carol.run("sh", "-c", f"echo x >> {shared}").returncode != 0
    acl = carol.run("getfacl", "-n", str(shared)).stdout.decode()
    assert f"user:{carol.uid}:r--" in acl

    grants = alice.run(*FEDFS, "grants", str(shared))
    assert "bucket-policy:CarolReadsShared" in grants.stdout.decode(), grants
    r = alice.run(*FEDFS, "unshare", str(root / "shared"), "--with", f"user:{carol.name}")
    assert r.returncode != 0 and b"bucket-policy:CarolReadsShared" in r.stderr, r
    who = alice.run(*FEDFS, "audit", "who", str(shared))
    assert carol.name in who.stdout.decode(), who
    where = carol.run(*FEDFS, "audit", "user", carol.name, "--mount", str(root))
    assert "shared" in where.stdout.decode() and "private" not in where.stdout.decode(), where
    history = alice.run(*FEDFS, "audit", "log", "--mount", str(root), "--json")
    observed = [r for r in json.loads(history.stdout) if r["action"] == "observe"]
    assert observed and "CarolReadsShared" in observed[-1]["after"]

    rgw.client(alice.name).delete_bucket_policy(Bucket=rgw_bucket)
    wait_for(lambda: not reads(carol, shared), "carol refused again", timeout=BOUND + 10)


def test_a_deny_for_bob_refuses_him_where_a_fedfs_grant_covers_it(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = alices_tree(m, rgw_bucket, alice)
    r = alice.run(*FEDFS, "share", str(root / "runs"), "--with", f"user:{bob.name}", "--read")
    assert r.returncode == 0, r.stderr
    secret, run = root / "runs" / "secret" / "x.txt", root / "runs" / "a.txt"
    wait_for(lambda: reads(bob, secret), "bob reading runs/secret through his grant")

    put_policy(
        rgw,
        rgw_bucket,
        alice,
        {
            "Sid": "NoBobInSecret",
            "Effect": "Deny",
            "Principal": {"AWS": [arn(bob)]},
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{rgw_bucket}/runs/secret/*"],
        },
    )
    wait_for(lambda: not reads(bob, secret), "bob refused in runs/secret", timeout=BOUND + 10)
    assert reads(bob, run)
    assert reads(alice, secret)  # the owner is not narrowed
    grants = alice.run(*FEDFS, "grants", str(secret)).stdout.decode()
    assert "bucket-policy:NoBobInSecret" in grants


def test_a_bucket_acl_grant_gives_what_the_store_gives_nothing_to_read(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, carol: UnixUser
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = m.path(rgw_bucket)
    r = alice.run("sh", "-c", f"umask 077 && echo data > {root}/a.txt")
    assert r.returncode == 0, r.stderr
    assert not reads(carol, root / "a.txt")
    rgw.client(alice.name).put_bucket_acl(
        Bucket=rgw_bucket, GrantFullControl=f"id={alice.name}", GrantRead=f"id={carol.name}"
    )
    # the store itself lets carol list, not read (her own keys)
    assert alice.run(*FEDFS, "sync", str(root)).returncode == 0
    assert rgw.client(carol.name).list_objects_v2(Bucket=rgw_bucket)["KeyCount"] >= 1
    with pytest.raises(botocore.exceptions.ClientError):
        rgw.client(carol.name).get_object(Bucket=rgw_bucket, Key="a.txt")
    # the mount lists the grant as not mapped and gives carol nothing
    wait_for(
        lambda: carol.name in alice.run(*FEDFS, "status", str(root)).stdout.decode(),
        "the bucket ACL grant listed as not mapped",
        timeout=BOUND + 10,
    )
    assert "not read objects" in alice.run(*FEDFS, "status", str(root)).stdout.decode()
    assert not reads(carol, root / "a.txt")


def test_an_unmappable_statement_gives_nothing_and_status_and_doctor_list_it(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    carol: UnixUser,
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = alices_tree(m, rgw_bucket, alice)
    put_policy(
        rgw,
        rgw_bucket,
        alice,
        {
            **carol_may_read_shared(alice, carol, rgw_bucket),
            "Sid": "CarolFromTheLab",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.1.0.0/16"}},
        },
    )

    def listed() -> str:
        out = alice.run(*FEDFS, "status", str(root)).stdout.decode()
        return out if "CarolFromTheLab" in out else ""

    status = wait_for(listed, "status listing the statement", timeout=BOUND + 10)
    assert "aws:SourceIp" in status
    # the bucket's policy is its owner's: another user is told only that some exist
    seen = carol.run(*FEDFS, "status", str(root)).stdout.decode()
    assert "CarolFromTheLab" not in seen and "of buckets you do not own are not mapped" in seen
    assert not reads(carol, root / "shared" / "a.txt")
    doctor = subprocess.run(
        [*FEDFS, "doctor", "--json", "--config", str(m.config)], capture_output=True, cwd=REPO
    )
    found = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
    policies = found["bucket policies"]
    assert policies["status"] == "WARN", policies
    assert any("CarolFromTheLab" in line for line in policies["details"]), policies
    polls = alice.run(*FEDFS, "status", "--json", str(root)).stdout
    wait_for(
        lambda: (
            json.loads(alice.run(*FEDFS, "status", "--json", str(root)).stdout)["object_acl"][
                "polls"
            ]
            > json.loads(polls)["object_acl"]["polls"]
        ),
        "another poll",
    )
    reported = [line for line in m.log_text().splitlines() if "object-acl-unmapped" in line]
    assert len(reported) == 1 and "CarolFromTheLab" in reported[0], reported


@pytest.mark.slow
def test_time_from_alices_statement_to_carols_open(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, carol: UnixUser
) -> None:
    """Reported, not asserted: from PutBucketPolicy to carol's first successful open
    through the mount, and from DeleteBucketPolicy to her first refused one."""
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = alices_tree(m, rgw_bucket, alice)
    shared = root / "shared" / "a.txt"
    grant_times, revoke_times = [], []
    for _ in range(20):
        start = time.monotonic()
        put_policy(rgw, rgw_bucket, alice, carol_may_read_shared(alice, carol, rgw_bucket))
        wait_for(lambda: reads(carol, shared), "carol's open", timeout=60, interval=0.02)
        grant_times.append(time.monotonic() - start)
        start = time.monotonic()
        rgw.client(alice.name).delete_bucket_policy(Bucket=rgw_bucket)
        wait_for(lambda: not reads(carol, shared), "carol refused", timeout=60, interval=0.02)
        revoke_times.append(time.monotonic() - start)

    def p99(xs: list[float]) -> float:
        return sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))]

    print(
        f"\nobject -> POSIX, poll_interval {POLL:g}s, {len(grant_times)} trials: "
        f"grant median {statistics.median(grant_times):.2f}s p99 {p99(grant_times):.2f}s; "
        f"revoke median {statistics.median(revoke_times):.2f}s p99 {p99(revoke_times):.2f}s"
    )
