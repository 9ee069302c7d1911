"""Data integrity exerciser: long random sequences of file I/O checked byte for byte.

Drives read, write, O_APPEND write, truncate (path and ftruncate), mmap read and
write, fallocate and re-open (close and open again) on one file and then on many,
and compares every byte read against an in-memory model of what each file must
hold. At chosen points (and at the end) every handle is closed, the mount is
unmounted and mounted again, and the whole model is compared with the tree.

fedfs has no fallocate request (pyfuse3 offers none), so the kernel answers
fallocate(2) with EOPNOTSUPP. The exerciser records that and exercises what
programs get instead: posix_fallocate(3), which glibc then emulates with writes.
On a filesystem with fallocate(2) it exercises the real modes too.

The seed is printed first; a miscompare names the seed, the operation index, the
file, the offset and a short diff, and ends with the command that replays it.

    python -m tests.exerciser --ops 200000 --seed 7      # starts moto and a fedfs mount (root)
    python -m tests.exerciser --dir /tmp/x --ops 20000   # any directory, no remount
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
KiB = 1024
MiB = 1024 * KiB
HISTORY = 12
DIFF_CONTEXT = 16

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself (Python has only posix_fallocate, which glibc may emulate)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Miscompare(AssertionError):
    """The tree does not hold what the model says, or an operation failed."""


@dataclass
class Settings:
    seed: int
    ops: int = 20_000
    files: int = 8
    single_file_ops: int | None = None  # the first ops touch only one file; default ops // 3
    max_size: int = 2 * MiB + 5 * KiB  # crosses 1 MiB cache blocks now and then
    max_io: int = 16 * KiB  # most operations are far smaller (see Exerciser.length)
    remounts: int = 2  # checks of the whole tree after unmount/mount, the last at the end
    verify_every: int = 1000  # whole-tree check through the open mount

    @property
    def first_phase(self) -> int:
        return self.ops // 3 if self.single_file_ops is None else self.single_file_ops

    def replay(self, ops: int | None = None) -> str:
        return (
            f"python -m tests.exerciser --seed {self.seed} --ops {ops or self.ops} "
            f"--files {self.files} --single-file-ops {self.first_phase} "
            f"--max-size {self.max_size} --max-io {self.max_io} --remounts {self.remounts}"
        )


@dataclass
class Report:
    ops: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    remounts: int = 0
    fallocate: str = ""
    bytes_checked: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (
            f"{self.ops} operations in {self.seconds:.1f}s, {self.bytes_checked} bytes compared, "
            f"{self.remounts} remounts, 0 miscompares; fallocate(2): {self.fallocate}\n  {counts}"
        )


def first_difference(want: bytes, got: bytes) -> int | None:
    """Index of the first byte that differs (a length difference counts), or None."""
    if want == got:
        return None
    n = min(len(want), len(got))
    for i in range(0, n, 4096):  # find the chunk fast, then the byte
        end = min(i + 4096, n)
        if want[i:end] != got[i:end]:
            return next(j for j in range(i, end) if want[j] != got[j])
    return n


def short_diff(want: bytes, got: bytes, at: int, base: int) -> str:
    """A few bytes either side of the first difference, as hex, with file offsets."""
    lo = max(0, at - DIFF_CONTEXT)
    hi = at + DIFF_CONTEXT
    return (
        f"first difference at file offset {base + at} ({len(want)} bytes expected, "
        f"{len(got)} read)\n"
        f"  expected [{base + lo}:{base + min(hi, len(want))}]: {want[lo:hi].hex(' ')}\n"
        f"  actual   [{base + lo}:{base + min(hi, len(got))}]: {got[lo:hi].hex(' ')}"
    )


def probe_fallocate(root: Path) -> str:
    """Whether fallocate(2) works under root: "supported" or the errno name it gives."""
    path = root / ".exerciser-fallocate-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fallocate(fd, 0, 0, 4096)
        return "supported"
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:  # errorcode names this value ENOTSUP
            return "EOPNOTSUPP"
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    finally:
        os.close(fd)
        os.unlink(path)


class Exerciser:
    """Runs the random operations of `settings` in `root` and checks them against the model.

    remount: closes nothing itself; called with every handle closed, it must unmount
    and mount `root` again (None: the whole-tree check runs on the live tree).
    """

    WEIGHTS = {
        "read": 22,
        "write": 22,
        "append": 4,
        "truncate": 6,
        "mmap_read": 6,
        "mmap_write": 6,
        "fallocate": 4,
        "reopen": 7,
        "close": 3,
        "fsync": 2,
        "stat": 3,
        "verify_file": 3,
        "drop_pages": 4,
        "second_handle": 4,
    }

    def __init__(
        self,
        root: Path,
        settings: Settings,
        remount: Callable[[], None] | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.root = root
        self.s = settings
        self.remount = remount
        self.say = say
        self.rng = random.Random(settings.seed)
        self.names = [f"f{i:03d}" for i in range(settings.files)]
        self.model: dict[str, bytearray] = {}
        self.fds: dict[str, int] = {}  # one read-write handle per file, often kept open
        self.readers: dict[str, int] = {}  # a second, read-only handle
        self.history: deque[str] = deque(maxlen=HISTORY)
        self.index = 0
        self.report = Report()
        self.raw_fallocate = False

    # -- reporting -------------------------------------------------------

    def fail(self, what: str, name: str | None = None, offset: int | None = None) -> Miscompare:
        where = f" file={name}" if name else ""
        where += f" offset={offset}" if offset is not None else ""
        return Miscompare(
            f"exerciser miscompare: seed={self.s.seed} op={self.index}{where}: {what}\n"
            "last operations:\n  " + "\n  ".join(self.history) + "\n"
            f"replay: {self.s.replay(self.index)}"
        )

    def compare(self, name: str, offset: int, want: bytes, got: bytes, how: str) -> None:
        at = first_difference(want, got)
        self.report.bytes_checked += len(got)
        if at is not None:
            raise self.fail(
                f"{how} of {len(want)} bytes differs from the model\n"
                + short_diff(want, got, at, offset),
                name,
                offset + at,
            )

    @contextlib.contextmanager
    def step(self, text: str, name: str | None = None, offset: int | None = None) -> Iterator[None]:
        self.history.append(f"{self.index}: {text}")
        try:
            yield
        except OSError as e:
            code = errno.errorcode.get(e.errno or 0, str(e.errno))
            raise self.fail(f"{text} failed with {code}: {e}", name, offset) from e

    # -- choosing --------------------------------------------------------

    def pick(self) -> str:
        if self.index < self.s.first_phase:
            return self.names[0]
        return self.rng.choice(self.names)

    def length(self) -> int:
        """Mostly small: a byte or two, a few hundred, a page or so; rarely up to max_io."""
        r = self.rng.random()
        if r < 0.2:
            return self.rng.randint(1, 16)
        if r < 0.6:
            return self.rng.randint(17, 1024)
        if r < 0.9:
            return self.rng.randint(1025, 8 * KiB)
        return self.rng.randint(1, self.s.max_io)

    def offset(self, size: int, n: int = 0) -> int:
        """Mostly inside the file, sometimes at or past its end, never past max_size."""
        r = self.rng.random()
        if r < 0.1 or size == 0:
            off = size
        elif r < 0.2:
            off = size + self.rng.randint(1, 64 * KiB)  # a hole
        elif r < 0.3:
            off = max(0, size - self.rng.randint(1, 64))  # around the end
        else:
            off = self.rng.randint(0, size - 1)
        return max(0, min(off, self.s.max_size - n))

    def fd(self, name: str) -> int:
        fd = self.fds.get(name)
        if fd is None:
            with self.step(f"open {name} O_RDWR", name):
                fd = self.fds[name] = os.open(self.root / name, os.O_RDWR)
        return fd

    # -- operations ------------------------------------------------------

    def op_read(self, name: str) -> None:
        fd, data = self.fd(name), self.model[name]
        off, n = self.offset(len(data)), self.length()
        with self.step(f"pread {name} [{off}:+{n}]", name, off):
            got = os.pread(fd, n, off)
        self.compare(name, off, bytes(data[off : off + n]), got, "pread")

    def op_write(self, name: str) -> None:
        fd, data = self.fd(name), self.model[name]
        n = self.length()
        off = self.offset(len(data), n)
        buf = self.rng.randbytes(n)
        with self.step(f"pwrite {name} [{off}:+{n}]", name, off):
            written = os.pwrite(fd, buf, off)
        if written != n:
            raise self.fail(f"pwrite wrote {written} of {n} bytes", name, off)
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off : off + n] = buf

    def op_append(self, name: str) -> None:
        data = self.model[name]
        n = min(self.length(), self.s.max_size - len(data))
        if n <= 0:
            return self.op_truncate(name)
        buf = self.rng.randbytes(n)
        with self.step(f"append {n} bytes to {name} (own O_APPEND handle)", name, len(data)):
            fd = os.open(self.root / name, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        data.extend(buf)
        return None

    def op_truncate(self, name: str) -> None:
        data = self.model[name]
        r = self.rng.random()
        if r < 0.1:
            size = 0
        elif r < 0.55:
            size = self.rng.randint(0, len(data))
        elif r < 0.9:
            size = min(self.s.max_size, len(data) + self.rng.randint(1, 32 * KiB))
        else:
            size = self.rng.randint(0, self.s.max_size)  # sometimes large and sparse
        if name in self.fds and self.rng.random() < 0.5:
            with self.step(f"ftruncate {name} to {size}", name, size):
                os.ftruncate(self.fds[name], size)
        else:
            open_ = "open" if name in self.fds else "no open handle"
            with self.step(f"truncate {name} to {size} by path ({open_})", name, size):
                os.truncate(self.root / name, size)
        if size < len(data):
            del data[size:]
        else:
            data.extend(bytes(size - len(data)))

    def op_mmap_read(self, name: str) -> None:
        data = self.model[name]
        if not data:
            return self.op_read(name)
        fd = self.fd(name)
        off = self.rng.randint(0, len(data) - 1)
        n = min(self.length(), len(data) - off)
        with (
            self.step(f"mmap read {name} [{off}:+{n}] (mapping {len(data)})", name, off),
            mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ) as m,
        ):
            got = m[off : off + n]
        self.compare(name, off, bytes(data[off : off + n]), got, "mmap read")
        return None

    def op_mmap_write(self, name: str) -> None:
        data = self.model[name]
        if not data:
            return self.op_write(name)
        fd = self.fd(name)
        off = self.rng.randint(0, len(data) - 1)
        n = min(self.length(), len(data) - off)
        buf = self.rng.randbytes(n)
        sync = self.rng.random() < 0.5
        how = "msync" if sync else "no msync"
        with (
            self.step(f"mmap write {name} [{off}:+{n}] ({how})", name, off),
            mmap.mmap(fd, len(data), mmap.MAP_SHARED) as m,
        ):
            m[off : off + n] = buf
            if sync:
                m.flush()
        data[off : off + n] = buf
        return None

    def op_fallocate(self, name: str) -> None:
        fd, data = self.fd(name), self.model[name]
        n = self.length()
        off = self.offset(len(data), n)
        mode = 0
        if self.raw_fallocate:
            mode = self.rng.choice(
                [
                    0,
                    FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_ZERO_RANGE,
                ]
            )
        if mode == 0:
            # posix_fallocate: the syscall, or glibc's emulation where it is refused
            with self.step(f"posix_fallocate {name} [{off}:+{n}]", name, off):
                os.posix_fallocate(fd, off, n)
            if off + n > len(data):
                data.extend(bytes(off + n - len(data)))
            return
        with self.step(f"fallocate mode {mode:#x} {name} [{off}:+{n}]", name, off):
            fallocate(fd, mode, off, n)
        end = off + n if not mode & FALLOC_FL_KEEP_SIZE else min(off + n, len(data))
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            data[off:end] = bytes(max(0, end - off))
        if end > len(data):
            data.extend(bytes(end - len(data)))

    def op_reopen(self, name: str) -> None:
        self.op_close(name)
        trunc = self.rng.random() < 0.05
        flags = os.O_RDWR | (os.O_TRUNC if trunc else 0)
        with self.step(f"reopen {name}" + (" O_TRUNC" if trunc else ""), name):
            self.fds[name] = os.open(self.root / name, flags)
        if trunc:
            self.model[name].clear()

    def op_close(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            with self.step(f"close {name}", name):
                os.close(fd)

    def op_fsync(self, name: str) -> None:
        with self.step(f"fsync {name}", name):
            os.fsync(self.fd(name))

    def op_stat(self, name: str) -> None:
        with self.step(f"stat {name}", name):
            size = os.stat(self.root / name).st_size
        if size != len(self.model[name]):
            raise self.fail(f"stat says {size} bytes, the model {len(self.model[name])}", name)

    def op_drop_pages(self, name: str) -> None:
        """Make the kernel forget its cached pages, so the next reads reach the filesystem."""
        with self.step(f"fadvise DONTNEED {name}", name):
            os.posix_fadvise(self.fd(name), 0, 0, os.POSIX_FADV_DONTNEED)

    def op_second_handle(self, name: str) -> None:
        """Read through a read-only handle opened before the latest writes of the main one."""
        fd = self.readers.get(name)
        if fd is None or self.rng.random() < 0.3:
            if fd is not None:
                os.close(fd)
            with self.step(f"open {name} O_RDONLY (second handle)", name):
                fd = self.readers[name] = os.open(self.root / name, os.O_RDONLY)
            self.fd(name)  # and keep (or open) the read-write one
            return self.op_write(name)
        data = self.model[name]
        off, n = self.offset(len(data)), self.length()
        with self.step(f"pread {name} [{off}:+{n}] through the second handle", name, off):
            got = os.pread(fd, n, off)
        self.compare(name, off, bytes(data[off : off + n]), got, "pread (second handle)")
        return None

    def op_verify_file(self, name: str) -> None:
        self.verify_file(name, "read through a new handle")

    # -- whole files and trees -------------------------------------------

    def verify_file(self, name: str, how: str) -> None:
        with self.step(f"verify {name} ({how})", name, 0):
            fd = os.open(self.root / name, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                chunks = []
                while chunk := os.read(fd, 1 * MiB):
                    chunks.append(chunk)
            finally:
                os.close(fd)
        want = bytes(self.model[name])
        if size != len(want):
            raise self.fail(f"fstat says {size} bytes, the model {len(want)} ({how})", name)
        self.compare(name, 0, want, b"".join(chunks), how)

    def verify_tree(self, how: str) -> None:
        with self.step(f"list the tree ({how})"):
            names = sorted(os.listdir(self.root))
        if names != sorted(self.model):
            raise self.fail(f"the tree holds {names}, the model {sorted(self.model)} ({how})")
        for name in names:
            self.verify_file(name, how)

    def close_all(self) -> None:
        for name in list(self.fds):
            self.op_close(name)
        while self.readers:
            os.close(self.readers.popitem()[1])

    def checkpoint(self) -> None:
        self.close_all()
        if self.remount is not None:
            self.history.append(f"{self.index}: unmount and mount again")
            self.remount()
            self.report.remounts += 1
            self.verify_tree("after unmount and mount again")
        else:
            self.verify_tree("every handle closed")

    # -- the run ---------------------------------------------------------

    def run(self) -> Report:
        s = self.s
        self.say(
            f"exerciser seed={s.seed} ops={s.ops} files={s.files} "
            f"(the first {s.first_phase} on {self.names[0]} only) max_size={s.max_size} "
            f"remounts={s.remounts} in {self.root}"
        )
        began = time.monotonic()
        self.report.fallocate = probe_fallocate(self.root)
        self.raw_fallocate = self.report.fallocate == "supported"
        if not self.raw_fallocate:
            self.say(
                f"fallocate(2) gives {self.report.fallocate} here: exercising "
                "posix_fallocate(3) (glibc emulates it with writes) instead"
            )
        for name in self.names:
            buf = self.rng.randbytes(self.rng.randint(0, 4 * KiB))
            with self.step(f"create {name} with {len(buf)} bytes", name):
                (self.root / name).write_bytes(buf)
            self.model[name] = bytearray(buf)
        points = (
            {s.ops * k // s.remounts for k in range(1, s.remounts + 1)} if s.remounts else set()
        )
        kinds = list(self.WEIGHTS)
        weights = [self.WEIGHTS[k] for k in kinds]
        for self.index in range(1, s.ops + 1):
            kind = self.rng.choices(kinds, weights)[0]
            getattr(self, f"op_{kind}")(self.pick())
            self.report.counts[kind] = self.report.counts.get(kind, 0) + 1
            if self.index in points:
                self.checkpoint()
            elif s.verify_every and self.index % s.verify_every == 0:
                self.verify_tree(f"after op {self.index}, handles open")
        if s.ops not in points:
            self.checkpoint()
        self.close_all()
        self.report.ops = s.ops
        self.report.seconds = time.monotonic() - began
        self.say(f"exerciser seed={s.seed}: {self.report}")
        return self.report


# -- a self-contained fedfs mount for the command line ---------------------------


@contextlib.contextmanager
def fedfs_mount(extra: str = "") -> Iterator[tuple[Path, Callable[[], None]]]:
    """A moto S3 server and a fedfs mount of a fresh bucket: (bucket dir, remount)."""
    from tests.support import MotoServer, Mount, write_config

    work = Path(tempfile.mkdtemp(prefix="fedfs-exerciser-"))
    work.chmod(0o755)
    server = MotoServer(log=work / "moto.log").start()
    mount: Mount | None = None
    try:
        server.client().create_bucket(Bucket="exerciser")
        cfg = write_config(
            work / "exerciser.toml",
            server.url,
            [("exerciser", "user:root")],
            work / "cache",
            extra=extra,
            socket=work / "ctl.sock",
        )
        mount = Mount(cfg, work / "mnt", work / "fedfs.log").start()

        def remount() -> None:
            assert mount is not None
            code = mount.stop()
            if code != 0:
                raise Miscompare(f"fedfs exited with {code} on unmount; log: {mount.log}")
            # Forget the clean cache, so the checks after the mount read from S3.
            shutil.rmtree(work / "cache" / "clean")
            mount.start()

        yield mount.path("exerciser"), remount
    finally:
        if mount is not None and mount.proc is not None:
            mount.stop()
        server.stop()
        if mount is not None and "Traceback" in mount.log_text():
            print(f"the fedfs log holds a traceback: {mount.log}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


# Lines of the [cache] table: small blocks, so files of a few MiB cross block
# boundaries, and quick uploads, so reads after a close often come from S3.
EXERCISER_MOUNT_OPTIONS = 'block_size = "1MiB"\nflush_delay = 0.05'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.exerciser",
        description=(
            "Random read/write/truncate/mmap/fallocate/re-open sequences, every byte checked "
            "against an in-memory model, and the whole tree again after unmount and mount. "
            "Without --dir it starts moto's S3 server and a fedfs mount (needs root and "
            "/dev/fuse). Exit 1 on the first miscompare, which names seed, op, file and offset."
        ),
    )
    p.add_argument("--seed", type=int, help="random seed (default: from the clock; printed)")
    p.add_argument("--ops", type=int, default=20_000, help="operations to run (default 20000)")
    p.add_argument("--files", type=int, default=8, help="files in the many-files phase")
    p.add_argument(
        "--single-file-ops", type=int, help="the first N ops touch one file (default ops/3)"
    )
    p.add_argument("--max-size", type=int, default=Settings.max_size, help="largest file, bytes")
    p.add_argument("--max-io", type=int, default=Settings.max_io, help="largest read/write")
    p.add_argument(
        "--remounts", type=int, default=2, help="unmount/mount checks spread over the run"
    )
    p.add_argument("--verify-every", type=int, default=1000, help="whole-tree check interval")
    p.add_argument("--dir", type=Path, help="exercise this existing directory instead")
    p.add_argument(
        "--remount-cmd", help="with --dir: shell command that unmounts and mounts it again"
    )
    a = p.parse_args(argv)
    settings = Settings(
        seed=a.seed if a.seed is not None else int(time.time() * 1000) % 2**31,
        ops=a.ops,
        files=a.files,
        single_file_ops=a.single_file_ops,
        max_size=a.max_size,
        max_io=a.max_io,
        remounts=a.remounts,
        verify_every=a.verify_every,
    )
    try:
        if a.dir is not None:
            remount: Callable[[], None] | None = None
            if a.remount_cmd:
                cmd = shlex.split(a.remount_cmd)

                def remount() -> None:
                    subprocess.run(cmd, check=True)

            Exerciser(a.dir, settings, remount).run()
        else:
            with fedfs_mount(EXERCISER_MOUNT_OPTIONS) as (root, remount_fn):
                Exerciser(root, settings, remount_fn).run()
    except Miscompare as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
