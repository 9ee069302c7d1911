"""What `fedfs audit who/user` and `fedfs grants` tell, against what the kernel allows.

The audit reports are compared with what real processes of every test user can
open on a tree of mixed modes and grants; grants and team assert the exact line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sharing.test_sharing import fedfs, ok
from tests.support import FEDFS, REPO, Mount, UnixUser, ensure_user, wait_for

ROOT = UnixUser("root", 0, 0)

# Every probe is a real open (files), listdir or chdir (directories) by the user's process.
PROBE = """
import json, os, sys
out = {}
for arg in sys.argv[1:]:
    kind, p = arg[0], arg[2:]
    got = ""
    if kind == "d":
        for c, probe in (("r", os.listdir), ("-", None), ("x", os.chdir)):
            try:
                if probe is not None:
                    probe(p)
                got += c
            except OSError:
                got += "-"
        os.chdir("/")
    else:
        for flag, c in ((os.O_RDONLY, "r"), (os.O_WRONLY, "w")):
            try:
                os.close(os.open(p, flag)); got += c
            except OSError:
                got += "-"
        got += "-"
    out[p] = got
print(json.dumps(out))
"""


def kernel_says(user: UnixUser, paths: list[Path], dirs: set[str]) -> dict[str, str]:
    args = [("d:" if str(p) in dirs else "f:") + str(p) for p in paths]
    r = user.run(sys.executable, "-c", PROBE, *args)
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def comparable(access: str, is_dir: bool) -> str:
    """What the probes can see: r and x on directories, r and w on files."""
    if access in ("", "none", None):
        access = "---"
    return access[0] + "-" + access[2] if is_dir else access[:2] + "-"


@pytest.fixture
def dave() -> UnixUser:
    return ensure_user("fedfs-dave", 2904)


@pytest.fixture
def mixed(
    make_mount: Any,
    bucket: str,
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
    dave: UnixUser,
) -> tuple[Mount, Path, list[Path]]:
    """alice's bucket: a private runs/ with a team grant below it and a 0644 note, an open/
    directory with files of mixed modes and user and group grants."""
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    ok(
        alice.run(
            "sh",
            "-c",
            f"cd {root} && umask 077 && mkdir -p runs/2026 && echo r > runs/2026/result.dat "
            "&& echo n > runs/notes.txt && chmod 644 runs/notes.txt && chmod 700 runs "
            "&& mkdir -m 755 open && echo p > open/pub.txt && chmod 644 open/pub.txt "
            "&& echo s > open/priv.txt && echo g > open/grp.txt && chmod 640 open/grp.txt",
        )
    )
    ok(fedfs(alice, "team", "create", "cosmo", "--mount", root))
    ok(fedfs(alice, "team", "add", "cosmo", carol.name, "--mount", root))
    ok(fedfs(alice, "share", root / "runs" / "2026", "--with", "team:cosmo", "--read"))
    ok(fedfs(alice, "share", root / "open" / "priv.txt", "--with", f"group:{dave.name}", "--read"))
    ok(fedfs(alice, "share", root / "open" / "grp.txt", "--with", f"user:{bob.name}", "--write"))
    # carol's own grant on the note has expired; the team grant below runs/ stays
    note = root / "runs" / "notes.txt"
    ok(fedfs(alice, "share", note, "--with", f"user:{carol.name}", "--read", "--expires", "2s"))
    wait_for(
        lambda: json.loads(ok(fedfs(alice, "grants", note, "--json"))) == [],
        "carol's grant on the note to expire",
    )
    paths = [
        root / "runs",
        root / "runs" / "2026",
        root / "runs" / "2026" / "result.dat",
        note,
        root / "open",
        root / "open" / "pub.txt",
        root / "open" / "priv.txt",
        root / "open" / "grp.txt",
    ]
    return m, root, paths


def test_who_and_user_report_what_the_kernel_allows(
    mixed: tuple[Mount, Path, list[Path]],
    alice: UnixUser,
    bob: UnixUser,
    carol: UnixUser,
    dave: UnixUser,
) -> None:
    m, root, paths = mixed
    users = [alice, bob, carol, dave]
    dirs = {str(p) for p in paths if p.is_dir()}
    kernel = {u.name: kernel_says(u, paths, dirs) for u in users}
    for p in paths:
        rows = json.loads(ok(fedfs(ROOT, "audit", "who", p, "--json")))
        by = {r["principal"]: r for r in rows}
        for u in users:
            # how a reader uses the report: the user's own row, else their group's, else
            # the row for everyone else
            row = by.get(f"user:{u.name}") or by.get(f"group:{u.name}") or by.get("everyone else")
            reported = comparable(row["access"] if row else "---", str(p) in dirs)
            assert reported == kernel[u.name][str(p)], (
                f"audit who {p}: {u.name} reported {reported} ({row}), "
                f"kernel {kernel[u.name][str(p)]}\n{json.dumps(rows, indent=1)}"
            )
    # the case that was missed: carol reads the 0644 note by the search right on runs/
    # that the team grant below it gives her (while the engine gives that right)
    if kernel[carol.name][str(paths[3])][0] == "r":
        text = ok(fedfs(ROOT, "audit", "who", paths[3], "--csv"))
        line = next(x for x in text.splitlines() if x.startswith(f"user:{carol.name},"))
        assert line == (
            f"user:{carol.name},r--,"
            f"mode bits for other (0644); search on /{root.name} and /{root.name}/runs by "
            "team:cosmo's "
            f"grant on /{root.name}/runs/2026 (pass-through),"
        ), line
    for u in users:
        rows = json.loads(ok(fedfs(ROOT, "audit", "user", u.name, "--mount", root, "--json")))
        listed = {r["path"]: r for r in rows}
        for p in paths:
            fpath = "/" + str(p.relative_to(m.mountpoint))
            row = listed.get(fpath)
            reported = comparable(row["access"] if row else "---", str(p) in dirs)
            assert reported == kernel[u.name][str(p)], (
                f"audit user {u.name}: {fpath} reported {reported}, kernel "
                f"{kernel[u.name][str(p)]}\n{json.dumps(rows, indent=1)}"
            )


def test_asking_about_oneself_names_only_what_one_could_find(
    mixed: tuple[Mount, Path, list[Path]], carol: UnixUser
) -> None:
    _m, root, _paths = mixed
    rows = json.loads(ok(fedfs(carol, "audit", "user", carol.name, "--mount", root, "--json")))
    listed = {r["path"]: r["access"] for r in rows}
    b = f"/{root.name}"
    # runs/ lets carol search, not list: only the names her grants give are shown (the
    # note she could open by name is not named to her; an admin's report names it)
    assert {p: a for p, a in listed.items() if p.startswith(f"{b}/runs")} == {
        f"{b}/runs": "--x",
        f"{b}/runs/2026": "r-x",
        f"{b}/runs/2026/result.dat": "r--",
    }
    r = fedfs(carol, "audit", "user", carol.name, "--mount", root / "runs" / "nothing-here")
    assert r.returncode == 1
    r2 = fedfs(carol, "audit", "user", carol.name, "--mount", root / "open" / "priv.txt")
    assert r2.returncode == 0 and b"priv.txt" not in r2.stdout  # she may not read it


def cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_grants_says_when_nothing_applies_and_when_the_mask_limits(
    make_mount: Any, bucket: str, alice: UnixUser, carol: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    f = m.path(bucket, "f8a.txt")
    ok(alice.run("sh", "-c", f"echo x > {f}"))
    assert ok(fedfs(alice, "grants", f)).splitlines() == [
        f"no grants apply to {f}: its owner and mode bits alone decide who may access it"
    ]
    ok(fedfs(alice, "share", f, "--with", f"user:{carol.name}", "--write"))
    ok(alice.run("chmod", "640", f))
    out = ok(fedfs(alice, "grants", f)).splitlines()
    assert out[-1] == (
        f"note: the ACL mask of {f} is r-- (set by chmod), so user:{carol.name} write "
        "works as r-- here; chmod g+w lifts the limit"
    ), out
    rows = json.loads(ok(fedfs(alice, "grants", f, "--json")))
    assert [(r["principal"], r["effective"]) for r in rows] == [(f"user:{carol.name}", "r--")]
    assert carol.run("sh", "-c", f"echo more >> {f}").returncode != 0  # as the note says


def test_team_outside_a_mount_says_where_to_run_it(tmp_path: Path) -> None:
    r = cli("team", "list", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"fedfs: {tmp_path} is not on a fedfs mount: `fedfs team` acts on the mount "
        "holding the current directory; cd into the mount, or pass --mount PATH"
    ]
