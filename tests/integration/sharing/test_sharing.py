"""Share grants become ACLs the kernel enforces, for real processes of different uids.

alice owns the bucket; bob and carol are other local users. Every command is the
real `fedfs` CLI run as that user, talking to the daemon over its control socket;
every access is a real open/read/write by a process with that uid.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, Mount, UnixUser, wait_for


def fedfs(user: UnixUser, *args: str | Path) -> Any:
    return user.run(*FEDFS, *args)


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr.decode()}"
    return str(r.stdout.decode())


def refused(r: Any, *phrases: str) -> str:
    assert r.returncode == 1, f"expected a refusal from {r.args}: {r.stdout.decode()}"
    err = r.stderr.decode()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def can_read(user: UnixUser, path: Path) -> bool:
    r = user.run("cat", path)
    if r.returncode == 0:
        return True
    assert r.stdout == b"" and b"Permission denied" in r.stderr, r
    return False


def can_write(user: UnixUser, path: Path) -> bool:
    r = user.run("sh", "-c", f"echo more >> '{path}'")
    return r.returncode == 0


@pytest.fixture
def shared(make_mount: Any, bucket: str, alice: UnixUser) -> tuple[Mount, Path]:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(alice.run("mkdir", "-m", "750", root / "data"))
    # umask 077: grants must work on files created private
    ok(
        alice.run(
            "sh",
            "-c",
            f"umask 077; echo results > {root}/data/old.csv; echo secret > {root}/data/private.txt",
        )
    )
    return m, root


def test_team_grant_lets_bob_read_until_unshared_or_removed(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    _m, root = shared
    data = root / "data"
    assert not can_read(bob, data / "old.csv")  # before any share
    ok(fedfs(alice, "team", "create", "cosmo", "--mount", root))
    ok(fedfs(alice, "team", "add", "cosmo", bob.name, "--mount", root))
    out = ok(fedfs(alice, "share", data, "--with", "team:cosmo", "--read"))
    assert "shared" in out and "team:cosmo: read" in out
    # the grant reaches a file that existed before it, created with umask 077
    assert can_read(bob, data / "old.csv")
    assert bob.run("ls", data).stdout.split() == [b"old.csv", b"private.txt"]
    # a read grant refuses writes
    assert not can_write(bob, data / "old.csv")
    assert bob.run("sh", "-c", f"echo x > {data}/bob-new.txt").returncode != 0
    # carol holds nothing: 0 bytes, also right after bob's access filled the kernel caches
    assert not can_read(carol, data / "old.csv")
    assert carol.run("ls", data).stdout == b""
    # unshare: a new open by bob is refused
    ok(fedfs(alice, "unshare", data, "--with", "team:cosmo"))
    assert not can_read(bob, data / "old.csv")
    # share again, then remove bob from the team
    ok(fedfs(alice, "share", data, "--with", "team:cosmo", "--read"))
    assert can_read(bob, data / "old.csv")
    ok(fedfs(alice, "team", "remove", "cosmo", bob.name, "--mount", root))
    assert not can_read(bob, data / "old.csv")


def test_open_file_keeps_access_after_revoke(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    _, root = shared
    data = root / "data"
    ok(fedfs(alice, "share", data, "--with", f"user:{bob.name}", "--read"))
    # bob opens the file, the grant goes, bob keeps reading that open file (POSIX) but a new open fails
    code = (
        "import sys, time, os\n"
        f"f = open({str(data / 'old.csv')!r})\n"
        "print('opened', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(f.read(), flush=True)\n"
    )
    import subprocess

    p = subprocess.Popen(
        [os.sys.executable, "-c", code],
        user=bob.uid,
        group=bob.gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None
    assert p.stdout.readline().strip() == "opened"
    ok(fedfs(alice, "unshare", data, "--with", f"user:{bob.name}"))
    assert not can_read(bob, data / "old.csv")
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "results"
    p.wait(10)


def test_write_grant_chmod_700_and_getfacl(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    _, root = shared
    data = root / "data"
    ok(fedfs(alice, "share", data, "--with", f"user:{bob.name}", "--write"))
    assert can_write(bob, data / "old.csv")
    ok(bob.run("sh", "-c", f"echo from-bob > {data}/bob-new.txt"))
    assert can_read(alice, data / "bob-new.txt")
    # getfacl shows the grant as a named entry (and the mask)
    acl = ok(alice.run("getfacl", "-cn", data / "old.csv"))
    assert f"user:{bob.uid}:rw-" in acl and "mask::rw-" in acl
    dacl = ok(alice.run("getfacl", "-cn", data))
    assert f"user:{bob.uid}:rwx" in dacl and f"default:user:{bob.uid}:rwx" in dacl
    # chmod 700 on one file keeps bob out of that file only
    ok(alice.run("chmod", "700", data / "private.txt"))
    assert not can_read(bob, data / "private.txt")
    assert can_read(bob, data / "old.csv")
    acl = ok(alice.run("getfacl", "-cn", data / "private.txt"))
    # chmod 700 set an execute bit, so the grant shows X too; the mask cuts it to nothing
    assert "mask::---" in acl and f"user:{bob.uid}:rwx\t#effective:---" in acl
    # chmod back opens it again
    ok(alice.run("chmod", "770", data / "private.txt"))
    assert can_read(bob, data / "private.txt")


def test_setfacl_becomes_a_grant_and_round_trips(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root = shared
    data = root / "data"
    ok(alice.run("setfacl", "-m", f"u:{carol.name}:r", data))
    assert can_read(carol, data / "old.csv")  # the directory's grant reaches the file
    assert not can_write(carol, data / "old.csv")
    ok(alice.run("setfacl", "-m", f"u:{carol.name}:rw", data / "old.csv"))
    assert can_write(carol, data / "old.csv")
    grants = json.loads(ok(fedfs(alice, "grants", data / "old.csv", "--json")))
    assert {(g["principal"], g["level"], g["path"]) for g in grants} == {
        (f"user:{carol.name}", "read", f"/{root.name}/data"),
        (f"user:{carol.name}", "write", f"/{root.name}/data/old.csv"),
    }
    # getfacl | setfacl --set-file round trip leaves the same ACL
    before = ok(alice.run("getfacl", "-cn", data / "old.csv"))
    r = alice.run("setfacl", "--set-file=-", data / "old.csv", input=before.encode())
    assert r.returncode == 0, r.stderr
    assert ok(alice.run("getfacl", "-cn", data / "old.csv")) == before
    # removing the entry with setfacl -x unshares it
    ok(alice.run("setfacl", "-x", f"u:{carol.name}", data / "old.csv"))
    ok(alice.run("setfacl", "-x", f"u:{carol.name}", data))
    assert not can_read(carol, data / "old.csv")
    # bob may not setfacl alice's file (the kernel: not the owner)
    r = bob.run("setfacl", "-m", f"u:{bob.name}:rw", data / "old.csv")
    assert r.returncode != 0
    # write without read is no grant level: refused, not widened to rw-
    r = alice.run("setfacl", "-m", f"u:{carol.name}:-w-", data / "old.csv")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert not can_read(carol, data / "old.csv")
    wait_for(lambda: "would grant write without read" in m.log_text(), "the reason logged")


def test_who_may_share(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    _, root = shared
    data = root / "data"
    ok(fedfs(alice, "share", data, "--with", f"user:{bob.name}", "--read"))
    refused(
        fedfs(bob, "share", data, "--with", f"user:{carol.name}", "--read"),
        f"{bob.name} holds read on /{root.name}/data",
        "sharing needs manage",
    )
    assert not can_read(carol, data / "old.csv")
    # a manage grant lets bob share below it, but not beyond its own expiry
    ok(fedfs(alice, "share", data, "--with", f"user:{bob.name}", "--manage", "--expires", "1d"))
    refused(
        fedfs(bob, "share", data, "--with", f"user:{carol.name}", "--read"), "must expire by then"
    )
    ok(
        fedfs(
            bob,
            "share",
            data / "old.csv",
            "--with",
            f"user:{carol.name}",
            "--read",
            "--expires",
            "2h",
        )
    )
    assert can_read(carol, data / "old.csv")
    # a grant on a file lets carol reach it, not list the private directory around it
    r = carol.run("ls", data)
    assert r.returncode != 0 and b"private.txt" not in r.stdout
    assert not can_read(carol, data / "private.txt")
    # nobody can share outside what they manage
    refused(fedfs(bob, "share", root, "--with", f"user:{carol.name}", "--read"), "holds nothing at")
    # bad principals and levels get a clear refusal
    refused(
        fedfs(alice, "share", data, "--with", "user:no-such-person-x", "--read"), "there is no user"
    )
    refused(fedfs(alice, "share", data, "--with", "group:users", "--read"), "too broad")
    refused(fedfs(alice, "share", data, "--with", "team:nope", "--read"), "there is no team")
    refused(
        fedfs(
            alice, "share", data, "--with", f"user:{bob.name}", "--read", "--expires", "whenever"
        ),
        "--expires",
    )


def test_forged_uid_in_a_control_message_is_ignored(
    shared: tuple[Mount, Path], bob: UnixUser
) -> None:
    m, root = shared
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    request = {
        "v": 1,
        "op": "share",
        "args": {
            "path": f"/{root.name}/data",
            "principal": f"user:{bob.name}",
            "level": "manage",
            "uid": 0,
            "user": "root",
        },
    }
    line = json.dumps(request).encode() + b"\n"
    code = (
        "import socket, sys\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({sock!r})\n"
        f"s.sendall({line!r})\n"
        "print(s.makefile().readline())\n"
    )
    answer = json.loads(bob.python(code).stdout)
    assert answer["ok"] is False and answer["code"] == "refused"
    assert bob.name in answer["error"] and "needs manage" in answer["error"]
    assert not can_read(bob, root / "data" / "old.csv")


def test_expired_grant_stops_working_on_time(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    _, root = shared
    data = root / "data"
    ok(fedfs(alice, "share", data, "--with", f"user:{bob.name}", "--read", "--expires", "4s"))
    granted = time.time()
    assert can_read(bob, data / "old.csv")
    wait_for(
        lambda: not can_read(bob, data / "old.csv"), "the grant to expire", timeout=30, interval=0.2
    )
    gone = time.time() - granted
    assert gone >= 3.5, f"access ended after {gone:.1f}s, before the 4 s expiry"
    print(f"grant of 4 s stopped working after {gone:.2f} s")
    grants = json.loads(ok(fedfs(alice, "grants", data, "--json")))
    assert grants == []


def test_team_owned_bucket_and_socket_is_per_mount(
    make_mount: Any, bucket: str, alice: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, "team:lab")])
    root = m.path(bucket)
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    assert Path(sock).stat().st_mode & 0o777 == 0o666
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
    # root (a site admin) creates the team; alice becomes an owner and so manages the bucket
    ok(fedfs(UnixUser("root", 0, 0), "team", "create", "lab", "--mount", root))
    ok(fedfs(UnixUser("root", 0, 0), "team", "add", "lab", alice.name, "--owner", "--mount", root))
    st = os.stat(root)
    team = json.loads(ok(fedfs(alice, "team", "show", "lab", "--mount", root, "--json")))
    assert st.st_gid == team["gid"] and team["gid"] >= 600000
    assert alice.name in team["owners"]
    ok(fedfs(alice, "share", root, "--with", f"user:{alice.name}", "--write"))
    assert alice.run("sh", "-c", f"echo x > {root}/by-alice").returncode == 0


def test_a_revoke_reaches_the_kernel_at_once_also_where_only_the_parent_protected_the_file(
    make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser
) -> None:
    """A file readable by others inside a private directory: only the search (x) right the
    grant put on the directory let bob in, so the revoke must drop the directory's cached
    ACL too, not only the file's. Long kernel cache lifetimes make a missed one show."""
    m = make_mount(
        [(bucket, f"user:{alice.name}")], top="[fs]\nattr_timeout = 30\nentry_timeout = 30"
    )
    root = m.path(bucket)
    ok(
        alice.run(
            "sh", "-c", f"mkdir -m 700 {root}/d && echo hi > {root}/d/f && chmod 644 {root}/d/f"
        )
    )
    f = root / "d" / "f"
    for _ in range(2):
        ok(fedfs(alice, "share", f, "--with", f"user:{bob.name}", "--read"))
        assert can_read(bob, f)
        ok(fedfs(alice, "unshare", f, "--with", f"user:{bob.name}"))
        assert not can_read(bob, f)  # at once, not after the 30 s the kernel may cache


def test_what_an_unshare_cuts_off_at_once_and_what_it_does_not(
    shared: tuple[Mount, Path], alice: UnixUser, bob: UnixUser
) -> None:
    """docs/SEMANTICS.md "After an unshare": the kernel checks each new lookup and open.

    bob works in proj/sub (0755, below alice's 0700 proj) through a grant on proj, with a
    0600 file open. After the unshare: every path from outside proj is refused; a new
    open of the 0600 file is refused even by relative path from his working directory;
    the file he has open stays readable; and what the modes below proj allow anyone
    (the 0755 directory, the 0644 file) stays reachable through his working directory,
    as it would on a local disk after `chmod 700 proj`.
    """
    import subprocess
    import sys

    _, root = shared
    proj = root / "proj"
    ok(alice.run("mkdir", "-m", "700", proj))
    ok(alice.run("mkdir", "-m", "755", proj / "sub"))
    ok(alice.run("sh", "-c", f"cd {proj}/sub && echo pub > pub.txt && chmod 644 pub.txt"))
    # created 0600 (umask 077): a mode from creation limits no grant, so bob reads it
    # through his grant on proj (a chmod 600 would be the owner's limit on grants)
    ok(alice.run("sh", "-c", f"cd {proj}/sub && umask 077 && echo priv > priv.txt"))
    ok(fedfs(alice, "share", proj, "--with", f"user:{bob.name}", "--read"))
    code = (
        "import os, sys\n"
        f"os.chdir({str(proj / 'sub')!r})\n"
        "held = open('priv.txt')\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        "    what = line.strip()\n"
        "    try:\n"
        "        if what == 'held':\n"
        "            held.seek(0); out = held.read().strip()\n"
        "        elif what == 'ls':\n"
        "            out = ' '.join(sorted(os.listdir('.')))\n"
        "        else:\n"
        "            out = open(what).read().strip()\n"
        "    except OSError as e:\n"
        "        out = 'refused: ' + e.strerror\n"
        "    print(out, flush=True)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        user=bob.uid,
        group=bob.gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None

    def ask(what: str) -> str:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(what + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()

    try:
        assert p.stdout.readline().strip() == "ready"
        assert ask("priv.txt") == "priv"
        ok(fedfs(alice, "unshare", proj, "--with", f"user:{bob.name}"))
        # cut off at once: every path through proj, and new opens the modes do not allow
        assert not can_read(bob, proj / "sub" / "pub.txt")
        assert not can_read(bob, proj / "sub" / "priv.txt")
        assert ask("priv.txt") == "refused: Permission denied"
        # not cut off: the open file, and what the modes below proj give everyone
        assert ask("held") == "priv"
        assert ask("pub.txt") == "pub"
        assert ask("ls") == "priv.txt pub.txt"
    finally:
        p.stdin.close()
        p.wait(10)
