"""Isolation: a user without a grant gets no byte and no name below a private directory.

alice owns the bucket and keeps `private/` (mode 0700) with a file readable by
anyone *if* they could reach it, a subdirectory and a user xattr. bob holds a
read grant on it; carol holds nothing. bob goes first every time, so the kernel's
dentry, attribute, ACL and page caches hold the private tree when carol tries
every way in: open, read, mmap, stat, readdir, xattrs, symlinks, rename, the
control socket. Then the daemon's own files: the cache directory is root's only,
and a symlink planted in it (by root, standing in for a compromise) does not make
the daemon read or write anywhere else.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, Mount, UnixUser, wait_for

SECRET = b"SECRET-7f3a-do-not-leak"
HIDDEN_NAMES = ("secret.txt", "deep.txt", "sub", "open-now.txt")

# Run as a user: try each (label, operation, path[, argument]) and print one JSON
# object {label: "ok <what came back>" | "ERRNAME"}. Nothing here raises.
PROBE = r"""
import errno, json, mmap, os, sys
def attempt(op, path, arg=None):
    if op == "read":
        with open(path, "rb") as f:
            return f.read()
    if op == "open_rw":
        os.close(os.open(path, os.O_RDWR)); return "opened"
    if op == "open_path":
        os.close(os.open(path, os.O_PATH)); return "opened"
    if op == "mmap":
        fd = os.open(path, os.O_RDONLY)
        try:
            with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ) as m:
                return bytes(m[:])
        finally:
            os.close(fd)
    if op == "stat":
        st = os.stat(path); return f"size {st.st_size} mode {st.st_mode:o}"
    if op == "lstat":
        st = os.lstat(path); return f"size {st.st_size} mode {st.st_mode:o}"
    if op == "listdir":
        return os.listdir(path)
    if op == "scandir":
        return [e.name for e in os.scandir(path)]
    if op == "getxattr":
        return os.getxattr(path, arg)
    if op == "listxattr":
        return os.listxattr(path)
    if op == "readlink":
        return os.readlink(path)
    if op == "rename":
        os.rename(path, arg); return "renamed"
    if op == "symlink":
        os.symlink(arg, path); return "made"
    if op == "write":
        with open(path, "wb") as f:
            f.write(b"x")
        return "written"
    if op == "chdir":
        os.chdir(path); return os.listdir(".")
    raise ValueError(op)
out = {}
for label, op, *rest in json.loads(sys.argv[1]):
    try:
        out[label] = "ok " + repr(attempt(op, *rest))
    except OSError as e:
        out[label] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def probe(user: UnixUser, *attempts: tuple[Any, ...]) -> dict[str, str]:
    r = user.run(sys.executable, "-c", PROBE, json.dumps([list(map(str, a)) for a in attempts]))
    assert r.returncode == 0, r.stderr.decode()
    result: dict[str, str] = json.loads(r.stdout)
    return result


def assert_nothing_leaks(
    text: str | bytes, *, names: tuple[str, ...] = HIDDEN_NAMES, asked: object = ()
) -> None:
    """No secret bytes, and none of the hidden names the caller did not type itself."""
    raw = text.encode() if isinstance(text, str) else text
    assert SECRET not in raw, f"secret bytes leaked: {raw[:300]!r}..."
    typed = json.dumps(asked, default=str)
    for name in names:
        if name not in typed:
            assert name.encode() not in raw, f"the hidden name {name!r} leaked: {raw[:500]!r}"


def fedfs_as(user: UnixUser, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return user.run(*FEDFS, *args)


def raw_control(user: UnixUser, sock: str, *requests: dict[str, Any]) -> list[Any]:
    """Send request lines over the control socket as user; the answers, parsed."""
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\n"
        "for line in sys.argv[2:]:\n"
        "    f.write(line.encode() + b'\\n'); f.flush(); print(f.readline().decode().strip())\n"
    )
    lines = [json.dumps({"v": 1, **r}) for r in requests]
    r = user.run(sys.executable, "-c", code, sock, *lines)
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def cache_dir_of(m: Mount) -> Path:
    return Path(tomllib.loads(m.config.read_text())["cache"]["dir"])


@pytest.fixture
def tree(make_mount: Any, bucket: str, alice: UnixUser, bob: UnixUser) -> tuple[Mount, Path, Path]:
    """alice's bucket: private/ (0700, read grant for bob) and pub/ (0777, for planting)."""
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    private = root / "private"
    code = (
        "import os, sys\n"
        "root = sys.argv[1]\n"
        "os.umask(0o022)\n"
        "os.mkdir(f'{root}/private', 0o700)\n"
        "os.mkdir(f'{root}/private/sub', 0o755)\n"
        f"open(f'{{root}}/private/secret.txt', 'wb').write({SECRET!r} * 300)\n"
        f"open(f'{{root}}/private/sub/deep.txt', 'wb').write({SECRET!r})\n"
        f"os.setxattr(f'{{root}}/private/secret.txt', 'user.note', {SECRET!r})\n"
        "os.mkdir(f'{root}/pub'); os.chmod(f'{root}/pub', 0o777)\n"
    )
    r = alice.run(sys.executable, "-c", code, root)
    assert r.returncode == 0, r.stderr.decode()
    r = fedfs_as(alice, "share", private, "--with", f"user:{bob.name}", "--read")
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run([*FEDFS, "sync", str(root)], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr.decode()
    return m, root, private


def warm_caches(bob: UnixUser, private: Path) -> None:
    """The authorised user lists and reads everything first (dentries, attrs, pages)."""
    seen = probe(
        bob,
        ("ls", "listdir", private),
        ("ls sub", "listdir", private / "sub"),
        ("read", "read", private / "secret.txt"),
        ("mmap", "mmap", private / "secret.txt"),
        ("deep", "read", private / "sub" / "deep.txt"),
        ("xattr", "getxattr", private / "secret.txt", "user.note"),
        ("xattrs", "listxattr", private / "secret.txt"),
    )
    assert SECRET.decode() in seen["read"] and SECRET.decode() in seen["mmap"], seen
    assert SECRET.decode() in seen["deep"] and SECRET.decode() in seen["xattr"], seen
    assert "secret.txt" in seen["ls"] and "deep.txt" in seen["ls sub"], seen
    assert "user.note" in seen["xattrs"], seen


def test_no_bytes_and_no_names_by_any_file_call_after_bob_filled_the_caches(
    tree: tuple[Mount, Path, Path], bob: UnixUser, carol: UnixUser
) -> None:
    _, _, private = tree
    warm_caches(bob, private)
    secret, sub = private / "secret.txt", private / "sub"
    got = probe(
        carol,
        ("read", "read", secret),
        ("open O_RDWR", "open_rw", secret),
        ("open O_PATH", "open_path", secret),
        ("mmap", "mmap", secret),
        ("stat", "stat", secret),
        ("lstat", "lstat", secret),
        ("readdir", "listdir", private),
        ("scandir", "scandir", private),
        ("chdir", "chdir", private),
        ("readdir sub", "listdir", sub),
        ("read deep", "read", sub / "deep.txt"),
        ("getxattr", "getxattr", secret, "user.note"),
        ("getxattr acl", "getxattr", secret, "system.posix_acl_access"),
        ("listxattr", "listxattr", secret),
        ("listxattr sub", "listxattr", sub),
        ("create inside", "write", private / "carol.txt"),
    )
    assert got == dict.fromkeys(got, "EACCES"), got
    # what carol may see is the directory itself: alice's, mode 0700, and no more
    outside = probe(carol, ("stat", "stat", private), ("ls", "listdir", private.parent))
    assert outside["stat"].startswith("ok 'size 0 mode 407"), outside  # 0750: the mask
    assert_nothing_leaks(json.dumps(list(outside.values())))


def test_symlinks_into_the_private_tree_lead_nowhere(
    tree: tuple[Mount, Path, Path], bob: UnixUser, carol: UnixUser
) -> None:
    _, root, private = tree
    warm_caches(bob, private)
    pub = root / "pub"
    # bob, who may read, plants links for carol: relative, absolute, to a directory
    made = probe(
        bob,
        ("rel", "symlink", pub / "bob-rel", "../private/secret.txt"),
        ("abs", "symlink", pub / "bob-abs", private / "secret.txt"),
        ("dir", "symlink", pub / "bob-dir", "../private/sub"),
        ("bob reads", "read", pub / "bob-rel"),
    )
    assert [made[k] for k in ("rel", "abs", "dir")] == ["ok 'made'"] * 3, made
    assert SECRET.decode() in made["bob reads"], made  # the links do lead there
    # carol's own links, inside the mount and outside it
    outside = Path(f"/tmp/fedfs-carol-link-{os.getpid()}")  # /tmp: carol may write there
    made = probe(
        carol,
        ("in", "symlink", pub / "carol-in", "../private/secret.txt"),
        ("out", "symlink", outside, private / "secret.txt"),
    )
    assert set(made.values()) == {"ok 'made'"}, made
    try:
        got = probe(
            carol,
            ("bob-rel", "read", pub / "bob-rel"),
            ("bob-abs", "read", pub / "bob-abs"),
            ("bob-abs mmap", "mmap", pub / "bob-abs"),
            ("bob-dir ls", "listdir", pub / "bob-dir"),
            ("bob-dir deep", "read", pub / "bob-dir" / "deep.txt"),
            ("carol-in", "read", pub / "carol-in"),
            ("outside", "read", outside),
            ("outside xattr", "getxattr", outside, "user.note"),
            ("stat via link", "stat", pub / "bob-abs"),
        )
        assert got == dict.fromkeys(got, "EACCES"), got
    finally:
        outside.unlink(missing_ok=True)


def test_rename_into_or_out_of_the_private_tree_is_refused(
    tree: tuple[Mount, Path, Path], s3: Any, bucket: str, bob: UnixUser, carol: UnixUser
) -> None:
    _, root, private = tree
    warm_caches(bob, private)
    pub = root / "pub"
    before = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert probe(carol, ("mine", "write", pub / "carol.txt")) == {"mine": "ok 'written'"}
    got = probe(
        carol,
        ("out", "rename", private / "secret.txt", pub / "stolen"),
        ("out dir", "rename", private / "sub", pub / "stolen-dir"),
        ("in", "rename", pub / "carol.txt", private / "planted"),
        ("whole", "rename", private, pub / "private-moved"),
    )
    assert got == dict.fromkeys(got, "EACCES"), got
    # a read grant does not let bob move things out either
    got = probe(bob, ("out", "rename", private / "secret.txt", pub / "stolen"))
    assert got == {"out": "EACCES"}, got

    def keys_now() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    wait_for(lambda: "pub/carol.txt" in keys_now(), "carol's file to be uploaded")
    assert keys_now() == sorted([*before, "pub/carol.txt"])
    assert probe(carol, ("ls", "listdir", pub)) == {"ls": "ok ['carol.txt']"}


def test_control_socket_tells_an_ungranted_user_nothing_about_the_private_tree(
    tree: tuple[Mount, Path, Path], alice: UnixUser, bob: UnixUser, carol: UnixUser
) -> None:
    m, root, private = tree
    warm_caches(bob, private)
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    fpath = f"/{root.name}/private"
    # alice keeps a file open for writing in the private tree meanwhile
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'wb'); f.write(b'x'); f.flush(); "
            "print('open', flush=True); sys.stdin.readline()",
            str(private / "open-now.txt"),
        ],
        user=alice.uid,
        group=alice.gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"open\n"
        # the CLI, as carol
        for args in (
            ("grants", private),
            ("grants", private / "secret.txt"),
            ("audit", "who", private),
            ("audit", "who", root),
            ("audit", "user", bob.name, "--mount", root),
            ("audit", "user", carol.name, "--mount", root, "--json"),
            ("audit", "log", "--mount", root, "--json"),
            ("audit", "log", "--path", private, "--mount", root, "--json"),
            ("audit", "expiring", "--within", "3650d", "--mount", root, "--json"),
            ("audit", "orphans", "--mount", root, "--json"),
            ("audit", "verify", "--mount", root),
            ("status", m.mountpoint),
            ("sync", m.mountpoint),
            ("stage", private / "secret.txt"),
        ):
            r = fedfs_as(carol, *args)
            assert_nothing_leaks(r.stdout + r.stderr, asked=args)
            assert b"Traceback" not in r.stderr, r.stderr
            if args[:2] in (("audit", "log"), ("audit", "expiring")):
                assert r.returncode == 0 and json.loads(r.stdout) == [], r
        r = fedfs_as(carol, "grants", private)
        assert r.returncode == 1 and b"holds nothing" in r.stderr, r
        # the same requests straight over the socket, with paths the CLI would not send
        requests: list[dict[str, Any]] = [
            {"op": "grants", "args": {"path": fpath}},
            {"op": "grants", "args": {"path": f"{fpath}/secret.txt"}},
            {"op": "audit-who", "args": {"path": f"{fpath}/secret.txt"}},
            {"op": "audit-log", "args": {"path": fpath}},
            {"op": "pending", "args": {}},
            {"op": "pending", "args": {"path": fpath}},
            {"op": "sync", "args": {}},
            {"op": "status", "args": {}},
        ]
        for request, answer in zip(requests, raw_control(carol, sock, *requests), strict=True):
            assert_nothing_leaks(json.dumps(answer), asked=request)
        # the owner still sees her open file there: the answer does carry names to those
        # who may know them
        mine = raw_control(alice, sock, {"op": "pending", "args": {}})[0]
        assert f"{fpath}/open-now.txt" in mine["result"]["open"], mine
        # stage: no way to tell an existing hidden file from a missing one, or its size
        exists, missing = raw_control(
            carol,
            sock,
            {"op": "stage", "args": {"paths": [f"{fpath}/secret.txt"]}},
            {"op": "stage", "args": {"paths": [f"{fpath}/no-such-file"]}},
        )
        assert exists["result"]["files"] == 0 and exists["result"]["bytes"] == 0, exists
        same = json.dumps(missing).replace("no-such-file", "secret.txt")
        assert json.dumps(exists) == same, (exists, missing)
    finally:
        assert writer.stdin is not None
        writer.stdin.write(b"\n")
        writer.stdin.close()
        writer.wait(10)


def test_cache_directory_is_root_only(
    tree: tuple[Mount, Path, Path], bob: UnixUser, carol: UnixUser
) -> None:
    m, _, private = tree
    warm_caches(bob, private)
    cache = cache_dir_of(m)
    dirs = [cache, *(p for p in cache.rglob("*") if p.is_dir())]
    assert {cache / "staging", cache / "clean"} <= set(dirs)
    for d in dirs:  # every directory root's and closed to others
        st = d.lstat()
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700), f"{d}: {st.st_mode:o}"
    for f in cache.rglob("*"):
        assert f.lstat().st_uid == 0, f
    for f in (cache / "staging").iterdir():  # data files are 0600 too
        assert f.lstat().st_mode & 0o077 == 0, f
    got = probe(carol, ("ls", "listdir", cache), ("clean", "listdir", cache / "clean"))
    assert got == {"ls": "EACCES", "clean": "EACCES"}, got


# -- planted symlinks in the cache directory (root stands in for a compromise) ------


def _drop_pages(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cached_files(cache: Path) -> list[Path]:
    """The complete clean files (a block being written has a .tmp name until it is whole)."""
    return sorted(
        p
        for p in (cache / "clean").rglob("*")
        if p.is_file() and not p.is_symlink() and not p.name.endswith(".tmp")
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    return d


def test_planted_symlink_for_a_cached_file_is_not_followed(
    fs: Path, mount: Mount, s3: Any, bucket: str, outside: Path
) -> None:
    elsewhere = outside / "elsewhere"
    elsewhere.write_bytes(SECRET * 10)
    data = os.urandom(5000)
    (fs / "victim").write_bytes(data)
    wait_for(lambda: _cached_files(cache_dir_of(mount)), "the upload to adopt the file")
    (cached,) = _cached_files(cache_dir_of(mount))
    cached.unlink()
    cached.symlink_to(elsewhere)
    _drop_pages(fs / "victim")
    try:
        got = (fs / "victim").read_bytes()
    except OSError:
        got = b""  # an error is a fine answer; the bytes of elsewhere are not
    assert_nothing_leaks(got, names=())
    assert got in (data, b"")
    # a write starts from the cached copy: it must not copy elsewhere in either
    with open(fs / "victim", "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    assert_nothing_leaks((fs / "victim").read_bytes(), names=())
    r = subprocess.run([*FEDFS, "sync", str(fs)], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    body = s3.get_object(Bucket=bucket, Key="victim")["Body"].read()
    assert body == data + b"tail"
    assert elsewhere.read_bytes() == SECRET * 10  # and it was not written to


def test_planted_directory_symlink_in_the_cache_redirects_nothing(
    fs: Path, mount: Mount, s3: Any, bucket: str, outside: Path
) -> None:
    data = os.urandom(5000)
    s3.put_object(Bucket=bucket, Key="victim", Body=data)
    assert (fs / "victim").read_bytes() == data  # fetched into clean/XX/HASH.0
    # the read is served from memory while a worker writes the clean file
    wait_for(lambda: _cached_files(cache_dir_of(mount)), "the fetched block in the clean cache")
    (cached,) = _cached_files(cache_dir_of(mount))
    sub = cached.parent
    # the same name elsewhere, holding other bytes; the cache subdirectory becomes a link
    (outside / cached.name).write_bytes(SECRET * 200)
    for p in sub.iterdir():
        p.unlink()
    sub.rmdir()
    sub.symlink_to(outside)
    _drop_pages(fs / "victim")
    time.sleep(0)  # nothing to wait for: the next read goes to the daemon
    try:
        got = (fs / "victim").read_bytes()
    except OSError:
        got = b""
    assert_nothing_leaks(got, names=())
    assert got in (data, b"")
    # nor did the daemon write into the directory the link points to
    assert sorted(p.name for p in outside.iterdir()) == [cached.name]
    assert (outside / cached.name).read_bytes() == SECRET * 200


def test_planted_symlink_for_a_staging_file_is_not_uploaded(
    fs: Path, mount: Mount, s3: Any, bucket: str, outside: Path
) -> None:
    elsewhere = outside / "elsewhere"
    elsewhere.write_bytes(SECRET * 10)
    staging = cache_dir_of(mount) / "staging"
    with open(fs / "written", "wb") as f:
        f.write(b"mine")
        f.flush()
        (st,) = list(staging.iterdir())
        st.unlink()
        st.symlink_to(elsewhere)  # the daemon still holds the real file open
        f.write(b" and more")
    r = subprocess.run(
        [*FEDFS, "sync", "--timeout", "20", str(fs)], capture_output=True, check=False
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for key in keys:
        assert_nothing_leaks(s3.get_object(Bucket=bucket, Key=key)["Body"].read(), names=())
    if r.returncode == 0:  # uploaded what was written, or said it could not
        assert s3.get_object(Bucket=bucket, Key="written")["Body"].read() == b"mine and more"
    else:
        assert "written" in r.stderr.decode() and "not uploaded" in r.stderr.decode(), r
    assert elsewhere.read_bytes() == SECRET * 10
    try:  # the closed file's copy was replaced: reading it fails, or shows what was written
        assert_nothing_leaks((fs / "written").read_bytes(), names=())
    except OSError as e:
        assert e.errno == errno.EIO, e
    os.unlink(fs / "written")  # so the unmount does not wait for an upload that cannot be
    assert "was replaced by something fedfs did not write" in mount.log_text()


def test_dot_dot_names_reach_nothing_outside(
    tree: tuple[Mount, Path, Path], carol: UnixUser, s3: Any, bucket: str
) -> None:
    m, root, _ = tree
    sock = os.getxattr(m.mountpoint, "user.fedfs.socket").decode()
    # over the control socket, where no kernel resolves ".." first
    escapes = [
        f"/{root.name}/../../../../etc/shadow",
        "/../etc/shadow",
        f"/{root.name}/pub/../private/secret.txt",
        f"/{root.name}/private/./secret.txt",
    ]
    answers = raw_control(
        carol,
        sock,
        {"op": "stage", "args": {"paths": escapes}},
        *({"op": "grants", "args": {"path": p}} for p in escapes),
        *({"op": "sync", "args": {"path": p}} for p in escapes),
    )
    for answer in answers:
        assert_nothing_leaks(json.dumps(answer), asked=escapes)
        assert "root:" not in json.dumps(answer)  # nothing of /etc/shadow
    assert answers[0]["result"]["files"] == 0, answers[0]
    # through the mount the kernel resolves ".." and "." itself; a symlink whose
    # target climbs out is followed by the kernel for the caller, never by the daemon
    got = probe(
        carol,
        ("link", "symlink", root / "pub" / "escape", "../../../../../../etc/hostname"),
        ("readlink", "readlink", root / "pub" / "escape"),
    )
    assert got["link"] == "ok 'made'" and "../etc/hostname" in got["readlink"], got
    body = s3.get_object(Bucket=bucket, Key="pub/escape")["Body"].read()
    assert body == b"../../../../../../etc/hostname"  # the target, not what it names
    r = raw_control(carol, sock, {"op": "stage", "args": {"paths": [f"/{root.name}/pub/escape"]}})
    assert r[0]["result"]["files"] == 0 and "not a file" in r[0]["result"]["refused"][0], r
    # and staging what carol may read works (the refusals above are not all it says)
    assert probe(carol, ("mine", "write", root / "pub" / "mine.txt"))["mine"] == "ok 'written'"
    r = raw_control(carol, sock, {"op": "stage", "args": {"paths": [f"/{root.name}/pub/mine.txt"]}})
    assert r[0]["result"]["refused"] == [], r
