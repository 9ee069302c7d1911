"""Export on a real Ceph RGW: what `fedfs share` grants through POSIX, the grantee's own
S3 keys may do through S3, and nothing more; the bucket owner's own statements survive.

Grants are made with the real CLI by alice (the bucket's owner on both sides); bob and
carol are real RGW users whose own boto3 clients the store checks against the bucket
policy the daemon (a service user) keeps.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.integration.objectacl.conftest import PRINCIPAL, SERVICE, Rgw, object_acl_section
from tests.support import FEDFS, REPO, UnixUser, wait_for, write_config

BOUND = 20.0  # a generous bound for a change to reach the store on a loaded machine


def fedfs(user: UnixUser, *args: str | Path) -> str:
    r = user.run(*FEDFS, *map(str, args))
    assert r.returncode == 0, f"{args}: {r.stderr.decode()}"
    return r.stdout.decode()


def outcome(call: Callable[..., Any], **kw: Any) -> str:
    """ "ok", or the S3 error code the store answered."""
    try:
        call(**kw)
    except botocore.exceptions.ClientError as e:
        return str(e.response["Error"]["Code"])
    return "ok"


def becomes(expected: str, call: Callable[..., Any], **kw: Any) -> None:
    wait_for(lambda: outcome(call, **kw) == expected, f"{kw} -> {expected}", timeout=BOUND)


def statements(rgw: Rgw, bucket: str) -> list[dict[str, Any]]:
    try:
        doc = rgw.client(SERVICE).get_bucket_policy(Bucket=bucket)["Policy"]
    except botocore.exceptions.ClientError:
        return []
    return list(json.loads(doc)["Statement"])


def fedfs_statements(rgw: Rgw, bucket: str) -> list[dict[str, Any]]:
    return [s for s in statements(rgw, bucket) if str(s.get("Sid", "")).startswith("fedfs")]


def principal(user: UnixUser) -> str:
    return PRINCIPAL.format(user=user.name)


@pytest.fixture
def seeded(rgw: Rgw, rgw_bucket: str, alice: UnixUser) -> str:
    """alice's bucket with files under runs/ and private/, written with her own keys."""
    client = rgw.client(alice.name)
    for key in ("runs/a.txt", "runs/2024/b.txt", "private/p.txt"):
        client.put_object(Bucket=rgw_bucket, Key=key, Body=key.encode())
    return rgw_bucket


def test_share_lets_bobs_own_keys_read_and_list_there_only_until_unshared(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    b = seeded
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    bob_s3 = rgw.client(bob.name)
    assert outcome(bob_s3.get_object, Bucket=b, Key="runs/a.txt") == "AccessDenied"

    fedfs(alice, "share", m.path(b, "runs"), "--with", f"user:{bob.name}", "--read")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert bob_s3.get_object(Bucket=b, Key="runs/2024/b.txt")["Body"].read() == b"runs/2024/b.txt"
    listed = bob_s3.list_objects_v2(Bucket=b, Prefix="runs/")
    assert {o["Key"] for o in listed["Contents"]} == {"runs/a.txt", "runs/2024/b.txt"}
    # elsewhere in the bucket, and writing, the store still refuses bob
    assert outcome(bob_s3.get_object, Bucket=b, Key="private/p.txt") == "AccessDenied"
    assert outcome(bob_s3.list_objects_v2, Bucket=b, Prefix="private/") == "AccessDenied"
    assert outcome(bob_s3.list_objects_v2, Bucket=b) == "AccessDenied"
    assert outcome(bob_s3.put_object, Bucket=b, Key="runs/x", Body=b"x") == "AccessDenied"
    ours = fedfs_statements(rgw, b)
    assert len(ours) == 2 and all(s["Principal"]["AWS"] == [principal(bob)] for s in ours)

    fedfs(alice, "unshare", m.path(b, "runs"), "--with", f"user:{bob.name}")
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert outcome(bob_s3.list_objects_v2, Bucket=b, Prefix="runs/") == "AccessDenied"
    assert fedfs_statements(rgw, b) == []

    fedfs(alice, "share", m.path(b, "runs"), "--with", f"user:{bob.name}", "--write")
    becomes("ok", bob_s3.put_object, Bucket=b, Key="runs/from-bob.txt", Body=b"bob\n")
    assert outcome(bob_s3.delete_object, Bucket=b, Key="runs/from-bob.txt") == "ok"
    assert outcome(bob_s3.put_object, Bucket=b, Key="private/x", Body=b"x") == "AccessDenied"


def test_what_the_daemon_writes_stays_readable_by_the_bucket_owner_and_grantees(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    b = seeded
    parts = 'multipart_threshold = "6MiB"\nmultipart_chunksize = "5MiB"'
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={}, store_extra=parts)
    r = alice.run("sh", "-c", f"echo from-mount > {m.path(b, 'runs', 'm.txt')}")
    assert r.returncode == 0, r.stderr
    big = m.path(b, "runs", "big.bin")  # above the multipart threshold: a multipart upload
    r = alice.run("dd", "if=/dev/zero", f"of={big}", "bs=1M", "count=9", "status=none")
    assert r.returncode == 0, r.stderr
    fedfs(alice, "sync", m.mountpoint)
    alice_s3 = rgw.client(alice.name)
    assert alice_s3.get_object(Bucket=b, Key="runs/m.txt")["Body"].read() == b"from-mount\n"
    assert alice_s3.head_object(Bucket=b, Key="runs/big.bin")["ContentLength"] == 9 << 20
    # a rename is a server-side copy: the copy carries the ACL too
    r = alice.run("mv", m.path(b, "runs", "m.txt"), m.path(b, "runs", "moved.txt"))
    assert r.returncode == 0, r.stderr
    fedfs(alice, "sync", m.mountpoint)
    assert alice_s3.get_object(Bucket=b, Key="runs/moved.txt")["Body"].read() == b"from-mount\n"
    fedfs(alice, "share", m.path(b, "runs"), "--with", f"user:{bob.name}", "--read")
    becomes("ok", rgw.client(bob.name).get_object, Bucket=b, Key="runs/moved.txt")

    # without the ACL (object_acl = "none") the owner could not read what the daemon wrote
    bare = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={"object_acl": "none"})
    r = alice.run("sh", "-c", f"echo bare > {bare.path(b, 'runs', 'bare.txt')}")
    assert r.returncode == 0, r.stderr
    fedfs(alice, "sync", bare.mountpoint)
    assert outcome(alice_s3.get_object, Bucket=b, Key="runs/bare.txt") == "AccessDenied"


def test_a_team_grant_reaches_each_members_keys_and_follows_membership(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    b = seeded
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    root = m.path(b)
    fedfs(alice, "team", "create", "oa-cosmo", "--mount", root)
    fedfs(alice, "team", "add", "oa-cosmo", bob.name, "--mount", root)
    fedfs(alice, "share", m.path(b, "runs"), "--with", "team:oa-cosmo", "--read")
    bob_s3, carol_s3 = rgw.client(bob.name), rgw.client(carol.name)
    becomes("ok", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert outcome(carol_s3.get_object, Bucket=b, Key="runs/a.txt") == "AccessDenied"

    fedfs(alice, "team", "add", "oa-cosmo", carol.name, "--mount", root)
    becomes("ok", carol_s3.get_object, Bucket=b, Key="runs/a.txt")
    fedfs(alice, "team", "remove", "oa-cosmo", bob.name, "--mount", root)
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert outcome(carol_s3.get_object, Bucket=b, Key="runs/a.txt") == "ok"


def test_an_expiring_grant_carries_its_expiry_and_its_statements_go_when_it_expires(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    b = seeded
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    before = time.time()
    fedfs(
        alice, "share", m.path(b, "runs"), "--with", f"user:{bob.name}", "--read", "--expires", "6s"
    )
    ours = wait_for(lambda: fedfs_statements(rgw, b), "the grant's statements", timeout=BOUND)
    for s in ours:
        until = s["Condition"]["DateLessThan"]["aws:CurrentTime"]
        at = time.mktime(time.strptime(until, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert before + 4 <= at <= time.time() + 6, until
    becomes("ok", rgw.client(bob.name).get_object, Bucket=b, Key="runs/a.txt")
    wait_for(lambda: fedfs_statements(rgw, b) == [], "statements gone at expiry", timeout=BOUND)
    assert outcome(rgw.client(bob.name).get_object, Bucket=b, Key="runs/a.txt") == "AccessDenied"


def test_the_owners_own_statements_survive_and_a_hand_deleted_one_is_restored(
    rgw: Rgw,
    seeded: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
    tmp_path: Path,
) -> None:
    b = seeded
    alice_s3 = rgw.client(alice.name)
    hers = {
        "Sid": "carol-reads-private",
        "Effect": "Allow",
        "Principal": {"AWS": [principal(carol)]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{b}/private/*"],
    }
    alice_s3.put_bucket_policy(
        Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [hers]})
    )
    textfile = tmp_path / "textfile" / "fedfs_m0.prom"
    textfile.parent.mkdir()
    m = make_rgw_mount(
        [(b, f"user:{alice.name}")],
        object_acl={"poll_interval": 2.0},
        top=f'[metrics]\ntextfile = "{textfile}"\ninterval = 0.2',
    )
    carol_s3, bob_s3 = rgw.client(carol.name), rgw.client(bob.name)
    fedfs(alice, "share", m.path(b, "runs"), "--with", f"user:{bob.name}", "--write")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    fedfs(alice, "share", m.path(b, "runs", "2024"), "--with", f"user:{carol.name}", "--read")
    fedfs(alice, "unshare", m.path(b, "runs"), "--with", f"user:{bob.name}")
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert statements(rgw, b)[0] == hers
    assert carol_s3.get_object(Bucket=b, Key="private/p.txt")["Body"].read() == b"private/p.txt"

    # alice deletes fedfs's statements by hand: the next poll puts them back, hers kept
    wanted = fedfs_statements(rgw, b)
    assert len(wanted) == 2
    alice_s3.put_bucket_policy(
        Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [hers]})
    )
    assert outcome(carol_s3.get_object, Bucket=b, Key="runs/2024/b.txt") == "AccessDenied"
    wait_for(lambda: fedfs_statements(rgw, b) == wanted, "statements restored", timeout=BOUND)
    assert statements(rgw, b)[0] == hers
    becomes("ok", carol_s3.get_object, Bucket=b, Key="runs/2024/b.txt")
    assert "event=object-acl-repair" in m.log_text()
    status = json.loads(fedfs(alice, "status", "--json", m.path(b)))["object_acl_export"]
    assert status[0]["bucket"] == b and status[0]["repairs"] >= 1 and status[0]["error"] is None
    assert f"export     bucket policy of {b}: in line" in fedfs(alice, "status", m.path(b))
    wait_for(
        lambda: re.search(
            r'fedfs_bucket_policy_repairs_total\{mount="m0"\} [1-9]', textfile.read_text()
        ),
        "the repair counted in the metrics",
        timeout=BOUND,
    )
    assert 'fedfs_bucket_policy_export_failing{mount="m0"} 0.0' in textfile.read_text()


def test_share_to_s3_latency(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    """Time from `fedfs share` returning to bob's own GET succeeding, and from `fedfs
    unshare` returning to his GET being refused; and from each command's start (share and
    unshare wait for their export pass, so most of the time is inside the command now);
    printed, not asserted."""
    b = seeded
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    bob_s3 = rgw.client(bob.name)
    found: dict[str, list[float]] = {}
    for _ in range(20):
        for verb, expected in (("share", "ok"), ("unshare", "AccessDenied")):
            level = ("--read",) if verb == "share" else ()
            start = time.monotonic()
            fedfs(alice, verb, m.path(b, "runs"), "--with", f"user:{bob.name}", *level)
            returned = time.monotonic()
            becomes(expected, bob_s3.get_object, Bucket=b, Key="runs/a.txt")
            done = time.monotonic()
            found.setdefault(f"{verb} returned -> GET {expected}", []).append(done - returned)
            found.setdefault(f"{verb} started -> GET {expected}", []).append(done - start)
    for name, values in found.items():
        values.sort()
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        print(
            f"\n{name}: median {statistics.median(values) * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms over {len(values)} trials"
        )


def test_doctor_checks_the_daemons_key_may_read_and_write_each_bucket_policy(
    rgw: Rgw, seeded: str, alice: UnixUser, bob: UnixUser, tmp_path: Path
) -> None:
    b = seeded
    hers = {"Sid": "keep", "Effect": "Allow", "Principal": {"AWS": [principal(bob)]}}
    hers |= {"Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{b}/shared/*"]}
    alice_doc = json.dumps({"Version": "2012-10-17", "Statement": [hers]})

    def doctor(keys_of: str) -> dict[str, Any]:
        cfg = write_config(
            tmp_path / f"{keys_of}.toml",
            rgw.url,
            [(b, f"user:{alice.name}")],
            tmp_path / f"cache-{keys_of}",
            keys=rgw.keys[keys_of],
            top=object_acl_section(),
        )
        r = subprocess.run(
            [*FEDFS, "doctor", "--config", str(cfg), "--json"], capture_output=True, cwd=REPO
        )
        found = {f["check"]: f for f in json.loads(r.stdout)["findings"]}
        return dict(found[f"bucket policy {b}"])

    # no policy yet: write is proved and the bucket is left without one
    assert doctor(SERVICE)["status"] == "OK"
    assert statements(rgw, b) == []
    # alice's policy: written back as it was
    rgw.client(alice.name).put_bucket_policy(Bucket=b, Policy=alice_doc)
    assert doctor(SERVICE)["status"] == "OK"
    assert statements(rgw, b) == [hers]
    # bob's keys may not touch alice's bucket policy: FAIL, with what to do
    found = doctor(bob.name)
    assert found["status"] == "FAIL" and "may not read" in found["found"]
    assert "s3:PutBucketPolicy" in found["fix"] and "--system" in found["fix"]
    assert statements(rgw, b) == [hers]


def test_the_owners_chmod_limits_what_grantees_keys_may_do_through_s3_too(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    b = seeded
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    root = m.path(b)
    bob_s3, carol_s3 = rgw.client(bob.name), rgw.client(carol.name)
    r = alice.run("sh", "-c", f"echo mine > {root}/runs/mine.txt")
    assert r.returncode == 0, r.stderr
    fedfs(alice, "sync", root)
    fedfs(alice, "share", root / "runs", "--with", f"user:{bob.name}", "--write")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="runs/mine.txt")

    # chmod 600: private through the mount, and to bob's own keys
    assert alice.run("chmod", "600", root / "runs" / "mine.txt").returncode == 0
    assert bob.run("cat", root / "runs" / "mine.txt").returncode != 0
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="runs/mine.txt")
    assert outcome(bob_s3.delete_object, Bucket=b, Key="runs/mine.txt") == "AccessDenied"
    assert outcome(bob_s3.get_object, Bucket=b, Key="runs/a.txt") == "ok"  # the rest stays
    # chmod 640: read, not write
    assert alice.run("chmod", "640", root / "runs" / "mine.txt").returncode == 0
    becomes("ok", bob_s3.get_object, Bucket=b, Key="runs/mine.txt")
    assert outcome(bob_s3.put_object, Bucket=b, Key="runs/mine.txt", Body=b"x") == "AccessDenied"
    # chmod 660 lifts the limit
    assert alice.run("chmod", "660", root / "runs" / "mine.txt").returncode == 0
    becomes("ok", bob_s3.put_object, Bucket=b, Key="runs/mine.txt", Body=b"bob\n")

    # a directory closed with chmod 700 before a share stays closed to the keys too
    assert alice.run("chmod", "700", root / "private").returncode == 0
    fedfs(alice, "share", root, "--with", f"user:{carol.name}", "--read")
    becomes("ok", carol_s3.get_object, Bucket=b, Key="runs/a.txt")
    assert carol.run("cat", root / "private" / "p.txt").returncode != 0
    assert outcome(carol_s3.get_object, Bucket=b, Key="private/p.txt") == "AccessDenied"
    assert outcome(carol_s3.list_objects_v2, Bucket=b, Prefix="private/") == "AccessDenied"
    assert any(s["Effect"] == "Deny" for s in fedfs_statements(rgw, b))


def test_a_file_grant_exports_its_key_and_nothing_below_it(
    rgw: Rgw, seeded: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    """A share of a file is a grant on that key: bob's own keys cannot put `P/evil` (which
    would make `P` a directory in the mount, hiding the file) nor read what alice puts at
    `P/...` later; the file itself stays his to read (and write, with a write grant)."""
    b = seeded
    alice_s3, bob_s3 = rgw.client(alice.name), rgw.client(bob.name)
    for key in ("d4/w.txt", "d3/rep"):
        alice_s3.put_object(Bucket=b, Key=key, Body=b"alice's\n")
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})

    fedfs(alice, "share", m.path(b, "d4", "w.txt"), "--with", f"user:{bob.name}", "--write")
    becomes("ok", bob_s3.put_object, Bucket=b, Key="d4/w.txt", Body=b"bob's\n")
    assert bob_s3.get_object(Bucket=b, Key="d4/w.txt")["Body"].read() == b"bob's\n"
    assert outcome(bob_s3.put_object, Bucket=b, Key="d4/w.txt/evil", Body=b"x") == "AccessDenied"
    assert outcome(bob_s3.list_objects_v2, Bucket=b, Prefix="d4/w.txt/") == "AccessDenied"
    assert outcome(bob_s3.list_objects_v2, Bucket=b, Prefix="d4/w.txt") == "AccessDenied"

    fedfs(alice, "share", m.path(b, "d3", "rep"), "--with", f"user:{bob.name}", "--read")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="d3/rep")
    alice_s3.put_object(Bucket=b, Key="d3/rep/private.csv", Body=b"alice only\n")
    assert outcome(bob_s3.get_object, Bucket=b, Key="d3/rep/private.csv") == "AccessDenied"
    assert outcome(bob_s3.get_object, Bucket=b, Key="d3/rep/x") == "AccessDenied"
    assert outcome(bob_s3.put_object, Bucket=b, Key="d3/rep", Body=b"x") == "AccessDenied"
    assert outcome(bob_s3.get_object, Bucket=b, Key="d3/rep") == "ok"

    ours = fedfs_statements(rgw, b)
    assert sorted(r for s in ours for r in s["Resource"]) == [
        f"arn:aws:s3:::{b}/d3/rep",
        f"arn:aws:s3:::{b}/d4/w.txt",
    ]
    assert not any("s3:ListBucket" in s["Action"] for s in ours)
    shown = fedfs(alice, "grants", m.path(b, "d4", "w.txt"))
    assert "this file only" in shown, shown


def test_a_file_grant_gives_nothing_below_the_file_in_the_mount(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    """When alice's own keys make `P/` a prefix after she shared the file `P` with bob, the
    directory the mount shows at `P` and everything below it are nothing of bob's grant."""
    b = rgw_bucket
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    d = m.path(b, "d3")
    r = alice.run("sh", "-c", f"mkdir -m 755 {d} && echo report > {d}/rep")
    assert r.returncode == 0, r.stderr
    fedfs(alice, "sync", m.mountpoint)
    fedfs(alice, "share", d / "rep", "--with", f"user:{bob.name}", "--write")
    assert bob.run("cat", d / "rep").stdout == b"report\n"

    rgw.client(alice.name).put_object(Bucket=b, Key="d3/rep/private.csv", Body=b"alice only\n")
    wait_for(
        lambda: alice.run("cat", d / "rep" / "private.csv").returncode == 0,
        "the mount shows d3/rep as a directory holding private.csv",
    )
    assert bob.run("cat", d / "rep" / "private.csv").returncode != 0
    assert bob.run("ls", d / "rep").returncode != 0
    assert bob.run("mkdir", d / "rep" / "sub").returncode != 0
    assert bob.run("sh", "-c", f"echo x > {d}/rep/new").returncode != 0
    listed = alice.run("ls", "-a", d / "rep").stdout.decode().split()
    assert sorted(listed) == [".", "..", ".fedfs-shadowed-file", "private.csv"]
    acl = alice.run("getfacl", "-cp", d / "rep").stdout.decode()
    assert f"user:{bob.name}" not in acl, acl
