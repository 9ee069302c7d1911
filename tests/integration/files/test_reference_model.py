"""A reference model: one random operation sequence on a local directory and on a mount.

After every step both trees must match in names, types, sizes, bytes, symlink targets
and permission bits, and each operation must fail on both sides with the same errno or
on neither. Times, st_nlink, st_ino, directory sizes and owners are not compared: the
mount documents them as differing from a local disk. Replay a failure with the
FEDFS_SEED and FEDFS_MODEL_OPS the message prints.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import Mount

DEFAULT_SEED = 20261127
DEFAULT_OPS = 2000
NAMES = "abcdefgh"  # a small pool, so names collide
MAX_DEPTH = 3
MAX_ENTRIES = 40
MODES = (0o600, 0o640, 0o644, 0o664, 0o700, 0o755)
MAX_NEW_FILE = 64 * 1024
HISTORY_SHOWN = int(os.environ.get("FEDFS_MODEL_HISTORY", "25"))


@dataclass(frozen=True)
class Entry:
    """What is compared of one path: never times, link counts, inode numbers or owners."""

    kind: str  # "file", "dir", "symlink" (or the raw mode of anything else)
    mode: int  # stat.S_IMODE
    size: int = 0  # files only; directory sizes differ by design
    data: bytes = b""
    target: str = ""


Tree = dict[str, Entry]


def snapshot(root: Path) -> Tree:
    """Every path below root (relative, "/"-separated) and what is compared of it."""
    tree: Tree = {}

    def walk(d: Path, rel: str) -> None:
        for name in sorted(os.listdir(d)):
            p, r = d / name, rel + name
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                tree[r] = Entry("dir", mode)
                walk(p, r + "/")
            elif stat.S_ISLNK(st.st_mode):
                tree[r] = Entry("symlink", mode, target=os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                tree[r] = Entry("file", mode, st.st_size, p.read_bytes())
            else:
                tree[r] = Entry(f"mode {st.st_mode:o}", mode)

    walk(root, "")
    return tree


def differences(expected: Tree, actual: Tree) -> list[str]:
    """One line per difference between the local tree (expected) and the mount (actual)."""
    out = []
    for path in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(path), actual.get(path)
        if got is None:
            assert want is not None
            out.append(f"{path}: missing on the mount (local: {want.kind})")
        elif want is None:
            out.append(f"{path}: on the mount only ({got.kind})")
        elif want.kind != got.kind:
            out.append(f"{path}: {want.kind} locally, {got.kind} on the mount")
        else:
            if want.mode != got.mode:
                out.append(f"{path}: mode {want.mode:#o} locally, {got.mode:#o} on the mount")
            if want.size != got.size:
                out.append(f"{path}: size {want.size} locally, {got.size} on the mount")
            if want.data != got.data:
                at = next(
                    (
                        i
                        for i, (a, b) in enumerate(zip(want.data, got.data, strict=False))
                        if a != b
                    ),
                    min(len(want.data), len(got.data)),
                )
                out.append(
                    f"{path}: content differs from offset {at} "
                    f"({len(want.data)} bytes read locally, {len(got.data)} on the mount)"
                )
            if want.target != got.target:
                out.append(
                    f"{path}: symlink to {want.target!r} locally, {got.target!r} on the mount"
                )
    return out


# -- operations --------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    text: str  # how the failure message names this step
    run: Callable[[Path], object]


def outcome(op: Op, root: Path) -> str:
    """What the operation did under root, as text: "ok", a result summary or an errno name."""
    try:
        result = op.run(root)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    if isinstance(result, bytes):
        return f"ok: {len(result)} bytes, sha256 {hashlib.sha256(result).hexdigest()[:16]}"
    return "ok" if result is None else f"ok: {result!r}"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create(path: str, data: bytes, mode: int) -> Op:
    def run(root: Path) -> None:
        fd = os.open(root / path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    return Op(f"create {path} mode {mode:#o} with {len(data)} bytes", run)


def pwrite(path: str, data: bytes, offset: int) -> Op:
    def run(root: Path) -> int:
        fd = os.open(root / path, os.O_WRONLY)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    return Op(f"pwrite {len(data)} bytes at offset {offset} of {path}", run)


def append(path: str, data: bytes) -> Op:
    def run(root: Path) -> None:
        fd = os.open(root / path, os.O_WRONLY | os.O_APPEND)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    return Op(f"append {len(data)} bytes to {path}", run)


def truncate(path: str, size: int) -> Op:
    return Op(f"truncate {path} to {size}", lambda root: os.truncate(root / path, size))


def rename(src: str, dst: str) -> Op:
    return Op(f"rename {src} -> {dst}", lambda root: os.rename(root / src, root / dst))


def mkdir(path: str, mode: int) -> Op:
    return Op(f"mkdir {path} mode {mode:#o}", lambda root: os.mkdir(root / path, mode))


def rmdir(path: str) -> Op:
    return Op(f"rmdir {path}", lambda root: os.rmdir(root / path))


def unlink(path: str) -> Op:
    return Op(f"unlink {path}", lambda root: os.unlink(root / path))


def chmod(path: str, mode: int) -> Op:
    return Op(f"chmod {mode:#o} {path}", lambda root: os.chmod(root / path, mode))


def symlink(path: str, target: str) -> Op:
    return Op(f"symlink {path} -> {target}", lambda root: os.symlink(target, root / path))


def read(path: str) -> Op:
    return Op(f"read {path}", lambda root: (root / path).read_bytes())


def depth(path: str) -> int:
    return path.count("/") + 1 if path else 0


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class RandomOps:
    """Draws the next operation from a seeded RNG, aimed at the current local tree."""

    WEIGHTS = {
        "create": 12,
        "pwrite": 10,
        "truncate": 7,
        "append": 6,
        "rename_file": 8,
        "rename_dir": 6,
        "mkdir": 7,
        "rmdir": 5,
        "unlink": 6,
        "chmod": 6,
        "symlink": 4,
        "read": 8,
    }
    GROWING = ("create", "mkdir", "symlink")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tree: Tree = {}

    def next(self, tree: Tree) -> Op:
        self.tree = tree
        kinds = list(self.WEIGHTS)
        weights = [
            0 if len(tree) >= MAX_ENTRIES and k in self.GROWING else self.WEIGHTS[k] for k in kinds
        ]
        kind = self.rng.choices(kinds, weights)[0]
        op: Op = getattr(self, kind)()
        return op

    # -- picking paths --

    def of_kind(self, *kinds: str) -> list[str]:
        return [p for p, e in self.tree.items() if e.kind in kinds]

    def height(self, path: str) -> int:
        """How many levels the subtree at path spans (1 for a leaf)."""
        below = [p for p in self.tree if p.startswith(path + "/")]
        return max((depth(p) for p in below), default=depth(path)) - depth(path) + 1

    def new_path(self, room: int = 1) -> str:
        """parent/name in an existing directory; the name may already exist."""
        parents = [d for d in ["", *self.of_kind("dir")] if depth(d) + room <= MAX_DEPTH]
        return join(self.rng.choice(parents or [""]), self.rng.choice(NAMES))

    def any_path(self) -> str:
        """Mostly an existing entry of any kind, sometimes a name that may be missing."""
        if self.tree and self.rng.random() < 0.85:
            return self.rng.choice(sorted(self.tree))
        return self.new_path()

    def some(self, *kinds: str, p: float = 0.85) -> str:
        """An entry of one of these kinds; sometimes (or if none) any path at all."""
        found = self.of_kind(*kinds)
        if found and self.rng.random() < p:
            return self.rng.choice(found)
        return self.any_path()

    def file_size(self) -> int:
        r = self.rng.random()
        if r < 0.15:
            return 0
        if r < 0.7:
            return self.rng.randint(1, 4096)
        return self.rng.randint(4097, MAX_NEW_FILE)

    def current_size(self, path: str) -> int:
        e = self.tree.get(path)
        return e.size if e is not None else 0

    # -- one method per operation --

    def create(self) -> Op:
        existing = self.of_kind("file")
        path = self.rng.choice(existing) if existing and self.rng.random() < 0.2 else None
        path = path or self.new_path()
        return create(path, self.rng.randbytes(self.file_size()), self.rng.choice(MODES))

    def pwrite(self) -> Op:
        path = self.some("file", p=0.9)
        size = self.current_size(path)
        if self.rng.random() < 0.25:
            offset = size + self.rng.randint(1, 20000)  # leaves a hole
        else:
            offset = self.rng.randint(0, size)
        return pwrite(path, self.rng.randbytes(self.rng.randint(1, 8192)), offset)

    def truncate(self) -> Op:
        path = self.some("file", p=0.9)
        size = self.current_size(path)
        r = self.rng.random()
        if r < 0.15:
            new = 0
        elif r < 0.6:
            new = self.rng.randint(0, size)
        else:
            new = size + self.rng.randint(1, 40000)
        return truncate(path, new)

    def append(self) -> Op:
        return append(self.some("file", p=0.9), self.rng.randbytes(self.rng.randint(1, 8192)))

    def rename_file(self) -> Op:
        src = self.some("file", "symlink")
        if src in self.tree and self.tree[src].kind == "dir":
            return self.rename_dir(src)
        r = self.rng.random()
        files = self.of_kind("file", "symlink")
        dirs = self.of_kind("dir")
        if r < 0.3 and files:
            dst = self.rng.choice(files)  # replaces it (or is src itself)
        elif r < 0.4 and dirs:
            dst = self.rng.choice(dirs)  # EISDIR
        elif r < 0.6:
            dst = join(parent_of(src), self.rng.choice(NAMES))
        else:
            dst = self.new_path()  # often another directory
        return rename(src, dst)

    def rename_dir(self, src: str | None = None) -> Op:
        dirs = self.of_kind("dir")
        if not dirs:
            return self.mkdir()
        src = src or self.rng.choice(dirs)
        room = self.height(src)
        r = self.rng.random()
        empty = [
            d
            for d in dirs
            if not any(p.startswith(d + "/") for p in self.tree)
            and depth(d) + room - 1 <= MAX_DEPTH
        ]
        full = [d for d in dirs if any(p.startswith(d + "/") for p in self.tree)]
        if r < 0.2 and empty:
            dst = self.rng.choice(empty)  # replaces it (unless it is inside src)
        elif r < 0.35 and full:
            dst = self.rng.choice(full)  # ENOTEMPTY (or EINVAL, or a no-op onto itself)
        elif r < 0.42:
            dst = join(src, self.rng.choice(NAMES))  # into itself: EINVAL
        elif r < 0.5 and self.of_kind("file"):
            dst = self.rng.choice(self.of_kind("file"))  # ENOTDIR
        else:
            dst = self.new_path(room)
        return rename(src, dst)

    def mkdir(self) -> Op:
        path = self.any_path() if self.rng.random() < 0.15 else self.new_path()
        if depth(path) > MAX_DEPTH:
            path = self.new_path()
        return mkdir(path, self.rng.choice(MODES))

    def rmdir(self) -> Op:
        return rmdir(self.some("dir"))

    def unlink(self) -> Op:
        return unlink(self.some("file", "symlink"))

    def chmod(self) -> Op:
        return chmod(self.some("file", "dir", p=0.95), self.rng.choice(MODES))

    def symlink(self) -> Op:
        # Targets never contain "..": a link moved elsewhere must still resolve inside
        # the tree, or the local side would write outside it (and the mount into its root).
        path = self.new_path()
        parent = parent_of(path)
        below = sorted(p for p in self.tree if not parent or p.startswith(parent + "/"))
        r = self.rng.random()
        if r < 0.5 and below:
            target = os.path.relpath(self.rng.choice(below), parent or ".")  # exists, for now
        elif r < 0.7:
            target = f"{self.rng.choice(NAMES)}/{self.rng.choice(NAMES)}"
        else:
            target = self.rng.choice(NAMES) + self.rng.choice(("", "-missing"))
        return symlink(path, target)

    def read(self) -> Op:
        return read(self.some("file", p=0.9))


# -- the tests ---------------------------------------------------------------


def test_mount_behaves_like_a_local_directory(mount: Mount, fs: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("FEDFS_SEED", DEFAULT_SEED))
    n = int(os.environ.get("FEDFS_MODEL_OPS", DEFAULT_OPS))
    print(f"reference model seed={seed} ops={n}")
    local = tmp_path / "model"
    local.mkdir()
    ops = RandomOps(random.Random(seed))
    history: list[str] = []

    def failure(step: int, what: str) -> str:
        return (
            f"reference model seed={seed}, step {step} of {n}: {what}\n"
            f"last operations:\n  " + "\n  ".join(history[-HISTORY_SHOWN:]) + "\n"
            f"replay: FEDFS_SEED={seed} FEDFS_MODEL_OPS={step} pytest {__file__}"
        )

    tree = snapshot(local)
    for step in range(1, n + 1):
        op = ops.next(tree)
        expected, actual = outcome(op, local), outcome(op, fs)
        history.append(f"{step}: {op.text} -> local {expected}, mount {actual}")
        assert expected == actual, failure(
            step, f"{op.text}: {expected} locally, {actual} on the mount"
        )
        tree = snapshot(local)
        try:
            mounted = snapshot(fs)
        except OSError as e:
            raise AssertionError(
                failure(step, f"after {op.text}: reading the mount failed: {e!r}")
            ) from e
        diffs = differences(tree, mounted)
        assert not diffs, failure(step, f"after {op.text}:\n  " + "\n  ".join(diffs))

    assert mount.stop() == 0, failure(n, "the daemon exited non-zero on unmount")
    mount.start()
    diffs = differences(tree, snapshot(fs))
    assert not diffs, failure(n, "after unmount and mount again:\n  " + "\n  ".join(diffs))


def test_checker_reports_every_kind_of_difference(tmp_path: Path) -> None:
    local, other = tmp_path / "local", tmp_path / "other"
    for root in (local, other):
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_bytes(b"0123456789")
        (root / "g").write_bytes(b"same")
        os.symlink("d/f", root / "link")
    assert differences(snapshot(local), snapshot(other)) == []

    (other / "d" / "f").write_bytes(b"0123X56789")  # one byte
    os.chmod(local / "g", 0o644)
    os.chmod(other / "g", 0o640)  # one mode bit
    os.unlink(other / "link")
    os.symlink("d/g", other / "link")  # another target
    (other / "d" / "extra").write_bytes(b"")  # a path only one side has
    os.truncate(local / "d" / "f", 10)
    diffs = differences(snapshot(local), snapshot(other))
    assert diffs == [
        "d/extra: on the mount only (file)",
        "d/f: content differs from offset 4 (10 bytes read locally, 10 on the mount)",
        "g: mode 0o644 locally, 0o640 on the mount",
        "link: symlink to 'd/f' locally, 'd/g' on the mount",
    ]
    os.truncate(other / "g", 3)
    assert "g: size 4 locally, 3 on the mount" in differences(snapshot(local), snapshot(other))
    (local / "d" / "extra").mkdir()
    assert "d/extra: dir locally, file on the mount" in differences(
        snapshot(local), snapshot(other)
    )


def test_outcome_names_the_errno(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    assert outcome(rmdir("d"), tmp_path) == "ENOTEMPTY"
    assert outcome(unlink("missing"), tmp_path) == "ENOENT"
    assert outcome(read("d/f"), tmp_path) == outcome(read("d/f"), tmp_path)
    assert outcome(read("d/f"), tmp_path) != outcome(read("d"), tmp_path) == "EISDIR"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_ops_stay_small_and_inside_the_tree(seed: int, tmp_path: Path) -> None:
    """The generator keeps the tree small and shallow, and no operation escapes it."""
    root = tmp_path / "model"
    root.mkdir()
    ops = RandomOps(random.Random(seed))
    tree = snapshot(root)
    for _ in range(500):
        outcome(ops.next(tree), root)
        tree = snapshot(root)
        assert len(tree) <= MAX_ENTRIES
        assert max((depth(p) for p in tree), default=0) <= MAX_DEPTH
    assert os.listdir(tmp_path) == ["model"]
