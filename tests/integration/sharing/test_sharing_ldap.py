"""Sharing with identities from a real slapd: users and groups that exist only in LDAP.

The LDIF seed (tests/backends/seed.ldif) holds alice 2001, bob 2002, carol 2003
(primary group scientists 2000) and cosmo-ldap 2100 (bob). None of them has a
local account: processes run with those raw uids, as on a node whose sssd
knows them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.slapd import SEED_LDIF, SLAPD, Slapd
from tests.support import FEDFS, Mount

pytestmark = pytest.mark.skipif(not Path(SLAPD).exists(), reason=f"{SLAPD} is not installed")


def run_as(uid: int, gids: list[int], *cmd: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(c) for c in cmd],
        user=uid,
        group=gids[0],
        extra_groups=gids[1:],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
        cwd="/",
    )


ALICE, BOB, CAROL = (2001, [2000]), (2002, [2000, 2100]), (2003, [2000])


def fedfs(who: tuple[int, list[int]], *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return run_as(who[0], who[1], sys.executable, "-m", "fedfs.cli", *args)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    server.seed(SEED_LDIF.read_text())
    yield server
    server.stop()


def test_grants_to_ldap_users_and_groups_and_an_ldap_outage(
    make_mount: Any, bucket: str, slapd: Slapd
) -> None:
    identity = (
        '[identity]\nsource = "ldap"\n'
        f'url = "{slapd.url}"\nbase_dn = "{slapd.base_dn}"\nbind_dn = "{slapd.bind_dn}"\n'
        f'password = "{slapd.password}"\ntimeout = 2\nttl = 1\n'
    )
    m: Mount = make_mount([(bucket, "user:alice")], top=identity)
    root = m.path(bucket)
    assert (root.stat().st_uid, root.stat().st_gid) == (2001, 2000)  # from LDAP
    assert (
        run_as(*ALICE, "sh", "-c", f"umask 077; mkdir {root}/d; echo data > {root}/d/f").returncode
        == 0
    )
    assert run_as(*BOB, "cat", root / "d" / "f").returncode != 0

    r = fedfs(ALICE, "share", root / "d", "--with", "group:cosmo-ldap", "--read")
    assert r.returncode == 0, r.stderr
    assert run_as(*BOB, "cat", root / "d" / "f").stdout == b"data\n"  # bob is in cosmo-ldap
    assert run_as(*CAROL, "cat", root / "d" / "f").returncode != 0
    acl = run_as(*ALICE, "getfacl", "-cn", root / "d" / "f").stdout.decode()
    assert "group:2100:r--" in acl

    r = fedfs(ALICE, "share", root / "d", "--with", "user:carol", "--read")
    assert r.returncode == 0, r.stderr
    assert run_as(*CAROL, "cat", root / "d" / "f").stdout == b"data\n"

    slapd.stop()  # LDAP down: enforcement keeps the last known answers
    try:
        assert run_as(*BOB, "cat", root / "d" / "f").stdout == b"data\n"
        assert run_as(*CAROL, "cat", root / "d" / "f").stdout == b"data\n"
        r = fedfs(ALICE, "share", root / "d", "--with", "user:dave", "--read")
        assert r.returncode == 1
        err = r.stderr.decode()
        assert (
            "there is no user 'dave'" in err and "does not answer" in err and "Traceback" not in err
        )
        status = json.loads(
            subprocess.run(
                [*FEDFS, "status", str(m.mountpoint), "--json"], capture_output=True, text=True
            ).stdout
        )
        assert status["identity"]["ok"] is False and status["identity"]["source"].startswith("ldap")
        # unsharing still works and never widens access
        r = fedfs(ALICE, "unshare", root / "d", "--with", "user:carol")
        assert r.returncode == 0, r.stderr
        assert run_as(*CAROL, "cat", root / "d" / "f").returncode != 0
    finally:
        slapd.start()
    r = fedfs(ALICE, "share", root / "d", "--with", "user:carol", "--read")
    assert r.returncode == 0, r.stderr
    assert run_as(*CAROL, "cat", root / "d" / "f").stdout == b"data\n"
