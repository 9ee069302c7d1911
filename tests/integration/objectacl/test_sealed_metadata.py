"""Ownership metadata counts only when fedfs wrote it (docs/OBJECT_ACL.md, "Who owns an
object"): on a real Ceph RGW, a grantee's own PUT with `x-amz-meta-uid`/`-mode` does not
make him the owner in the mount, objects without metadata are as private as the store
keeps them, and what fedfs writes keeps its owners and modes through renames, chmod,
xattrs and a remount.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.objectacl.conftest import SERVICE, Rgw
from tests.integration.objectacl.test_export import becomes, fedfs
from tests.support import FEDFS, REPO, UnixUser, wait_for

SEAL = "fedfs-sig"


def reads(who: UnixUser, path: Path) -> bool:
    return who.run("cat", str(path)).returncode == 0


def sealed(rgw: Rgw, bucket: str, key: str) -> bool:
    return SEAL in rgw.client(SERVICE).head_object(Bucket=bucket, Key=key)["Metadata"]


def test_a_grantees_own_put_with_ownership_metadata_makes_him_no_owner(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
) -> None:
    b = rgw_bucket
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    runs = m.path(b, "runs")
    r = alice.run("sh", "-c", f"umask 022 && mkdir {runs} && echo a > {runs}/a.txt")
    assert r.returncode == 0, r.stderr
    fedfs(alice, "share", runs, "--with", f"user:{bob.name}", "--write")
    bob_s3 = rgw.client(bob.name)
    forged = {"uid": str(bob.uid), "gid": str(bob.gid)}
    becomes(
        "ok",
        bob_s3.put_object,
        Bucket=b,
        Key="runs/forged.txt",
        Body=b"bob's\n",
        Metadata={**forged, "mode": str(0o100666)},
        ACL="bucket-owner-full-control",
    )
    bob_s3.put_object(
        Bucket=b,
        Key="runs/claimed/",
        Body=b"",
        Metadata={**forged, "mode": str(0o40777)},
        ACL="bucket-owner-full-control",
    )
    bob_s3.put_object(Bucket=b, Key="runs/claimed/x.txt", Body=b"x", Metadata=forged)

    # The mount sees new objects once its listing of runs/ expires ([fs] dir_timeout).
    wait_for(lambda: (runs / "forged.txt").exists() and (runs / "claimed").exists(), "bob's")
    f = os.stat(runs / "forged.txt")
    assert (f.st_uid, f.st_gid) == (alice.uid, alice.gid)
    assert f.st_mode & 0o007 == 0, oct(f.st_mode)
    assert not reads(carol, runs / "forged.txt")
    assert reads(bob, runs / "forged.txt")  # his grant reaches it
    d = os.stat(runs / "claimed")
    assert (d.st_uid, d.st_mode & 0o007) == (alice.uid, 0), oct(d.st_mode)
    assert carol.run("ls", str(runs / "claimed")).returncode != 0
    assert bob.run("chmod", "777", str(runs / "claimed")).returncode != 0  # not his
    # What fedfs itself wrote there still counts: the directory and alice's file.
    assert reads(carol, runs / "a.txt")
    assert os.stat(runs).st_uid == alice.uid
    wait_for(lambda: "ignoring its ownership metadata" in m.log_text(), "the log line")
    # status and doctor say so, naming keys only to those who may see the bucket's names
    r = subprocess.run(
        [*FEDFS, "status", str(m.mountpoint)], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("unsealed"))
    assert b in line and "runs/forged.txt" in line and "fsck" in line and "--sign" in line
    r = carol.run(*FEDFS, "status", str(m.mountpoint))
    line = next(ln for ln in r.stdout.decode().splitlines() if ln.startswith("unsealed"))
    assert "forged" not in line, line
    r = subprocess.run(
        [*FEDFS, "doctor", "--config", str(m.config), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    checks = [f for f in json.loads(r.stdout)["findings"] if f["check"] == f"sealed metadata {b}"]
    assert checks and checks[0]["status"] == "WARN" and "--sign" in checks[0]["fix"], checks


def test_what_fedfs_writes_keeps_its_owner_and_modes_through_renames_chmod_and_a_remount(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    carol: UnixUser,
) -> None:
    b = rgw_bucket
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    root = m.path(b)
    script = (
        f"cd {root} && umask 022 && mkdir -p proj/sub && echo data > proj/sub/f && "
        "chmod 750 proj/sub && chmod 640 proj/sub/f && ln -s sub/f proj/link && "
        "setfattr -n user.note -v kept proj/sub/f && mkfifo proj/pipe && "
        "mv proj/sub/f proj/sub/g && mv proj moved"
    )
    r = alice.run("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    r = alice.run(*FEDFS, "sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    for key in ("moved/", "moved/sub/", "moved/sub/g", "moved/link", "moved/pipe"):
        assert sealed(rgw, b, key), key

    assert m.stop() == 0
    m.start()
    moved = m.path(b, "moved")
    g = os.stat(moved / "sub" / "g")
    assert (g.st_uid, stat.S_IMODE(g.st_mode)) == (alice.uid, 0o640)
    sub = os.stat(moved / "sub")
    assert (sub.st_uid, stat.S_IMODE(sub.st_mode)) == (alice.uid, 0o750)
    assert stat.S_IMODE(os.stat(moved).st_mode) == 0o755
    assert os.readlink(moved / "link") == "sub/f"
    assert stat.S_ISFIFO(os.lstat(moved / "pipe").st_mode)
    note = alice.run("getfattr", "--only-values", "-n", "user.note", str(moved / "sub" / "g"))
    assert note.stdout == b"kept"
    assert not reads(carol, moved / "sub" / "g")
    assert "ignoring its ownership metadata" not in m.log_text()


def test_an_object_put_without_metadata_is_private_until_a_grant_or_the_bucket_policy_opens_it(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
) -> None:
    b = rgw_bucket
    alice_s3 = rgw.client(alice.name)
    for key in ("data/a.txt", "open/b.txt"):
        alice_s3.put_object(Bucket=b, Key=key, Body=key.encode())
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    a, o = m.path(b, "data", "a.txt"), m.path(b, "open", "b.txt")
    st = os.stat(a)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o600)
    assert stat.S_IMODE(os.stat(m.path(b, "data")).st_mode) == 0o700
    assert reads(alice, a)
    assert not reads(carol, a) and not reads(bob, a)

    fedfs(alice, "share", m.path(b, "data"), "--with", f"user:{bob.name}", "--read")
    wait_for(lambda: reads(bob, a), "bob reading through his grant")
    assert not reads(carol, a)

    statement = {
        "Sid": "CarolReadsOpen",
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam:::user/{carol.name}"]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{b}/open/*"],
    }
    document = {"Version": "2012-10-17", "Statement": [statement]}
    alice_s3.put_bucket_policy(Bucket=b, Policy=json.dumps(document))
    # alice's own statement sits beside fedfs's exported ones; the next export keeps it.
    wait_for(lambda: reads(carol, o), "carol reading open/b.txt (imported)", timeout=30)
    assert not reads(carol, a)


def test_fsck_sign_lists_then_adopts_metadata_written_before_the_seal(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, carol: UnixUser
) -> None:
    b = rgw_bucket
    svc = rgw.client(SERVICE)
    old = {"uid": str(alice.uid), "gid": str(alice.gid), "mode": str(0o100644)}
    svc.put_object(Bucket=b, Key="old/a.txt", Body=b"a", Metadata=old)  # as fedfs once wrote it
    svc.put_object(Bucket=b, Key="else/b.txt", Body=b"b", Metadata=old)
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    a = m.path(b, "old", "a.txt")
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o600

    svc.put_object(Bucket=b, Key="old/evil", Body=b"e", Metadata=old)
    plan = m.config.parent / "sign-plan.json"
    fsck = [*FEDFS, "fsck", "--config", str(m.config), "--sign", f"{b}/old/"]

    refused = subprocess.run([*fsck, "--yes"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--plan" in refused.stderr, refused
    assert not sealed(rgw, b, "old/a.txt")

    # carol, whom alice lets write under old/ with her own keys, names herself the owner
    may_write = {
        "Sid": "CarolWrites",
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam:::user/{carol.name}"]},
        "Action": ["s3:PutObject"],
        "Resource": [f"arn:aws:s3:::{b}/old/*"],
    }
    policy = {"Version": "2012-10-17", "Statement": [may_write]}
    rgw.client(alice.name).put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
    mine = {"uid": str(carol.uid), "gid": str(carol.gid), "mode": str(0o100666)}
    becomes(
        "ok",
        rgw.client(carol.name).put_object,
        Bucket=b,
        Key="old/carols",
        Body=b"c",
        Metadata=mine,
        ACL="bucket-owner-full-control",
    )

    listed = subprocess.run([*fsck, "--plan", str(plan)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "would seal old/a.txt: mode=0o100644" in listed.stdout, listed.stdout
    assert "else/b.txt" not in listed.stdout and "3 of 3 objects" in listed.stdout
    assert f"not planned old/carols: mode=0o100666 uid={carol.uid}" in listed.stdout
    assert f"written by {carol.name}" in listed.stdout, listed.stdout
    assert "old/carols" not in plan.read_text()
    assert not sealed(rgw, b, "old/a.txt")

    # Between the review and --yes, someone who may write there adds a setuid root
    # file and gives the reviewed one (same body, same ETag) an owner and mode of his own.
    root_suid = {"uid": "0", "gid": "0", "mode": str(0o106777)}
    svc.put_object(Bucket=b, Key="old/late", Body=b"l", Metadata=root_suid)
    svc.put_object(Bucket=b, Key="old/evil", Body=b"e", Metadata={**old, "mode": str(0o100666)})

    done = subprocess.run([*fsck, "--plan", str(plan), "--yes"], capture_output=True, text=True)
    assert done.returncode == 1 and "sealed 1 of 2 reviewed" in done.stdout, done
    assert "skipped old/evil: changed since the review" in done.stdout, done.stdout
    assert "old/late" not in done.stdout and "NOT sealed" in done.stdout
    assert sealed(rgw, b, "old/a.txt") and not sealed(rgw, b, "else/b.txt")
    assert not sealed(rgw, b, "old/late") and not sealed(rgw, b, "old/evil")
    wait_for(lambda: stat.S_IMODE(os.stat(a).st_mode) == 0o644, "the adopted mode")
    assert os.stat(a).st_uid == alice.uid
    late = os.stat(m.path(b, "old", "late"))
    assert late.st_uid != 0 and not late.st_mode & 0o7000, "unreviewed metadata was adopted"
    assert not sealed(rgw, b, "old/carols")


def test_a_partial_rewrite_stays_the_bucket_owners_to_read_and_keeps_its_owner(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser
) -> None:
    """A partial rewrite (multipart with copied parts) carries the canned ACL and the
    seal like every other write: the bucket's owner reads it with her own keys, and the
    file keeps its owner and mode through a remount."""
    b = rgw_bucket
    part = 5 * 1024 * 1024
    store = 'multipart_threshold = "8MiB"\nmultipart_chunksize = "5MiB"'
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={}, store_extra=store)
    path = m.path(b, "big.dat")
    data = bytearray(os.urandom(3 * part + 1234))
    r = alice.run("sh", "-c", f"umask 077 && cat > {path}", input=bytes(data))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _synced(m), "the first upload")
    r = alice.run("dd", f"of={path}", "bs=1", f"seek={part + 7}", "conv=notrunc", input=b"edit")
    assert r.returncode == 0, r.stderr
    data[part + 7 : part + 11] = b"edit"
    wait_for(lambda: _synced(m), "the partial rewrite")
    assert "event=upload-partial" in m.log_text(), "the change went up whole, not in parts"
    got = rgw.client(alice.name).get_object(Bucket=b, Key="big.dat")["Body"].read()
    assert got == bytes(data), "the bucket owner reads what was written"
    assert sealed(rgw, b, "big.dat")
    st = path.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o600)


def _synced(m: Any) -> bool:
    r = subprocess.run([*FEDFS, "sync", str(m.mountpoint)], capture_output=True, timeout=300)
    return r.returncode == 0
