"""`fedfs audit` on a policy built with real commands; reports checked against the kernel."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sharing.test_sharing import can_read, fedfs, ok, refused
from tests.support import Mount, UnixUser, ensure_user

ROOT = UnixUser("root", 0, 0)


def audit(user: UnixUser, *args: str | Path) -> Any:
    return json.loads(ok(fedfs(user, "audit", *args, "--json")))


@pytest.fixture
def policy(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> tuple[Mount, Path]:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(
        alice.run(
            "sh",
            "-c",
            f"umask 077; mkdir -p {root}/data/sub {root}/other; "
            f"echo a > {root}/data/file; echo b > {root}/data/sub/x; echo c > {root}/other/y",
        )
    )
    ok(fedfs(alice, "team", "create", "cosmo", "--mount", root))
    ok(fedfs(alice, "team", "add", "cosmo", bob.name, "--mount", root))
    ok(fedfs(alice, "share", root / "data", "--with", "team:cosmo", "--read"))
    ok(
        fedfs(
            alice,
            "share",
            root / "data" / "sub",
            "--with",
            f"user:{carol.name}",
            "--write",
            "--expires",
            "1h",
        )
    )
    ok(fedfs(alice, "share", root / "other", "--with", f"user:{bob.name}", "--manage"))
    return m, root


def test_who_and_user_reports_agree_with_the_kernel(
    policy: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root = policy
    users = {alice.name: alice, bob.name: bob, carol.name: carol}
    files = [root / "data" / "file", root / "data" / "sub" / "x", root / "other" / "y"]
    for f in files:
        by = {r["principal"]: r for r in audit(ROOT, "who", f)}
        for name, user in users.items():
            row = by.get(f"user:{name}") or by.get(f"group:{name}") or by.get("everyone else")
            reads = row is not None and row["access"].startswith("r")
            assert reads == can_read(user, f), f"{f}: report {row} vs kernel for {name}"
    rows = audit(ROOT, "who", root / "data" / "file")
    bob_row = next(r for r in rows if r["principal"] == f"user:{bob.name}")
    assert bob_row["access"] == "r--" and "member of team:cosmo" in bob_row["via"]
    # what each user can access, against the kernel
    for name, user in users.items():
        rows = audit(ROOT, "user", name, "--mount", root)
        readable = {r["path"] for r in rows if r["access"].startswith("r")}
        for f in files:
            fpath = "/" + str(f.relative_to(m.mountpoint))
            assert (fpath in readable) == can_read(user, f), f"{name} on {fpath}: report {rows}"


def test_expiring_orphans_and_log(
    policy: tuple[Mount, Path], alice: UnixUser, carol: UnixUser
) -> None:
    _m, root = policy
    soon = audit(ROOT, "expiring", "--within", "2h", "--mount", root)
    assert [(r["principal"], r["path"]) for r in soon] == [
        (f"user:{carol.name}", f"/{root.name}/data/sub")
    ]
    assert audit(ROOT, "expiring", "--within", "10m", "--mount", root) == []
    # a user who leaves: their grant becomes an orphan
    gone = ensure_user("fedfs-leaver", 2990)
    ok(fedfs(alice, "share", root / "other", "--with", f"user:{gone.name}", "--read"))
    subprocess.run(["userdel", gone.name], check=True)
    orphans = audit(ROOT, "orphans", "--mount", root)
    assert any(
        o["principal"] == f"user:{gone.name}" and "no longer exists" in o["problem"]
        for o in orphans
    )
    # the history, with who did what
    log = audit(ROOT, "log", "--mount", root)
    actions = [(r["action"], r["actor"], r["principal"]) for r in log]
    assert ("team-create", alice.name, "team:cosmo") in actions
    assert ("share", alice.name, "team:cosmo") in actions
    assert ("share", alice.name, f"user:{carol.name}") in actions
    assert any(a == "policy-change" for a, _, _ in actions)
    only = audit(ROOT, "log", "--path", root / "data" / "sub", "--mount", root)
    assert {r["path"] for r in only if r["path"]} <= {
        f"/{root.name}/data",
        f"/{root.name}/data/sub",
    }
    assert audit(ROOT, "log", "--actor", "nobody-at-all", "--mount", root) == []
    text = ok(fedfs(ROOT, "audit", "log", "--mount", root))
    assert "share" in text and alice.name in text


def test_who_may_read_the_audit(policy: tuple[Mount, Path], bob: UnixUser, carol: UnixUser) -> None:
    _, root = policy
    refused(fedfs(bob, "audit", "verify", "--mount", root), "may not verify")
    refused(fedfs(carol, "audit", "who", root / "data"), "does not manage")
    # bob manages /other: he may ask about it, and sees only records about it
    assert audit(bob, "who", root / "other")
    paths = {r["path"] for r in audit(bob, "log", "--mount", root)}
    assert paths == {f"/{root.name}/other"}
    refused(fedfs(carol, "audit", "user", bob.name, "--mount", root), "only ask about themselves")
    assert audit(carol, "user", carol.name, "--mount", root)


def test_verify_catches_tampering_and_records_survive_kill_9(
    policy: tuple[Mount, Path], alice: UnixUser, carol: UnixUser
) -> None:
    m, root = policy
    assert audit(ROOT, "verify", "--mount", root)["ok"] is True
    # an acknowledged change survives a crash of the daemon
    ok(fedfs(alice, "share", root / "other", "--with", f"user:{carol.name}", "--read"))
    m.kill()
    m.start()
    log = audit(ROOT, "log", "--mount", root)
    assert (f"user:{carol.name}", f"/{root.name}/other") in {
        (r["principal"], r["path"]) for r in log
    }
    report = audit(ROOT, "verify", "--mount", root)
    assert report["ok"] is True, report
    # one flipped byte in the middle of the chain is found at exactly that record
    logfile = Path(report["log"])
    lines = logfile.read_bytes().splitlines(keepends=True)
    victim = len(lines) // 2
    original = logfile.read_bytes()
    bad = bytearray(lines[victim])
    i = bad.index(b'"actor":"') + 9
    bad[i] ^= 0x01
    logfile.write_bytes(b"".join(lines[:victim]) + bytes(bad) + b"".join(lines[victim + 1 :]))
    r = fedfs(ROOT, "audit", "verify", "--mount", root)
    assert r.returncode == 1 and f"record {victim}" in r.stdout.decode(), r.stdout
    # a deleted record is a gap, named
    logfile.write_bytes(b"".join(lines[:victim] + lines[victim + 1 :]))
    r = fedfs(ROOT, "audit", "verify", "--mount", root)
    assert r.returncode == 1 and "gap" in r.stdout.decode(), r.stdout
    logfile.write_bytes(original)
    assert audit(ROOT, "verify", "--mount", root)["ok"] is True
    os.sync()
