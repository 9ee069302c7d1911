"""Grants live and die with the object at their path; the owner's limits are audited.

Real mounts, real uids: alice removes, renames and replaces shared files and
directories through the mount (and once behind its back, through S3), and bob
and carol try to read what is there afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sharing.test_sharing import can_read, can_write, fedfs, ok
from tests.support import FEDFS, Mount, UnixUser, wait_for

ROOT = UnixUser("root", 0, 0)


def audit(user: UnixUser, *args: str | Path) -> Any:
    return json.loads(ok(fedfs(user, "audit", *args, "--json")))


def grants(user: UnixUser, path: Path) -> list[dict[str, Any]]:
    return list(json.loads(ok(fedfs(user, "grants", path, "--json"))))


def ended(root: Path, path: str) -> list[dict[str, Any]]:
    """The audit records that ended a grant on path because its object went."""
    return [
        r
        for r in audit(ROOT, "log", "--mount", root)
        if r["action"] == "unshare" and r["path"] == path and r["detail"].get("reason")
    ]


@pytest.fixture
def proj(make_mount: Any, bucket: str, alice: UnixUser) -> tuple[Mount, Path]:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(alice.run("sh", "-c", f"umask 077; mkdir -p {root}/proj/private/sub"))
    return m, root


def test_a_removed_file_takes_its_grant_with_it(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    _m, root = proj
    sub = root / "proj" / "private" / "sub"
    ok(alice.run("sh", "-c", f"umask 077; echo results > {sub}/results.csv"))
    ok(fedfs(alice, "share", sub / "results.csv", "--with", f"user:{bob.name}", "--read"))
    assert can_read(bob, sub / "results.csv")
    ok(alice.run("rm", sub / "results.csv"))
    ok(alice.run("sh", "-c", f"umask 077; echo 'new secret results' > {sub}/results.csv"))
    assert not can_read(bob, sub / "results.csv")
    assert grants(alice, sub / "results.csv") == []
    path = f"/{root.name}/proj/private/sub/results.csv"
    [record] = ended(root, path)
    assert record["principal"] == f"user:{bob.name}" and record["actor"] == alice.name
    assert record["detail"]["reason"] == f"{path} was removed by {alice.name}"
    text = ok(fedfs(ROOT, "audit", "log", "--mount", root, "--csv"))
    assert f"{path} was removed by {alice.name}" in text


def test_renaming_away_ends_the_grant_and_the_old_name_stays_private(
    proj: tuple[Mount, Path], alice: UnixUser, carol: UnixUser
) -> None:
    _m, root = proj
    d = root / "proj"
    ok(alice.run("sh", "-c", f"umask 077; echo draft > {d}/draft.txt"))
    ok(fedfs(alice, "share", d / "draft.txt", "--with", f"user:{carol.name}", "--read"))
    assert can_read(carol, d / "draft.txt")
    ok(alice.run("mv", d / "draft.txt", d / "draft2.txt"))
    assert not can_read(carol, d / "draft2.txt")
    ok(alice.run("sh", "-c", f"umask 077; echo 'a new draft' > {d}/draft.txt"))
    assert not can_read(carol, d / "draft.txt")
    assert grants(alice, d / "draft.txt") == []
    path = f"/{root.name}/proj/draft.txt"
    [record] = ended(root, path)
    assert record["detail"]["reason"] == f"{path} was renamed by {alice.name}"


def test_renaming_onto_a_shared_name_keeps_its_grants(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    """An atomic save (write a temporary file, rename it over the old one)."""
    _m, root = proj
    d = root / "proj"
    ok(alice.run("sh", "-c", f"umask 077; echo v1 > {d}/results.csv"))
    ok(fedfs(alice, "share", d / "results.csv", "--with", f"user:{bob.name}", "--read"))
    ok(alice.run("sh", "-c", f"umask 077; echo v2 > {d}/.results.tmp"))
    ok(alice.run("mv", d / ".results.tmp", d / "results.csv"))
    assert bob.run("cat", d / "results.csv").stdout == b"v2\n"
    assert [g["principal"] for g in grants(alice, d / "results.csv")] == [f"user:{bob.name}"]
    assert ended(root, f"/{root.name}/proj/results.csv") == []


def test_removing_or_moving_a_shared_directory_ends_the_grants_at_and_below_it(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    _m, root = proj
    d = root / "proj"
    ok(alice.run("sh", "-c", f"umask 077; mkdir -p {d}/a/b; echo x > {d}/a/b/x.txt"))
    ok(fedfs(alice, "share", d / "a", "--with", f"user:{bob.name}", "--read"))
    ok(fedfs(alice, "share", d / "a" / "b", "--with", f"user:{carol.name}", "--write"))
    assert can_read(bob, d / "a" / "b" / "x.txt") and can_read(carol, d / "a" / "b" / "x.txt")
    ok(alice.run("mv", d / "a", d / "moved"))
    assert not can_read(bob, d / "moved" / "b" / "x.txt")
    assert not can_read(carol, d / "moved" / "b" / "x.txt")
    ok(alice.run("sh", "-c", f"umask 077; mkdir -p {d}/a/b; echo y > {d}/a/b/x.txt"))
    assert not can_read(bob, d / "a" / "b" / "x.txt")
    assert not can_read(carol, d / "a" / "b" / "x.txt")
    for path, who in (("a", bob), ("a/b", carol)):
        [record] = ended(root, f"/{root.name}/proj/{path}")
        assert record["principal"] == f"user:{who.name}"
        assert record["detail"]["reason"] == f"/{root.name}/proj/a was renamed by {alice.name}"
    # rmdir of an empty shared directory
    ok(alice.run("mkdir", "-m", "700", d / "empty"))
    ok(fedfs(alice, "share", d / "empty", "--with", f"user:{bob.name}", "--write"))
    assert bob.run("ls", d / "empty").returncode == 0
    ok(alice.run("rmdir", d / "empty"))
    ok(alice.run("mkdir", "-m", "700", d / "empty"))
    assert bob.run("ls", d / "empty").returncode != 0
    [record] = ended(root, f"/{root.name}/proj/empty")
    assert record["detail"]["reason"] == f"/{root.name}/proj/empty was removed by {alice.name}"


def test_limits_are_audited_and_named_by_what_set_them(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    m, root = proj
    f = root / "proj" / "notes.txt"
    ok(alice.run("sh", "-c", f"umask 022; echo notes > {f}"))
    ok(fedfs(alice, "share", f, "--with", f"user:{bob.name}", "--write"))
    path = f"/{root.name}/proj/notes.txt"

    def limits() -> list[tuple[str | None, str | None, str]]:
        return [
            (r["before"], r["after"], r["actor"])
            for r in audit(ROOT, "log", "--mount", root)
            if r["action"] == "limit" and r["path"] == path
        ]

    ok(alice.run("chmod", "600", f))
    assert not can_read(bob, f)
    assert limits() == [("none", "---", alice.name)]
    note = ok(fedfs(alice, "grants", f))
    assert "(set by chmod)" in note, note
    ok(alice.run("chmod", "g+rw", f))  # moves the limit
    assert can_read(bob, f)
    ok(alice.run("setfacl", "-m", "m::r", f))
    assert can_read(bob, f) and not can_write(bob, f)
    note = ok(fedfs(alice, "grants", f))
    assert "(set by setfacl)" in note and "(set by chmod)" not in note, note
    ok(alice.run("setfacl", "-m", "m::rwx", f))  # lifts it
    assert can_write(bob, f)
    assert limits() == [
        ("none", "---", alice.name),
        ("---", "rw-", alice.name),
        ("rw-", "r--", alice.name),
        ("r--", "none", alice.name),
    ]
    # a chmod to the mode ls -l shows changes no limit and writes no record
    shown = oct(os.stat(f).st_mode & 0o777)[2:]
    ok(alice.run("chmod", shown, f))
    assert len(limits()) == 4
    lines = [x for x in m.log_text().splitlines() if "event=limit" in x and f"path={path}" in x]
    assert len(lines) == 4, lines
    assert f"actor={alice.name} before=none after=--- via=chmod" in lines[0], lines
    assert f"actor={alice.name} before=rw- after=r-- via=setfacl" in lines[2], lines


def test_a_grant_whose_object_was_deleted_through_s3_is_an_orphan(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, s3: Any, bucket: str
) -> None:
    _m, root = proj
    d = root / "proj"
    ok(alice.run("sh", "-c", f"umask 077; echo r > {d}/results.csv; mkdir {d}/kept"))
    ok(alice.run("sh", "-c", f"echo k > {d}/kept/k.txt"))
    ok(fedfs(alice, "share", d / "results.csv", "--with", f"user:{bob.name}", "--read"))
    ok(fedfs(alice, "share", d / "kept", "--with", f"user:{bob.name}", "--read"))
    ok(fedfs(alice, "sync", d))
    s3.delete_object(Bucket=bucket, Key="proj/results.csv")
    # kept/ exists only as a prefix once its marker is gone: still there
    s3.delete_object(Bucket=bucket, Key="proj/kept/")
    rows = audit(ROOT, "orphans", "--mount", root)
    gone = [r for r in rows if r["kind"] == "path"]
    path = f"/{root.name}/proj/results.csv"
    assert [(r["path"], r["principal"]) for r in gone] == [(path, f"user:{bob.name}")], rows
    assert f"fedfs unshare {d / 'results.csv'} --with user:{bob.name}" in gone[0]["problem"]
    # alice manages the bucket: she sees it too, and doctor names it
    assert [r["path"] for r in audit(alice, "orphans", "--mount", root) if r["kind"] == "path"] == [
        path
    ]
    doctor = subprocess.run(
        [*FEDFS, "doctor", "--config", str(_m.config)], capture_output=True, check=False
    )
    out = doctor.stdout.decode()
    assert path in out and "fedfs unshare" in out, out
    ok(fedfs(alice, "unshare", d / "results.csv", "--with", f"user:{bob.name}"))
    assert [r for r in audit(ROOT, "orphans", "--mount", root) if r["kind"] == "path"] == []


def test_messages_name_paths_a_user_can_type(
    proj: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root = proj
    d = root / "proj"
    ok(alice.run("sh", "-c", f"umask 077; echo x > {d}/f.txt"))
    ok(fedfs(alice, "share", d, "--with", f"user:{bob.name}", "--read"))
    # bob's entry comes from the grant on proj: removing it on the file is refused
    r = alice.run("setfacl", "-x", f"u:{bob.name}", d / "f.txt")
    assert r.returncode != 0
    line = wait_for(
        lambda: next(
            (x for x in m.log_text().splitlines() if "refused" in x and "setfacl" in x), None
        ),
        "the refusal in the mount's log",
    )
    assert f"`fedfs unshare {d} --with user:{bob.name}`" in line, line
    # status outside a mount says how to name one
    r = subprocess.run(
        [*FEDFS, "status"], cwd="/", capture_output=True, check=False, env={**os.environ}
    )
    err = r.stderr.decode()
    assert r.returncode != 0 and "cd into the mount" in err and "fedfs status" in err, err
