"""`fedfs fsck` on a real mount's files: damage them, see start refuse, repair, start again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, Mount, UnixUser
from tests.unit.ops.test_fsck import corrupt


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def settle(db: Path) -> None:
    """What the next opener of a killed daemon's database does: fold its WAL into the file."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def fedfs_as(user: UnixUser, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return user.run(*FEDFS, *args)


def test_fsck_refuses_while_the_mount_runs(mount: Mount) -> None:
    r = cli("fsck", "--config", mount.config)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"is mounted on {mount.mountpoint}" in r.stderr and "fedfs umount" in r.stderr
    assert mount.path().is_dir()  # and nothing happened to it


@pytest.mark.parametrize("how", ["middle", "half", "garbage"])
def test_damaged_journal_and_policy_database_repaired_by_fsck(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, bob: UnixUser, carol: UnixUser, how: str
) -> None:
    # uploads wait a minute, so the files below are in the journal when the daemon dies
    m: Mount = make_mount([(bucket, "user:fedfs-alice")], extra="flush_delay = 60")
    root = m.path(bucket)
    r = alice.run("sh", "-c", f"umask 077; mkdir {root}/shared; echo secret > {root}/shared/f")
    assert r.returncode == 0, r.stderr
    assert cli("sync", m.mountpoint).returncode == 0
    for who in ("user:fedfs-bob", "user:fedfs-carol"):
        r = fedfs_as(alice, "share", root / "shared", "--with", who, "--read")
        assert r.returncode == 0, r.stderr
    r = fedfs_as(alice, "unshare", root / "shared", "--with", "user:fedfs-carol")
    assert r.returncode == 0, r.stderr
    assert bob.run("cat", root / "shared" / "f").stdout == b"secret\n"
    assert carol.run("cat", root / "shared" / "f").returncode != 0
    written = {}
    for i in range(300):
        name = f"pending-{i:03d}-" + "n" * 60
        data = f"{name} {os.urandom(8).hex()}\n".encode() * 20
        (root / name).write_bytes(data)
        written[name] = hashlib.sha256(data).hexdigest()
    m.kill()

    cache = m.config.parent / f"cache-{m.config.stem}"
    state = cache.with_name(cache.name + "-state")
    for db in (cache / "journal.db", state / "policy.db"):
        settle(db)
        corrupt(db, how)
    # the start refuses, in one line that names the damage and fsck
    r = cli("mount", "--foreground", "--config", m.config, m.mountpoint)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr and "fedfs fsck" in r.stderr, r.stderr
    assert not os.path.ismount(m.mountpoint)

    r = cli("fsck", "--config", m.config)
    print(r.stdout)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stdout + r.stderr
    assert "journal.db.damaged-" in r.stdout and "policy.db.damaged-" in r.stdout
    assert "rebuilt" in r.stdout and "other nodes" in r.stdout
    assert cli("fsck", "--config", m.config).returncode == 0  # nothing left to repair

    m.start()  # uploads what the rebuilt journal lists
    assert cli("sync", m.mountpoint).returncode == 0
    # every closed file is either in the object store or in lost+found, intact
    lost_dirs = list((cache / "lost+found").glob("fsck-*"))
    lost = {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for d in lost_dirs
        for p in d.iterdir()
        if p.name != "MANIFEST"
    }
    uploaded = 0
    for name, digest in written.items():
        try:
            body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        except s3.exceptions.NoSuchKey:
            assert digest in lost, f"{name} is neither in the bucket nor in lost+found"
            continue
        assert hashlib.sha256(body).hexdigest() == digest, name
        uploaded += 1
    print(f"{how}: {uploaded} of {len(written)} uploaded, {len(lost)} in lost+found")
    assert uploaded + len(lost) >= len(written)
    if how == "garbage":
        assert uploaded == 0 and len(lost) == len(written)
    else:
        assert uploaded > 0

    # the grants came back from the audit chain: bob reads, carol (unshared) does not
    assert bob.run("cat", root / "shared" / "f").stdout == b"secret\n"
    assert carol.run("cat", root / "shared" / "f").returncode != 0
    r = fedfs_as(alice, "grants", root / "shared", "--json")
    assert b"fedfs-bob" in r.stdout and b"fedfs-carol" not in r.stdout, r
    r = cli("audit", "verify", "--mount", m.mountpoint)
    assert r.returncode == 0, r.stdout + r.stderr
