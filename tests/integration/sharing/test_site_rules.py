"""The site policy (policy/*.toml) holds through every route to a principal.

A team backed by an NSS group is checked as that group too, and its size counts
the group's members; grants made before a stricter policy stop applying when the
policy changes, at start and on reload (SIGHUP), with a log line. Real mounts,
real uids: bob and carol reach files as members of the group fedfs-crowd.
"""

from __future__ import annotations

import grp
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, Mount, UnixUser, wait_for

CROWD = "fedfs-crowd"
CROWD_GID = 2990


@pytest.fixture(scope="session")
def crowd(bob: UnixUser, carol: UnixUser) -> int:
    """An NSS group listing bob and carol (created once, kept between runs)."""
    try:
        grp.getgrnam(CROWD)
    except KeyError:
        subprocess.run(["groupadd", "--gid", str(CROWD_GID), CROWD], check=True)
    subprocess.run(["gpasswd", "--members", f"{bob.name},{carol.name}", CROWD], check=True)
    return grp.getgrnam(CROWD).gr_gid


def run(user: UnixUser, *cmd: str | Path) -> subprocess.CompletedProcess[bytes]:
    """As user, with the crowd group when NSS lists them in it (as a login would)."""
    extra = [CROWD_GID] if user.name in grp.getgrnam(CROWD).gr_mem else []
    return subprocess.run(
        [str(c) for c in cmd],
        user=user.uid,
        group=user.gid,
        extra_groups=extra,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
    )


def fedfs(user: UnixUser, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return run(user, *FEDFS, *args)


def ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr.decode()}"
    return r.stdout.decode()


def refused(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 1, f"expected a refusal from {r.args}: {r.stdout.decode()}"
    err = r.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def root_user() -> UnixUser:
    return UnixUser("root", 0, 0)


def can_read(user: UnixUser, path: Path) -> bool:
    return run(user, "cat", path).returncode == 0


def site_dir(m: Mount) -> Path:
    """The site policy directory the test config names (see tests/support.write_config)."""
    for line in m.config.read_text().splitlines():
        if line.startswith("site_dir = "):
            d = Path(line.split('"')[1])
            d.mkdir(exist_ok=True)
            return d
    raise AssertionError("the test config names no site_dir")


@pytest.fixture
def shared(make_mount: Any, bucket: str, alice: UnixUser, crowd: int) -> tuple[Mount, Path]:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(run(alice, "sh", "-c", f"umask 077; mkdir {root}/data; echo results > {root}/data/f"))
    return m, root


def test_a_team_backed_by_a_group_is_checked_as_that_group(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    m, root = shared
    (site_dir(m) / "50-strict.toml").write_text(
        f'allowed_principals = ["user", "team"]\nforbidden_principals = ["group:{CROWD}"]\n'
        "max_team_size = 2\n"
    )
    m.stop()
    m.start()
    # the direct route is refused, and so is the route through a team backed by the group
    assert "group principals" in refused(
        fedfs(alice, "share", root / "data", "--with", f"group:{CROWD}", "--read")
    )
    err = refused(
        fedfs(root_user(), "team", "create", "crowdteam", "--group", CROWD, "--mount", root)
    )
    assert f"group:{CROWD}" in err and "backed" in err, err
    assert not can_read(bob, root / "data" / "f")
    acl = ok(run(alice, "getfacl", "-cn", root / "data" / "f"))
    assert f"group:{CROWD_GID}" not in acl


def test_team_size_counts_the_members_of_its_group(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root = shared
    (site_dir(m) / "50-small.toml").write_text("max_team_size = 2\n")
    m.stop()
    m.start()
    # the group lists bob and carol; with root as a named member the team has 3 people
    err = refused(
        fedfs(root_user(), "team", "create", "crowdteam", "--group", CROWD, "--mount", root)
    )
    assert "3 members" in err and "limit of 2" in err, err
    # a team within the limit cannot grow past it through members the group already has
    ok(fedfs(alice, "team", "create", "pair", "--mount", root))
    err = refused(fedfs(alice, "team", "add", "pair", bob.name, carol.name, "--mount", root))
    assert "3 members" in err, err


def test_grants_a_stricter_policy_forbids_stop_applying_on_reload_and_at_start(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root = shared
    f = root / "data" / "f"
    ok(fedfs(root_user(), "team", "create", "crowdteam", "--group", CROWD, "--mount", root))
    ok(fedfs(alice, "share", root / "data", "--with", "team:crowdteam", "--read"))
    assert can_read(bob, f)  # through the group that backs the team
    # a stricter policy, read on SIGHUP: the team's group route no longer applies
    (site_dir(m) / "50-strict.toml").write_text(f'forbidden_principals = ["group:{CROWD}"]\n')
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not can_read(bob, f), "the reload to take bob's access away", timeout=30)
    wait_for(lambda: "event=grant-suspended" in m.log_text(), "a log line for the suspended grant")
    line = next(x for x in m.log_text().splitlines() if "event=grant-suspended" in x)
    assert "principal=team:crowdteam" in line and f"group:{CROWD}" in line, line
    assert f"group:{CROWD_GID}" not in ok(run(alice, "getfacl", "-cn", f))
    grants = json.loads(ok(fedfs(alice, "grants", root / "data", "--json")))
    suspended = {g["principal"]: g.get("suspended") for g in grants}
    assert f"group:{CROWD}" in (suspended["team:crowdteam"] or ""), grants
    # at start too: the policy is read again, the grant still does not apply, and says so
    said = m.log_text().count("event=grant-suspended")
    m.stop()
    m.start()
    assert not can_read(bob, f)
    assert m.log_text().count("event=grant-suspended") > said
    # and a policy that allows it again brings the grant back on the next reload
    (site_dir(m) / "50-strict.toml").unlink()
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: can_read(bob, f), "the reload to restore bob's access", timeout=30)


def test_a_shorter_max_lifetime_ends_older_grants(
    shared: tuple[Mount, Path], alice: UnixUser, carol: UnixUser
) -> None:
    m, root = shared
    f = root / "data" / "f"
    ok(fedfs(alice, "share", root / "data", "--with", f"user:{carol.name}", "--read"))
    assert can_read(carol, f)
    (site_dir(m) / "50-short.toml").write_text('max_grant_lifetime = "2s"\n')
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not can_read(carol, f), "the grant to outlive the new maximum", timeout=30)
    line = next(x for x in m.log_text().splitlines() if "event=grant-suspended" in x)
    assert f"principal=user:{carol.name}" in line and "max_grant_lifetime" in line, line


def test_one_user_cannot_use_up_the_team_gids_nor_take_numeric_names(
    shared: tuple[Mount, Path], alice: UnixUser
) -> None:
    m, root = shared
    (site_dir(m) / "50-few.toml").write_text("max_teams_per_owner = 2\n")
    m.stop()
    m.start()
    ok(fedfs(alice, "team", "create", "first", "--mount", root))
    ok(fedfs(alice, "team", "create", "second", "--mount", root))
    err = refused(fedfs(alice, "team", "create", "third", "--mount", root))
    assert err == (
        f"fedfs: {alice.name} already owns 2 teams, this site's limit (policy: "
        "max_teams_per_owner = 2); add people to one of them, or ask a site admin"
    ), err
    ok(fedfs(root_user(), "team", "create", "third", "--mount", root))  # admins: any number
    err = refused(fedfs(root_user(), "team", "create", "2970", "--mount", root))
    assert "is a number, which ACL listings and grants would read as a uid or gid" in err, err
