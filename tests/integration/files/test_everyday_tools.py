"""cp -a, cp -p, tar x and rsync -a into a shared tree behave as into a local directory.

A tree with mixed modes, a symlink and old nanosecond mtimes is copied by
real tools, as the bucket owner and as a user the tree is shared with, once
into a local directory (the reference) and once into the mount. Exit
status, modes and mtimes must match right after the copy, after `fedfs
sync`, on a second mount of the same bucket, and after a remount.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, Mount, UnixUser

OLD = 978_307_200_123_456_789  # 2001-01-01, with nanoseconds
FILES = {  # name: (mode, mtime_ns)
    "f8a.txt": (0o640, OLD),
    "run.sh": (0o755, OLD + 86_400_000_000_000),
    "secret": (0o600, OLD + 2 * 86_400_000_000_000),
    "sub/deep.dat": (0o644, OLD + 3 * 86_400_000_000_000),
}
DIRS = {"sub": (0o750, OLD + 4 * 86_400_000_000_000)}


def make_source(base: Path, owner: UnixUser) -> Path:
    base.mkdir()
    src = base / "src"
    src.mkdir()
    (src / "sub").mkdir()
    for name, (mode, mtime) in FILES.items():
        (src / name).write_bytes(f"content of {name}\n".encode() * 100)
        os.chmod(src / name, mode)
        os.utime(src / name, ns=(mtime, mtime))
    os.symlink("f8a.txt", src / "link")
    os.utime(src / "link", ns=(OLD, OLD), follow_symlinks=False)
    for name, (mode, mtime) in DIRS.items():
        os.chmod(src / name, mode)
        os.utime(src / name, ns=(mtime, mtime))
    for p in [src, *src.rglob("*")]:
        os.lchown(p, owner.uid, owner.gid)
    os.chmod(src, 0o755)
    return src


def shape(top: Path) -> dict[str, tuple[str, int, int]]:
    """What a user compares after a copy: type, mode and mtime of every entry."""
    out = {}
    for p in sorted(top.rglob("*")):
        st = os.lstat(p)
        kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
        mode = 0 if kind == "l" else stat.S_IMODE(st.st_mode)
        # symlink times: fedfs keeps none of its own (documented); the rest to the ns
        mtime = 0 if kind == "l" else st.st_mtime_ns
        out[str(p.relative_to(top))] = (kind, mode, mtime)
    return out


def without_group_bits(
    entries: dict[str, tuple[str, int, int]],
) -> dict[str, tuple[str, int, int]]:
    return {name: (kind, mode & ~0o070, mtime) for name, (kind, mode, mtime) in entries.items()}


GRANT_BITS = {"f": 0o060, "d": 0o070}  # what a write grant gives: rw- on files, rwx on dirs

TOOLS = {
    "cp-a": lambda src, dst: ["cp", "-a", f"{src}/.", str(dst)],
    "cp-p": lambda src, dst: ["cp", "-pR", f"{src}/.", str(dst)],
    "tar": lambda src, dst: [
        "sh",
        "-c",
        f"set -e; tar --format=posix -C {src} -cf - . | tar -C {dst} -xpf -",
    ],
    "rsync": lambda src, dst: ["rsync", "-a", f"{src}/", f"{dst}/"],
}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *[str(a) for a in args]], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_copy_tools_keep_modes_and_times_in_a_shared_tree(
    tool: str,
    make_mount: Any,
    bucket: str,
    public_dir: Path,
    tmp_path: Path,
    alice: UnixUser,
    bob: UnixUser,
) -> None:
    if tool == "rsync" and not shutil.which("rsync"):
        pytest.skip("rsync is not installed")
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    assert alice.run("mkdir", "-m", "775", root / "jobs").returncode == 0
    r = alice.run(*FEDFS, "share", root / "jobs", "--with", f"user:{bob.name}", "--write")
    assert r.returncode == 0, r.stderr
    base = public_dir / f"{tmp_path.name}-{tool}"
    base.mkdir()
    expected: dict[str, dict[str, tuple[str, int, int]]] = {}
    for user in (alice, bob):
        src = make_source(base / user.name, user)
        local = base / user.name / "local"
        local.mkdir()
        os.chown(local, user.uid, user.gid)
        ref = user.run(*TOOLS[tool](src, local))
        assert ref.returncode == 0, ref.stderr
        expected[user.name] = shape(local)
        assert expected[user.name]["sub/deep.dat"] == ("f", 0o644, FILES["sub/deep.dat"][1])

        into = root / "jobs" / user.name
        assert user.run("mkdir", into).returncode == 0
        r = user.run(*TOOLS[tool](src, into))
        assert (r.returncode, r.stderr.decode()) == (ref.returncode, ref.stderr.decode())
        if user is alice:
            # bob's write grant on jobs shows in the group bits (the ACL mask): each tool
            # creates files private or with their final mode and then chmods them to wider
            # or the same bits, which cuts no grant (docs/SEMANTICS.md "chmod and grants").
            # Everything else is as local.
            expected[user.name] = {
                name: (kind, mode | GRANT_BITS.get(kind, 0), mtime)
                for name, (kind, mode, mtime) in expected[user.name].items()
            }
        assert shape(into) == expected[user.name], "right after the copy"

    r = cli("sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    for user in (alice, bob):
        assert shape(root / "jobs" / user.name) == expected[user.name], "after fedfs sync"

    # A second mount of the bucket, without this mount's policy (no shared policy log).
    other: Mount = make_mount([(bucket, f"user:{alice.name}")], name="other")
    for user in (alice, bob):
        seen, want = shape(other.path(bucket, "jobs", user.name)), expected[user.name]
        if user is alice:
            # Without the grant no mask applies, and the group bits show the owning
            # group's own entry, which a chmod under a grant leaves as it was (POSIX).
            seen, want = without_group_bits(seen), without_group_bits(want)
        assert seen == want, "other mount"
    other.stop()

    m.stop()
    m.start()
    for user in (alice, bob):
        assert shape(root / "jobs" / user.name) == expected[user.name], "after a remount"


def test_futimens_before_close_survives_the_upload(mount: Mount, bucket: str, s3: Any) -> None:
    path = mount.path(bucket, "stamped")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data\n")
    os.utime(fd, ns=(OLD, OLD + 1))
    os.close(fd)
    r = cli("sync", mount.mountpoint)
    assert r.returncode == 0, r.stderr
    meta = s3.head_object(Bucket=bucket, Key="stamped")["Metadata"]
    assert meta["mtime-ns"] == str(OLD + 1)
    assert meta["atime"] == f"{OLD // 10**9}.{OLD % 10**9:09d}"  # s3fs's form
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD, OLD + 1)
    mount.stop()
    mount.start()
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD, OLD + 1)
