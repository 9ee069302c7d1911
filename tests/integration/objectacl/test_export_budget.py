"""The bucket policy never outgrows `[object_acl] max_policy_bytes`, on a real Ceph RGW.

A sharer who fills the budget is told which of her grants are not exported (they work
through the mount, not for the grantee's own keys); another sharer's grant still gets
in; an unshare always reaches the store; the owner's statements and every Deny stay;
and an unshare made while the export fails says that the store still allows it.
The test config sets a small budget so that a few grants fill it, not hundreds.
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.objectacl.conftest import PRINCIPAL, SERVICE, Rgw
from tests.integration.objectacl.test_export import (
    becomes,
    fedfs,
    fedfs_statements,
    outcome,
    statements,
)
from tests.support import FEDFS, UnixUser, wait_for

BUDGET = 10_000  # bytes: about ten grants on the long paths below
SHARED = 16  # carol's grants, more than fit


def dirs(n: int) -> list[str]:
    return [f"lab/p-{i:02d}-" + "x" * 60 for i in range(n)]


def share(user: UnixUser, *args: Any) -> tuple[str, str]:
    r = user.run(*FEDFS, "share", *map(str, args))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode(), r.stderr.decode()


def owners_deny(bucket: str, who: UnixUser) -> dict[str, Any]:
    return {
        "Sid": "AliceKeepsSecret",
        "Effect": "Deny",
        "Principal": {"AWS": [PRINCIPAL.format(user=who.name)]},
        "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/secret/*"],
    }


def test_a_full_policy_leaves_out_the_biggest_sharers_newest_grants_and_says_so(
    rgw: Rgw,
    rgw_bucket: str,
    make_rgw_mount: Any,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
) -> None:
    b = rgw_bucket
    alice_s3, bob_s3 = rgw.client(alice.name), rgw.client(bob.name)
    for d in [*dirs(SHARED), "own"]:
        alice_s3.put_object(Bucket=b, Key=f"{d}/f.txt", Body=d.encode())
    deny = owners_deny(b, carol)
    alice_s3.put_bucket_policy(
        Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={"max_policy_bytes": BUDGET})
    root = m.path(b)
    # an owner's limit under carol's first grant: a Deny fedfs must never drop
    private = root / dirs(1)[0] / "private.txt"
    assert alice.run("sh", "-c", f"echo mine > {private}").returncode == 0
    assert alice.run("chmod", "600", private).returncode == 0
    fedfs(alice, "sync", root)
    fedfs(alice, "share", root / "lab", "--with", f"user:{carol.name}", "--manage")

    answers = [share(carol, root / d, "--with", f"user:{bob.name}", "--read") for d in dirs(SHARED)]
    exported = [i for i, (out, _) in enumerate(answers) if "exported to the bucket policy" in out]
    refused = [i for i, (_, err) in enumerate(answers) if "NOT exported" in err]
    # the first ones fit, every later one is reported, none of them silently
    assert exported and refused and exported + refused == list(range(SHARED)), answers
    assert max(exported) < min(refused)
    first_out = answers[refused[0]][1]
    assert (
        "is full" in first_out and "max_policy_bytes" in first_out and "fedfs unshare" in first_out
    )
    print(f"{len(exported)} of {SHARED} grants exported under {BUDGET} bytes")

    # exported: bob's own keys read there; left out: through the mount only
    inside, outside = dirs(SHARED)[exported[-1]], dirs(SHARED)[refused[-1]]
    assert outcome(bob_s3.get_object, Bucket=b, Key=f"{inside}/f.txt") == "ok"
    assert outcome(bob_s3.get_object, Bucket=b, Key=f"{outside}/f.txt") == "AccessDenied"
    assert bob.run("cat", root / outside / "f.txt").returncode == 0
    r = carol.run(*FEDFS, "grants", root / outside)
    assert r.returncode == 0 and "no: the bucket policy is full" in r.stdout.decode()
    r = carol.run(*FEDFS, "grants", root / inside)
    assert r.returncode == 0 and "exported" in r.stdout.decode()
    assert "no: " not in r.stdout.decode() and "yes" in r.stdout.decode()
    status = carol.run(*FEDFS, "status", root).stdout.decode()
    assert f"FULL: {len(refused)} grant(s)" in status and "not exported: " in status

    # a team grant that reaches someone only once a member is added: team add says so
    fedfs(carol, "team", "create", "oa-full", "--mount", root)
    _, err = share(carol, root / inside, "--with", "team:oa-full", "--read")
    assert "NOT exported" in err, err
    r = carol.run(*FEDFS, "team", "add", "oa-full", bob.name, "--mount", root)
    assert r.returncode == 0, r.stderr
    assert "team oa-full's grants on" in r.stderr.decode() and "NOT exported" in r.stderr.decode()

    # the policy stays under the budget, the owner's statement and the Denies with it
    policy = rgw.client(SERVICE).get_bucket_policy(Bucket=b)["Policy"]
    assert len(policy.encode()) <= BUDGET * 1.1  # as RGW gives it back (its own spacing)
    assert deny in statements(rgw, b)
    assert any(s["Effect"] == "Deny" for s in fedfs_statements(rgw, b))
    assert outcome(bob_s3.get_object, Bucket=b, Key=private.relative_to(root).as_posix()) == (
        "AccessDenied"
    )

    # another sharer's grant still gets in: carol's grants make way for it
    out, err = share(alice, root / "own", "--with", f"user:{bob.name}", "--read")
    assert "exported to the bucket policy" in out and "NOT" not in err, (out, err)
    becomes("ok", bob_s3.get_object, Bucket=b, Key="own/f.txt")

    # an unshare of an exported grant reaches bob's own keys, and says so
    first = dirs(SHARED)[0]
    r = carol.run(*FEDFS, "unshare", root / first, "--with", f"user:{bob.name}")
    assert r.returncode == 0, r.stderr
    assert "removed from the bucket policy" in r.stdout.decode(), r.stdout
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key=f"{first}/f.txt")
    assert deny in statements(rgw, b)


def test_an_unshare_while_the_export_fails_says_the_store_still_allows_it(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    """The store refusing the daemon's user (so the mount cannot resolve the path either)
    delays nothing a revocation does in the mount, and it still reaches the store later."""
    b = rgw_bucket
    bob_s3 = rgw.client(bob.name)
    rgw.client(alice.name).put_object(Bucket=b, Key="d3/rep/a.txt", Body=b"a")
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    rep = m.path(b, "d3", "rep")
    fedfs(alice, "share", rep, "--with", f"user:{bob.name}", "--read")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="d3/rep/a.txt")
    assert bob.run("cat", rep / "a.txt").returncode == 0

    # the daemon's user loses its rights on alice's bucket
    rgw.cluster.set_system(SERVICE, False)
    try:
        wait_for(
            lambda: outcome(rgw.client(SERVICE).get_bucket_policy, Bucket=b) == "AccessDenied",
            "the service user refused",
        )
        wait_for(lambda: alice.run("stat", rep).returncode != 0, "the mount unable to stat it")
        r = alice.run(*FEDFS, "unshare", rep, "--with", f"user:{bob.name}")
        assert r.returncode == 0, r.stderr
        out, err = r.stdout.decode(), r.stderr.decode()
        assert f"removed read for user:{bob.name}" in out, out
        assert "could not be looked up" in err, err
        # the failing pass is reported, or (a slow store) the wait ends before it is
        told = ("NOT yet from the bucket policy" in err and "store still gives" in err) or (
            "not yet confirmed" in err and "store may still give" in err
        )
        assert told, err
        assert outcome(bob_s3.get_object, Bucket=b, Key="d3/rep/a.txt") == "ok"  # as it says
        assert bob.run("cat", rep / "a.txt").returncode != 0  # the mount refuses
    finally:
        rgw.cluster.set_system(SERVICE, True)
    # once the export works again, the store refuses too
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="d3/rep/a.txt")
    assert bob.run("cat", rep / "a.txt").returncode != 0


def test_an_unshare_of_a_path_deleted_through_s3_removes_its_grant(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    b = rgw_bucket
    alice_s3, bob_s3 = rgw.client(alice.name), rgw.client(bob.name)
    alice_s3.put_object(Bucket=b, Key="d3/gone/a.txt", Body=b"a")
    m = make_rgw_mount([(b, f"user:{alice.name}")], object_acl={})
    gone = m.path(b, "d3", "gone")
    fedfs(alice, "share", gone, "--with", f"user:{bob.name}", "--read")
    becomes("ok", bob_s3.get_object, Bucket=b, Key="d3/gone/a.txt")

    alice_s3.delete_object(Bucket=b, Key="d3/gone/a.txt")
    alice_s3.delete_object(Bucket=b, Key="d3/gone/")
    wait_for(lambda: alice.run("stat", gone).returncode != 0, "the mount seeing it gone")
    out = fedfs(alice, "unshare", gone, "--with", f"user:{bob.name}")
    assert f"removed read for user:{bob.name}" in out, out
    again = alice.run(*FEDFS, "unshare", gone, "--with", f"user:{bob.name}")
    assert again.returncode != 0 and b"there is no grant" in again.stderr, again
    # a new object at the same path is not bob's to read
    alice_s3.put_object(Bucket=b, Key="d3/gone/a.txt", Body=b"new")
    becomes("AccessDenied", bob_s3.get_object, Bucket=b, Key="d3/gone/a.txt")
