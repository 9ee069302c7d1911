"""What a bucket policy's resources and listing conditions cover, through the mount and
through carol's own keys on RGW: the mount never lets her do what the store refuses.

A statement on `B/P/*` covers the keys under `P/`, never the object `P` (a file of that
name, or the file a prefix `P/` shadows); GetObject alone reads files but lists no
directory; ListBucket with an `s3:prefix` condition lists exactly the directories it
matches (docs/OBJECT_ACL.md "Import"). Real uids, real mounts, Ceph RGW.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import botocore.exceptions

from tests.integration.objectacl.conftest import Rgw
from tests.integration.objectacl.test_rgw_import import BOUND, arn, put_policy, reads
from tests.support import FEDFS, Mount, UnixUser, wait_for


def tree(m: Mount, bucket: str, alice: UnixUser, script: str) -> Path:
    """Run script as alice in the bucket's root with umask 077 (only she may read)."""
    root = m.path(bucket)
    r = alice.run("sh", "-c", f"umask 077 && cd {root} && {script}")
    assert r.returncode == 0, r.stderr
    r = alice.run(*FEDFS, "sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    return root


def store_reads(rgw: Rgw, who: UnixUser, bucket: str, key: str) -> bool:
    try:
        rgw.client(who.name).get_object(Bucket=bucket, Key=key)["Body"].read()
        return True
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e
        return False


def store_writes(rgw: Rgw, who: UnixUser, bucket: str, key: str) -> bool:
    try:
        rgw.client(who.name).put_object(Bucket=bucket, Key=key, Body=b"x")
        return True
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e
        return False


def store_lists(rgw: Rgw, who: UnixUser, bucket: str, prefix: str) -> bool:
    try:
        rgw.client(who.name).list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        return True
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e
        return False


def lists(who: UnixUser, path: Path) -> bool:
    return who.run("ls", str(path)).returncode == 0


def get(bucket: str, who: UnixUser, *resources: str) -> dict[str, Any]:
    return {
        "Sid": "CarolGets",
        "Effect": "Allow",
        "Principal": {"AWS": [arn(who)]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/{r}" for r in resources],
    }


def listing(bucket: str, who: UnixUser, op: str, *prefixes: str) -> dict[str, Any]:
    return {
        "Sid": "CarolLists",
        "Effect": "Allow",
        "Principal": {"AWS": [arn(who)]},
        "Action": ["s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}"],
        "Condition": {op: {"s3:prefix": list(prefixes)}},
    }


def test_a_statement_on_a_prefix_never_opens_the_object_of_the_same_name(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, carol: UnixUser
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = tree(
        m,
        rgw_bucket,
        alice,
        "mkdir -p shared P && echo shared > shared/a.txt && echo under > P/x.txt && "
        "echo object > data && echo object > Pfile",
    )
    # the object P next to the prefix P/: the mount shows it inside P, shadowed
    rgw.client(alice.name).copy_object(
        Bucket=rgw_bucket, Key="P", CopySource={"Bucket": rgw_bucket, "Key": "Pfile"}
    )
    shadowed = root / "P" / ".fedfs-shadowed-file"
    wait_for(lambda: reads(alice, shadowed), "alice seeing the shadowed file P", timeout=30)

    writes = {
        "Sid": "CarolWritesUnderP",
        "Effect": "Allow",
        "Principal": {"AWS": [arn(carol)]},
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        "Resource": [f"arn:aws:s3:::{rgw_bucket}/P/*", f"arn:aws:s3:::{rgw_bucket}/data/*"],
    }
    put_policy(rgw, rgw_bucket, alice, get(rgw_bucket, carol, "shared/*"), writes)
    wait_for(lambda: reads(carol, root / "shared" / "a.txt"), "carol reading", timeout=BOUND + 10)
    assert store_reads(rgw, carol, rgw_bucket, "shared/a.txt")

    # the file `data` and the object `P` are not under data/ or P/: the store refuses both
    assert not store_reads(rgw, carol, rgw_bucket, "data")
    assert not store_reads(rgw, carol, rgw_bucket, "P")
    assert not reads(carol, root / "data")
    assert not reads(carol, shadowed)
    # nor write them: the store refuses her PUT of those keys, the mount her writes
    assert not store_writes(rgw, carol, rgw_bucket, "data")
    assert not store_writes(rgw, carol, rgw_bucket, "P")
    assert carol.run("sh", "-c", f"echo x > {root}/data").returncode != 0
    assert carol.run("sh", "-c", f"echo x > {shadowed}").returncode != 0
    assert carol.run("rm", "-f", str(root / "data")).returncode != 0
    # what is under P/ she reads and writes both ways
    assert store_reads(rgw, carol, rgw_bucket, "P/x.txt")
    assert store_writes(rgw, carol, rgw_bucket, "P/y.txt")
    assert reads(carol, root / "P" / "x.txt")
    assert carol.run("sh", "-c", f"echo more >> {root}/P/x.txt").returncode == 0


def test_getobject_alone_reads_files_but_lists_no_directory_as_on_the_store(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, carol: UnixUser
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = tree(
        m,
        rgw_bucket,
        alice,
        "mkdir -p shared/sub && echo a > shared/a.txt && echo b > shared/sub/b.txt",
    )
    shared, sub = root / "shared", root / "shared" / "sub"
    put_policy(rgw, rgw_bucket, alice, get(rgw_bucket, carol, "shared/*"))
    wait_for(lambda: reads(carol, shared / "a.txt"), "carol reading", timeout=BOUND + 10)
    assert reads(carol, sub / "b.txt")
    for path, prefix in ((shared, "shared/"), (sub, "shared/sub/")):
        assert not store_lists(rgw, carol, rgw_bucket, prefix), prefix
        assert not lists(carol, path), path
    # (the bucket's root is listed or not by its own mode bits, which no statement changes)
    assert not store_lists(rgw, carol, rgw_bucket, "")

    # listing of shared/ alone (StringEquals): that directory, not the one below
    put_policy(
        rgw,
        rgw_bucket,
        alice,
        get(rgw_bucket, carol, "shared/*"),
        listing(rgw_bucket, carol, "StringEquals", "shared/"),
    )
    wait_for(lambda: lists(carol, shared), "carol listing shared", timeout=BOUND + 10)
    assert carol.run("ls", str(shared)).stdout.split() == [b"a.txt", b"sub"]
    assert store_lists(rgw, carol, rgw_bucket, "shared/")
    assert not store_lists(rgw, carol, rgw_bucket, "shared/sub/")
    assert not lists(carol, sub)

    # the usual pair (as fedfs's own export writes it): shared/ and every directory below
    put_policy(
        rgw,
        rgw_bucket,
        alice,
        get(rgw_bucket, carol, "shared/*"),
        listing(rgw_bucket, carol, "StringLike", "shared/", "shared/*"),
    )
    wait_for(lambda: lists(carol, sub), "carol listing shared/sub", timeout=BOUND + 10)
    assert store_lists(rgw, carol, rgw_bucket, "shared/sub/")
    assert lists(carol, shared)
    assert not store_lists(rgw, carol, rgw_bucket, "")


def test_reports_show_an_imported_expiry_and_say_when_a_deny_overrides_a_grant(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
) -> None:
    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")], object_acl={})
    root = tree(m, rgw_bucket, alice, "mkdir -p shared/secret && echo s > shared/secret/x.txt")
    r = alice.run(*FEDFS, "share", str(root / "shared"), "--with", f"user:{bob.name}", "--read")
    assert r.returncode == 0, r.stderr
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
    temp = get(rgw_bucket, carol, "shared/*")
    temp["Sid"] = "TempCarol"
    temp["Condition"] = {"DateLessThan": {"aws:CurrentTime": until}}
    deny = {
        "Sid": "DenyBob",
        "Effect": "Deny",
        "Principal": {"AWS": [arn(bob)]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{rgw_bucket}/shared/secret/*"],
    }
    put_policy(rgw, rgw_bucket, alice, temp, deny)
    secret = root / "shared" / "secret" / "x.txt"
    wait_for(lambda: reads(carol, secret), "carol reading", timeout=BOUND + 10)
    assert not reads(bob, secret)

    r = alice.run(*FEDFS, "audit", "expiring", "--within", "7d", "--mount", str(root), "--json")
    assert r.returncode == 0, r.stderr
    rows = [(row["path"], row["principal"], row["granted_by"]) for row in json.loads(r.stdout)]
    assert (f"/{rgw_bucket}/shared", f"user:{carol.name}", "bucket-policy:TempCarol") in rows

    r = alice.run(*FEDFS, "grants", str(secret))
    assert r.returncode == 0, r.stderr
    assert (
        f"{bob.name}: denied here by bucket policy statement 'DenyBob' "
        f"(the Deny is on /{rgw_bucket}/shared/secret) - overrides the grants above"
    ) in r.stdout.decode(), r.stdout
    # the grant's own row shows it gives nothing here, and a new grant there is warned
    r = alice.run(*FEDFS, "grants", str(secret), "--json")
    assert r.returncode == 0, r.stderr
    mine = [g for g in json.loads(r.stdout) if g["principal"] == f"user:{bob.name}"]
    assert mine and all(g["effective"] == "---" for g in mine if g["level"] != "none"), mine
    r = alice.run(
        *FEDFS, "share", str(root / "shared" / "secret"), "--with", f"user:{bob.name}", "--read"
    )
    assert r.returncode == 0, r.stderr
    assert "denied at" in r.stderr.decode() and "bucket-policy:DenyBob" in r.stderr.decode()
    # audit who names the Deny as the reason bob gets nothing there, where everyone
    # else may read (bob is listed only where his fallback, "other", would show access)
    r = alice.run("chmod", "o+rx", str(secret.parent.parent), str(secret.parent))
    assert r.returncode == 0 and alice.run("chmod", "o+r", str(secret)).returncode == 0
    r = alice.run(*FEDFS, "audit", "who", str(secret), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    bobs = [row for row in rows if row["principal"] == f"user:{bob.name}"]
    assert bobs and bobs[0]["access"] == "---", rows
    assert "denied by the bucket's own policy (bucket-policy:DenyBob" in bobs[0]["via"], bobs
