"""A shared file opens its way through private directories and nothing else; chmod limits grants.

The hostile-user findings on a shared login node, as the users there met them: alice
owns the bucket, bob, carol and mallory are other local users (bob and mallory in the
group fedfs-lab, carol and mallory in the team crew). Every access is a real process
with that user's uid; the mount keeps attributes and dentries for 30 s, so anything the
kernel cached and fedfs failed to drop would show.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sharing.test_sharing import can_read, can_write, fedfs, ok
from tests.support import Mount, UnixUser, ensure_group, wait_for

LONG_CACHE = "[fs]\nattr_timeout = 30\nentry_timeout = 30"


@pytest.fixture
def tree(make_mount: Any, bucket: str, alice: UnixUser) -> Path:
    """private/ made 0700 with chmod, files 0644 and directories 0755 inside it."""
    m: Mount = make_mount([(bucket, f"user:{alice.name}")], top=LONG_CACHE)
    root = m.path(bucket)
    ok(
        alice.run(
            "sh",
            "-c",
            "umask 022 && cd $0 && mkdir -p private/sub private/deep/er pub/priv && "
            "echo secret > private/secret.txt && echo notes > private/notes.txt && "
            "echo shared > private/sub/f.txt && echo other > private/sub/g.txt && "
            "echo x > private/deep/er/x.txt && echo open > pub/open.txt && "
            "echo f > pub/priv/f && chmod 700 private pub/priv",
            root,
        )
    )
    return root


def can_list(user: UnixUser, path: Path) -> bool:
    r = user.run("ls", path)
    return r.returncode == 0


def can_stat(user: UnixUser, path: Path) -> bool:
    return user.run("stat", path).returncode == 0


def test_sharing_one_file_opens_nothing_else_in_the_private_directory(
    tree: Path, alice: UnixUser, bob: UnixUser, carol: UnixUser, mallory: UnixUser
) -> None:
    private = tree / "private"
    others = (bob, carol, mallory)
    assert all(can_list(u, tree) for u in others)  # the bucket root: 0775
    ok(fedfs(alice, "share", private / "sub" / "f.txt", "--with", f"user:{carol.name}", "--read"))
    for warm in (False, True):
        assert can_read(carol, private / "sub" / "f.txt"), f"warm={warm}"
        for name in ("secret.txt", "notes.txt", "sub/g.txt", "deep/er/x.txt"):
            assert not can_read(carol, private / name), f"{name}, warm={warm}"
        for d in (private, private / "sub", private / "deep", private / "deep" / "er"):
            assert not can_list(carol, d), f"{d}, warm={warm}"
        assert not can_stat(carol, private / "deep" / "er")
        # Nothing changed for those the grant does not name, nor for the bucket root.
        assert all(can_list(u, tree) for u in others), f"warm={warm}"
        assert not any(can_read(u, private / "sub" / "f.txt") for u in (bob, mallory))
        # The owner lists and reads everything, filling the kernel's caches for the
        # second round.
        ok(alice.run("ls", "-lR", private))
        ok(alice.run("cat", private / "secret.txt", private / "deep" / "er" / "x.txt"))


def test_cached_names_beside_the_way_stay_closed_after_share_chmod_and_unshare(
    tree: Path, alice: UnixUser, carol: UnixUser
) -> None:
    """What carol read while private/ was open is in the kernel's caches (30 s): a share
    below it after chmod 700, and a later chmod, must reach those cached copies too."""
    private, secret, shared = tree / "private", tree / "private" / "secret.txt", None
    shared = private / "sub" / "f.txt"
    ok(alice.run("chmod", "755", private))
    assert can_read(carol, secret) and can_read(carol, shared)  # 0644 in a 0755 directory
    ok(alice.run("chmod", "700", private))
    assert not can_read(carol, secret)
    ok(fedfs(alice, "share", shared, "--with", f"user:{carol.name}", "--read"))
    assert can_read(carol, shared)
    assert not can_read(carol, secret)
    # An open directory needs no way through: its modes hold again, grants only add.
    ok(alice.run("chmod", "755", private))
    assert can_read(carol, secret) and can_read(carol, shared)
    ok(alice.run("chmod", "700", private))
    assert not can_read(carol, secret) and can_read(carol, shared)
    ok(fedfs(alice, "unshare", shared, "--with", f"user:{carol.name}"))
    assert not can_read(carol, shared) and not can_stat(carol, private / "sub")


def test_group_and_team_grants_open_only_their_way(
    tree: Path, alice: UnixUser, bob: UnixUser, carol: UnixUser, mallory: UnixUser
) -> None:
    lab = ensure_group("fedfs-lab", 2911, [bob, mallory])
    bob_, mallory_ = bob.in_groups(lab), mallory.in_groups(lab)
    private = tree / "private"
    ok(fedfs(alice, "team", "create", "crew", "--mount", tree))
    ok(fedfs(alice, "team", "add", "crew", carol.name, mallory.name, "--mount", tree))
    ok(fedfs(alice, "share", private / "sub" / "f.txt", "--with", "group:fedfs-lab", "--read"))
    ok(fedfs(alice, "share", private / "deep" / "er", "--with", "team:crew", "--read"))
    assert can_read(bob_, private / "sub" / "f.txt")
    assert not can_read(bob_, private / "deep" / "er" / "x.txt")
    assert can_read(carol, private / "deep" / "er" / "x.txt")
    assert can_list(carol, private / "deep" / "er")  # the team's grant is on the directory
    assert not can_read(carol, private / "sub" / "f.txt")
    assert can_read(mallory_, private / "sub" / "f.txt")
    assert can_read(mallory_, private / "deep" / "er" / "x.txt")
    for member in (bob_, carol, mallory_):
        assert not can_read(member, private / "secret.txt"), member.name
        assert not can_read(member, private / "sub" / "g.txt"), member.name
        assert not can_list(member, private), member.name
        assert not can_list(member, private / "deep"), member.name
        assert can_list(member, tree), member.name
    # leaving the team closes the way at once
    ok(fedfs(alice, "team", "remove", "crew", carol.name, "--mount", tree))
    assert not can_read(carol, private / "deep" / "er" / "x.txt")
    assert not can_stat(carol, private / "deep")


def test_a_way_through_never_takes_away_and_adds_nothing_where_none_is_needed(
    tree: Path, alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    pub = tree / "pub"  # 0755, with private pub/priv (0700) inside
    ok(fedfs(alice, "share", pub / "priv" / "f", "--with", f"user:{carol.name}", "--read"))
    assert can_read(carol, pub / "priv" / "f")
    assert can_list(carol, pub) and can_read(carol, pub / "open.txt")
    assert not can_list(carol, pub / "priv")
    # anyone may search pub/ and the bucket: the grant adds no entry there
    for d in (tree, pub):
        acl = ok(alice.run("getfacl", "-cn", d))
        assert f"user:{carol.uid}" not in acl and "mask" not in acl, acl
    # bob holds read on all of pub/ and write on one file in priv/, which alice made
    # private with chmod 700 (a limit on grants): the way to the file opens, the limit
    # keeps the rest of priv/ closed to him, and his read on pub/ goes on as before.
    ok(alice.run("sh", "-c", f"echo g > {pub}/priv/g"))
    ok(fedfs(alice, "share", pub, "--with", f"user:{bob.name}", "--read"))
    assert not can_list(bob, pub / "priv") and not can_read(bob, pub / "priv" / "f")
    ok(fedfs(alice, "share", pub / "priv" / "f", "--with", f"user:{bob.name}", "--write"))
    assert can_write(bob, pub / "priv" / "f")
    assert not can_read(bob, pub / "priv" / "g") and not can_list(bob, pub / "priv")
    assert can_list(bob, pub) and can_read(bob, pub / "open.txt")
    # the owner is never held back
    ok(alice.run("cat", pub / "priv" / "g", pub / "priv" / "f"))


def test_when_a_grant_expires_its_way_closes_too(
    tree: Path, alice: UnixUser, carol: UnixUser
) -> None:
    f = tree / "private" / "sub" / "f.txt"
    ok(fedfs(alice, "share", f, "--with", f"user:{carol.name}", "--read", "--expires", "4s"))
    granted = time.time()
    assert can_read(carol, f) and can_stat(carol, tree / "private" / "sub")
    wait_for(lambda: not can_read(carol, f), "the grant to expire", timeout=30, interval=0.2)
    print(f"a 4 s grant stopped working after {time.time() - granted:.2f} s")
    assert not can_stat(carol, tree / "private" / "sub")  # at once, not after 30 s


# -- chmod limits grants whatever the order --------------------------------------------


@pytest.fixture
def project(make_mount: Any, bucket: str, alice: UnixUser) -> Path:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")], top=LONG_CACHE)
    root = m.path(bucket)
    ok(
        alice.run(
            "sh",
            "-c",
            "umask 022 && mkdir -p $0/proj/old-private && echo s > $0/proj/oldsecret.txt && "
            "echo i > $0/proj/old-private/inside.txt && echo shared > $0/proj/shared.txt",
            root,
        )
    )
    return root / "proj"


def test_chmod_before_a_share_keeps_things_private(
    project: Path, alice: UnixUser, mallory: UnixUser
) -> None:
    ok(alice.run("chmod", "700", project / "old-private"))
    ok(alice.run("chmod", "600", project / "oldsecret.txt"))
    ok(fedfs(alice, "share", project, "--with", f"user:{mallory.name}", "--write"))
    assert can_read(mallory, project / "shared.txt") and can_write(mallory, project / "shared.txt")
    assert not can_read(mallory, project / "oldsecret.txt")
    assert not can_list(mallory, project / "old-private")
    assert not can_read(mallory, project / "old-private" / "inside.txt")
    assert "mask::---" in ok(alice.run("getfacl", "-cn", project / "oldsecret.txt"))
    # and made private after the share, the same
    ok(alice.run("sh", "-c", f"umask 022 && echo n > {project}/newsecret.txt"))
    assert can_read(mallory, project / "newsecret.txt")
    ok(alice.run("chmod", "600", project / "newsecret.txt"))
    assert not can_read(mallory, project / "newsecret.txt")
    # chmod back lifts the limit
    ok(alice.run("chmod", "664", project / "oldsecret.txt"))
    assert can_write(mallory, project / "oldsecret.txt")


def test_tools_that_restate_modes_do_not_cut_a_write_grant(
    project: Path, alice: UnixUser, mallory: UnixUser, public_dir: Path
) -> None:
    ok(fedfs(alice, "share", project, "--with", f"user:{mallory.name}", "--write"))
    src = public_dir / f"src-{time.monotonic_ns()}"
    src.mkdir(mode=0o755)
    os.chown(src, alice.uid, alice.gid)
    ok(alice.run("sh", "-c", f"cd {src} && umask 022 && echo a > a.txt"))
    ok(alice.run("sh", "-c", f"cd {src} && umask 077 && echo p > p.txt && mkdir d"))
    ok(alice.run("tar", "-C", src, "-cf", src / "all.tar", "a.txt", "p.txt", "d"))
    ok(alice.run("cp", "-p", src / "a.txt", src / "p.txt", project))
    ok(alice.run("mkdir", project / "unpacked"))
    ok(alice.run("tar", "-C", project / "unpacked", "-xpf", src / "all.tar"))
    for f in (
        project / "a.txt",
        project / "p.txt",  # copied from a file created with umask 077
        project / "unpacked" / "a.txt",
        project / "unpacked" / "p.txt",
    ):
        assert can_write(mallory, f), f
    assert mallory.run("touch", project / "unpacked" / "d" / "new").returncode == 0
    # the same chmod to the mode a file has, from the owner's shell, is her word
    assert can_write(mallory, project / "shared.txt")
    ok(alice.run("chmod", "644", project / "shared.txt"))
    assert not can_write(mallory, project / "shared.txt")
    assert can_read(mallory, project / "shared.txt")


def test_setfacl_on_the_way_round_trips_and_cannot_open_or_cut_it(
    tree: Path, alice: UnixUser, carol: UnixUser
) -> None:
    private = tree / "private"  # chmod 700: a limit, which the way to the grant passes
    ok(fedfs(alice, "share", private / "sub" / "f.txt", "--with", f"user:{carol.name}", "--read"))
    for path in (private, private / "secret.txt"):
        before = ok(alice.run("getfacl", "-cn", path))
        r = alice.run("setfacl", "--set-file=-", path, input=before.encode())
        assert r.returncode == 0, r.stderr
        assert ok(alice.run("getfacl", "-cn", path)) == before
    # carol's entries come from her grant below: removing them here is refused
    for path in (private, private / "secret.txt"):
        r = alice.run("setfacl", "-x", f"u:{carol.name}", path)
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert can_read(carol, private / "sub" / "f.txt")
    assert not can_read(carol, private / "secret.txt")
    # giving carol read on a file beside her way is a grant like any other
    ok(alice.run("setfacl", "-m", f"u:{carol.name}:r", private / "secret.txt"))
    assert can_read(carol, private / "secret.txt")
    assert not can_read(carol, private / "notes.txt")
