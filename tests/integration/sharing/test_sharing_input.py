"""What `share` and `team` accept from a hostile or careless user, on a real mount.

alice owns the bucket, mallory (here carol) is a hostile local user. A grant must
name a path that exists and is not a link; an absurd expiry is a clear refusal;
team names must not pass for users or groups; nobody becomes an owner of a team
without a site admin; and a user sees only the teams they are in.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, Mount, UnixUser, wait_for

ROOT = UnixUser("root", 0, 0)


def fedfs(user: UnixUser, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return user.run(*FEDFS, *args)


def ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr.decode()}"
    return r.stdout.decode()


def refused(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 1, f"expected a refusal from {r.args}: {r.stdout.decode()}"
    err = r.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def control(user: UnixUser, m: Mount, op: str, **args: Any) -> dict[str, Any]:
    """One raw control request as user: {"result": ...} or {"error": ..., "code": ...}."""
    code = (
        "import json, sys\n"
        "from fedfs.control.client import ControlClient\n"
        "from fedfs.control.server import ControlError\n"
        f"c = ControlClient({str(socket_of(m))!r})\n"
        "try:\n"
        f"    print(json.dumps({{'result': c.call({op!r}, **json.loads(sys.argv[1]))}}))\n"
        "except ControlError as e:\n"
        "    print(json.dumps({'error': str(e), 'code': e.code}))\n"
    )
    r = user.run(*FEDFS[:1], "-c", code, json.dumps(args))
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def socket_of(m: Mount) -> str:
    for line in m.config.read_text().splitlines():
        if line.startswith("socket = "):
            return line.split('"')[1]
    raise AssertionError("no control socket in the test config")


@pytest.fixture
def mount(make_mount: Any, bucket: str, alice: UnixUser) -> Mount:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    top = m.path(bucket)
    ok(alice.run("sh", "-c", f"umask 077; mkdir {top}/private; echo s > {top}/private/s.txt"))
    return m


@pytest.fixture
def root(mount: Mount, bucket: str) -> Path:
    return mount.path(bucket)


def test_share_of_a_link_or_a_missing_path_is_refused(
    root: Path, mount: Mount, alice: UnixUser, carol: UnixUser
) -> None:
    # mallory's link in a directory alice shares from: it points outside the bucket
    ok(alice.run("ln", "-s", "../private", root / "results"))
    err = refused(fedfs(alice, "share", root / "results", "--with", f"user:{carol.name}"))
    assert err.startswith(f"fedfs: /{root.name}/results is a symbolic link"), err
    assert "share the path it points to" in err, err
    # a path that exists nowhere, asked for over the socket directly
    answer = control(
        alice,
        mount,
        "share",
        path=f"/{root.name}/nothing/here",
        principal=f"user:{carol.name}",
        level="read",
    )
    assert answer.get("code") == "refused", answer
    assert answer["error"] == (
        f"/{root.name}/nothing/here does not exist; create it first, then share it"
    ), answer
    assert json.loads(ok(fedfs(alice, "grants", root, "--json"))) == []


@pytest.mark.parametrize("expires", [1e300, -1e300, 1e19, 2**70])
def test_an_absurd_expiry_is_a_clear_refusal(
    root: Path, mount: Mount, alice: UnixUser, carol: UnixUser, expires: float
) -> None:
    answer = control(
        alice,
        mount,
        "share",
        path=f"/{root.name}/private",
        principal=f"user:{carol.name}",
        level="read",
        expires=expires,
    )
    assert answer.get("code") in ("refused", "bad-request"), answer
    assert "expir" in answer["error"], answer
    err = refused(
        fedfs(
            alice,
            "share",
            root / "private",
            "--with",
            f"user:{carol.name}",
            "--expires",
            "99999999999d",
        )
    )
    assert "expir" in err and "internal" not in err, err


def test_team_names_owners_and_who_sees_a_team(
    root: Path, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    mnt = ["--mount", str(root)]
    # names that pass for a user or a group are for site admins only
    for name in ("root", alice.name, "fedfs-bob", "daemon"):
        err = refused(fedfs(carol, "team", "create", name, *mnt))
        assert "already names a" in err and "site admin" in err, err
    ok(fedfs(ROOT, "team", "create", "daemon", *mnt))  # an admin may, knowingly
    # nor in another letter case, nor like a number in another notation
    for name in ("FEDFS-BOB", "Root", "0x10", "1e3", "_x"):
        err = refused(fedfs(carol, "team", "create", name, *mnt))
        assert "starts with a lower-case letter" in err, err
    # nobody becomes an owner without a site admin, and carol cannot make alice look like one
    ok(fedfs(carol, "team", "create", "mteam", *mnt))
    err = refused(fedfs(carol, "team", "add", "mteam", alice.name, "--owner", *mnt))
    assert "only a site admin" in err, err
    ok(fedfs(carol, "team", "add", "mteam", bob.name, *mnt))  # members, as before
    ok(fedfs(ROOT, "team", "add", "mteam", bob.name, "--owner", *mnt))
    # team list shows a user the teams they are in or own; admins see all
    ok(fedfs(alice, "team", "create", "ateam", *mnt))

    def seen(who: UnixUser) -> set[str]:
        return {t["name"] for t in json.loads(ok(fedfs(who, "team", "list", "--json", *mnt)))}

    assert seen(carol) == {"mteam"}
    assert seen(bob) == {"mteam"}
    assert seen(alice) == {"ateam"}
    assert {"ateam", "mteam", "daemon"} <= seen(ROOT)
    for action in (
        ("show", "ateam"),
        ("add", "ateam", carol.name),
        ("remove", "ateam", carol.name),  # "anyone may leave" must not name the members
    ):
        err = refused(fedfs(carol, "team", *action, *mnt))
        assert "there is no team 'ateam' that fedfs-carol may see" in err, err
        assert alice.name not in err, err  # nor who owns it or is in it
        # the same answer as for a team that does not exist
        missing = refused(fedfs(carol, "team", action[0], "nosuch", *action[2:], *mnt))
        assert missing == err.replace("'ateam'", "'nosuch'"), (missing, err)
    # sharing with a team by name still works for anyone who manages the path
    ok(fedfs(alice, "share", root / "private", "--with", "team:mteam", "--read"))


def test_outputs_escape_control_characters_in_names(
    root: Path, alice: UnixUser, carol: UnixUser, s3: Any
) -> None:
    """A name with a carriage return and an escape sequence cannot fake lines or repaint
    a terminal. fedfs refuses to create such names, but a key put through S3 may hold them."""
    name = "cr\rfake line\x1b[2J\x1b[31mred"
    shown = "cr\\rfake line\\x1b[2J\\x1b[31mred"
    s3.put_object(Bucket=root.name, Key=f"private/{name}", Body=b"data\n")
    d = root / "private" / name
    wait_for(d.exists, "the key put through S3 to show in the mount")  # listings live 1 s
    assert d.read_bytes() == b"data\n"
    outputs = []
    r = fedfs(alice, "sync", "--timeout", "30", d)
    assert r.returncode == 0, r.stderr.decode()
    outputs.append(r.stdout.decode() + r.stderr.decode())
    assert f"synced {d}".replace(name, shown) in r.stdout.decode(), r.stdout.decode()
    ok(fedfs(alice, "share", d, "--with", f"user:{carol.name}", "--read"))
    grants = fedfs(alice, "grants", d)
    outputs.append(ok(grants))
    # the table may wrap its title anywhere, so compare without whitespace
    assert "".join(shown.split()) in "".join(grants.stdout.decode().split()), grants.stdout.decode()
    r = fedfs(alice, "share", d / "missing", "--with", f"user:{carol.name}")
    err = refused(r)  # one line: the newline in the name is shown as \n
    assert f"{shown}/missing: no such file or directory" in err, err
    outputs.append(err)
    r = fedfs(alice, "unshare", d, "--with", f"user:{carol.name}")
    outputs.append(ok(r))
    assert shown in r.stdout.decode()
    for out in outputs:
        assert "\x1b" not in out and "fake line" not in out.replace(shown, ""), out
