"""Compare fedfs with a local directory, s3fs, rclone and bare boto3, against one S3 server.

Run as root, after scripts/install and scripts/ceph-rgw-install:

    python tests/perf/compare.py --backend ceph|moto [--quick] [--json FILE] [--profile DIR]

One run starts the S3 server (a single-node Ceph RGW or moto, on 127.0.0.1), seeds
it with boto3, measures every tool against it in turn, prints the figures and the
ratios the project's targets are stated in (PASS/FAIL), and stops everything it
started, also on failure or Ctrl-C. Not part of the pytest suite. docs/PERFORMANCE.md
explains the measurements and holds the latest results. --profile DIR attaches
py-spy to the fedfs daemon during each fedfs measurement (slower; use for diagnosis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import botocore.config  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.backends.ceph_rgw import CephRgw  # noqa: E402
from tests.support import KEY, MotoServer  # noqa: E402

MiB = 1024**2
READERS = 4  # readers of as many different cold files at once (the aggregate row)
IO_BLOCK = MiB  # dd-like: 1 MiB write() and read() calls
SMALL_FILE = 4096
BUCKET = "cmp"
TOOLS = ("local", "passthrough", "boto3", "fedfs", "s3fs", "rclone")
PASSTHROUGH = Path(__file__).with_name("passthrough.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
console = Console(width=None if sys.stdout.isatty() else 130)


@dataclass(frozen=True)
class Sizes:
    big: int  # the sequentially written and read file
    creates: int  # small files created one after another
    listing: int  # objects in the directory `ls -l` lists
    moved: int  # files in the directory `mv` renames

    @classmethod
    def full(cls) -> Sizes:
        return cls(big=1024 * MiB, creates=1000, listing=10_000, moved=1000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(big=256 * MiB, creates=200, listing=2000, moved=200)


@dataclass
class Server:
    url: str
    access_key: str
    secret_key: str
    pids: Callable[[], list[int]]  # the server's processes, for its CPU time
    stop: Callable[[], None]
    bring_up: float
    version: str
    requests: Callable[[], int] | None = None  # requests the server answered so far


@dataclass
class Measurement:
    wall: float | None = None
    value: float | None = None  # in the unit of its row (MiB/s, files/s or s)
    daemon_cpu: float | None = None  # the tool's own process (FUSE daemon), seconds
    server_cpu: float | None = None
    load: float | None = None  # 1-min load average at the end, other work on the machine
    s3_requests: int | None = None  # as counted by the server (Ceph only)
    fedfs_s3_requests: int | None = None  # as counted by fedfs (`fedfs status`)
    fuse_requests: int | None = None  # FUSE requests fedfs served (`fedfs status`)
    heads: int | None = None  # HEAD requests fedfs sent (`fedfs status`, by operation)
    error: str | None = None
    note: str | None = None


@dataclass
class Results:
    backend: str
    sizes: Sizes
    machine: dict[str, Any]
    server: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, dict[str, Measurement]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # failures and surprises, for the reader

    def put(self, tool: str, metric: str, m: Measurement) -> None:
        self.figures.setdefault(tool, {})[metric] = m

    def value(self, tool: str, metric: str) -> float | None:
        m = self.figures.get(tool, {}).get(metric)
        return None if m is None else m.value


# -- small tools ---------------------------------------------------------


def run(*cmd: str | Path, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(
            f"{' '.join(str(c) for c in cmd)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}"
        )
    return r


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def best_of(tries: int, fn: Callable[[], object], before: Callable[[], object] = int) -> float:
    """The shortest of `tries` timed calls of fn (before() runs untimed ahead of each)."""
    best = float("inf")
    for _ in range(tries):
        before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def hottest_frames(profile: Path, top: int = 5) -> str:
    """The functions most samples were in, from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in profile.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                frame = stack.rsplit(";", 1)[-1]
                own[frame] = own.get(frame, 0) + int(count)
                total += int(count)
    hot = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return "; ".join(f"{100 * n / total:.0f}% {frame}" for frame, n in hot) if total else ""


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return total / CLK_TCK


def pids_with_arg(arg: str) -> list[int]:
    """Processes with `arg` as one of their command-line arguments (a mount point)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if arg.encode() in argv:
                    found.append(int(entry))
    return found


def write_file(path: Path, size: int) -> None:
    """dd-like: 1 MiB write() calls until size, then close(); no fsync."""
    block = _pattern()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // IO_BLOCK):
            os.write(fd, block)
    finally:
        os.close(fd)


def read_file(path: Path) -> int:
    """dd-like: 1 MiB read() calls to the end; the number of bytes read."""
    buf = bytearray(IO_BLOCK)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            total += n
    finally:
        os.close(fd)
    return total


CHANGED_BYTE = 0xA5  # the byte a partial rewrite writes into the uploaded file


def change_byte(path: Path, offset: int) -> None:
    """Open an existing file for writing, change one byte, close; no fsync."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([CHANGED_BYTE]), offset)
    finally:
        os.close(fd)


def check_content(path: Path, size: int) -> None:
    """Outside the timed part: the first and last MiB hold the written pattern."""
    block = _pattern()
    with open(path, "rb") as f:
        head = f.read(IO_BLOCK)
        f.seek(size - IO_BLOCK)
        tail = f.read(IO_BLOCK)
    if head != block or tail != block:
        raise RuntimeError(f"{path}: content differs from what was written")


_PATTERN: list[bytes] = []


def _pattern() -> bytes:
    if not _PATTERN:
        _PATTERN.append(os.urandom(IO_BLOCK))
    return _PATTERN[0]


def small_creates(directory: Path, n: int) -> None:
    data = os.urandom(SMALL_FILE)
    for i in range(n):
        fd = os.open(directory / f"f{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def ls_l(directory: Path, expect: int) -> None:
    r = run("ls", "-l", directory, timeout=1800)
    entries = len(r.stdout.splitlines()) - 1  # "total N" first
    if entries != expect:
        raise RuntimeError(f"ls -l {directory} showed {entries} entries, expected {expect}")


# -- the S3 server ---------------------------------------------------------


def start_server(backend: str, workdir: Path) -> Server:
    began = time.monotonic()
    if backend == "ceph":
        rgw = CephRgw(workdir / "ceph").start()
        version = run("radosgw", "--version").stdout.split("(")[0].strip()
        return Server(
            rgw.url,
            rgw.access_key,
            rgw.secret_key,
            rgw.pids,  # this cluster's own: other Ceph clusters may run on the machine
            rgw.stop,
            time.monotonic() - began,
            version,
            lambda: rgw.request_counts()["req"],
        )
    moto = MotoServer(log=workdir / "moto.log").start()
    import moto as moto_pkg

    assert moto.proc is not None
    pid = moto.proc.pid
    return Server(
        moto.url,
        KEY,
        KEY,
        lambda: [pid],
        moto.stop,
        time.monotonic() - began,
        f"moto {moto_pkg.__version__}",
    )


def s3_client(server: Server, connections: int = 32) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=botocore.config.Config(
            max_pool_connections=connections,
            retries={"mode": "standard", "max_attempts": 5},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def big_key(i: int) -> str:
    """The key of reader i's cold file (0 is the one the single-reader row reads)."""
    return "shared/big.bin" if i == 0 else f"shared/big-{i}.bin"


def count_keys(s3: Any, prefix: str) -> int:
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        n += page.get("KeyCount", 0)
    return n


def object_size(s3: Any, key: str) -> int | None:
    try:
        return int(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
    except Exception:
        return None


# -- mounts --------------------------------------------------------------


class Mount:
    """One FUSE mount of the benchmark bucket by one tool; stop() or kill() ends it."""

    tool = ""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.dir = bench.workdir / f"{self.tool}-{name}"
        self.dir.mkdir()
        self.mountpoint = self.dir / "mnt"
        self.mountpoint.mkdir()
        self.log = self.dir / "log"

    @property
    def root(self) -> Path:
        """The bucket's directory on the mount."""
        return self.mountpoint

    def pids(self) -> list[int]:
        return pids_with_arg(str(self.mountpoint))

    def start(self) -> Mount:
        self.bench.mounts.append(self)
        try:
            self._mount()
        except Exception as e:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"{e}\n{self.log}:\n{tail}") from None
        wait_for(lambda: os.path.ismount(self.mountpoint), f"{self.tool} on {self.mountpoint}")
        wait_for(lambda: self.root.is_dir(), f"{self.root} to answer")
        return self

    def stop(self) -> None:
        """Unmount the orderly way (uploads finish) and wait for the daemon to exit."""
        pids = self.pids()
        if os.path.ismount(self.mountpoint):
            self._unmount()
        wait_for(lambda: not any(_alive(p) for p in pids), f"{self.tool} to exit", 600)
        self.bench.mounts.remove(self)

    def kill(self) -> None:
        """Clean-up after a failure: lazy unmount, then SIGTERM what is left."""
        subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def _mount(self) -> None:
        raise NotImplementedError

    def _unmount(self) -> None:
        run("fusermount3", "-u", self.mountpoint)


def daemonize(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run a command that forks a daemon: output to log, never to a pipe the daemon keeps open."""
    with open(log, "ab") as out:
        code = subprocess.run(
            cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, timeout=120
        ).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {code}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class FedfsMount(Mount):
    tool = "fedfs"

    def __init__(self, bench: Bench, name: str, ttl: float | None = None) -> None:
        super().__init__(bench, name)
        self.ttl = ttl if ttl is not None else bench.args.fedfs_ttl

    @property
    def root(self) -> Path:
        return self.mountpoint / BUCKET  # fedfs shows each configured bucket as a directory

    def _mount(self) -> None:
        s = self.bench.server
        socket = Path(tempfile.gettempdir()) / f"fedfs-cmp-{os.getpid()}-{self.dir.name}.sock"
        self.config = self.dir / "fedfs.toml"
        self.config.write_text(
            f"""[store]
endpoint = "{s.url}"
access_key = "{s.access_key}"
secret_key = "{s.secret_key}"
{"".join(line + chr(10) for line in self.bench.args.fedfs_store)}
[cache]
dir = "{self.dir / "cache"}"
size = "8GiB"

[policy]
state_dir = "{self.dir / "state"}"
site_dir = "{self.dir / "site"}"

[control]
socket = "{socket}"

{self._fs_section()}
[[buckets]]
name = "{BUCKET}"
owner = "user:root"
"""
        )
        run(*fedfs_cmd(), "mount", "--config", self.config, self.mountpoint, "--log-file", self.log)

    def _fs_section(self) -> str:
        ttl, lines = self.ttl, []
        if ttl is not None:  # else fedfs's defaults: 1 s for attributes, entries, listings
            keys = ("attr_timeout", "entry_timeout", "negative_timeout", "dir_timeout")
            lines += [f"{k} = {float(ttl)}\n" for k in keys]
        if self.bench.args.fedfs_no_index:
            lines.append("metadata_index = false\n")
        return "[fs]\n" + "".join(lines) if lines else ""

    def _unmount(self) -> None:
        run(*fedfs_cmd(), "umount", self.mountpoint, timeout=900)

    def status(self) -> dict[str, Any]:
        try:
            out = run(*fedfs_cmd(), "status", "--json", self.mountpoint, timeout=60).stdout
            return dict(json.loads(out))
        except Exception:
            return {}

    def sync(self, path: Path) -> None:
        run(*fedfs_cmd(), "sync", "--quiet", path, timeout=1800)


def fedfs_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("fedfs")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fedfs.cli"]


class S3fsMount(Mount):
    tool = "s3fs"

    def _mount(self) -> None:
        s = self.bench.server
        passwd = self.dir / "passwd"
        passwd.write_text(f"{s.access_key}:{s.secret_key}\n")
        passwd.chmod(0o600)
        options = f"url={s.url},use_path_request_style,passwd_file={passwd}"
        daemonize(["s3fs", BUCKET, str(self.mountpoint), "-o", options], self.log)


class RcloneMount(Mount):
    tool = "rclone"

    def _mount(self) -> None:
        s = self.bench.server
        provider = "Ceph" if self.bench.backend == "ceph" else "Other"
        self.config = self.dir / "rclone.conf"
        self.config.write_text(
            f"""[cmp]
type = s3
provider = {provider}
access_key_id = {s.access_key}
secret_access_key = {s.secret_key}
endpoint = {s.url}
region = us-east-1
force_path_style = true
"""
        )
        # The sandbox's AWS_CA_BUNDLE makes rclone's S3 client fail on an http endpoint.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        daemonize(
            [
                "rclone",
                "mount",
                f"cmp:{BUCKET}",
                str(self.mountpoint),
                "--config",
                str(self.config),
                "--vfs-cache-mode",
                "writes",
                "--cache-dir",
                str(self.dir / "cache"),
                "--log-file",
                str(self.log),
                "--daemon",
            ],
            self.log,
            env,
        )


# -- the benchmark ---------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.backend: str = args.backend
        self.sizes = Sizes.quick() if args.quick else Sizes.full()
        self.workdir = workdir
        self.mounts: list[Mount] = []
        self.profile_dir: Path | None = args.profile
        self.results = Results(self.backend, self.sizes, machine_facts(workdir))
        self.server: Server
        self.s3: Any = None
        self.local = workdir / "local"

    # -- measuring --

    @contextlib.contextmanager
    def measure(
        self,
        tool: str,
        metric: str,
        mount: Mount | None = None,
        per: float | None = None,
        rate: bool = False,
    ) -> Iterator[Measurement]:
        """Time the block; value = per / seconds if rate (MiB/s, files/s), else seconds.

        A failure is recorded and the run goes on with the next measurement.
        """
        m = Measurement()
        daemon = mount.pids() if mount is not None else []
        counters0 = self._counters(mount)
        profiler = self._profile(tool, metric, daemon)
        d0, s0 = cpu_seconds(daemon), cpu_seconds(self.server.pids())
        t0 = time.perf_counter()
        try:
            yield m
        except Exception as e:
            m.error = f"{type(e).__name__}: {e}"[:300]
            console.print(f"[red]{tool} {metric} failed:[/] {m.error}")
        else:
            if m.wall is None:  # else the block timed itself (the best of several tries)
                m.wall = time.perf_counter() - t0
            if per is not None and rate:
                m.value = per / m.wall
            else:
                m.value = m.wall
        finally:
            m.daemon_cpu = round(cpu_seconds(daemon) - d0, 3) if daemon else None
            m.server_cpu = round(cpu_seconds(self.server.pids()) - s0, 3)
            m.load = os.getloadavg()[0]
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
                m.note = hottest_frames(self._profile_path(metric))
            counters = self._counters(mount)
            for name, before in counters0.items():
                after = counters.get(name)
                if after is not None and before is not None:
                    setattr(m, name, after - before)
            self.results.put(tool, metric, m)
            shown = "error" if m.value is None else f"{m.value:,.2f}"
            console.print(f"  {tool:<11} {metric:<22} {shown}", highlight=False)

    def _counters(self, mount: Mount | None) -> dict[str, int | None]:
        """Request counters of the server and of fedfs, read outside the timed part."""
        counters: dict[str, int | None] = {"s3_requests": None}
        with contextlib.suppress(Exception):
            if self.server.requests is not None:
                counters["s3_requests"] = self.server.requests()
        if isinstance(mount, FedfsMount):
            status = mount.status()
            counters["fedfs_s3_requests"] = status.get("s3", {}).get("requests")
            counters["fuse_requests"] = status.get("fuse_requests")
            by_operation = status.get("s3", {}).get("by_operation")
            counters["heads"] = None if by_operation is None else by_operation.get("head_object", 0)
        return counters

    def _profile_path(self, metric: str) -> Path:
        assert self.profile_dir is not None
        return self.profile_dir / f"fedfs-{metric}.txt"

    def _profile(self, tool: str, metric: str, pids: list[int]) -> subprocess.Popen[bytes] | None:
        """py-spy on the fedfs daemon; collapsed stacks (flamegraph.pl/inferno input)."""
        if self.profile_dir is None or tool != "fedfs" or len(pids) != 1:
            return None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self._profile_path(metric)
        cmd = [pyspy, "record", "--nonblocking", "--format", "raw", "-r", "200", "-o", str(out)]
        proc = subprocess.Popen(
            [*cmd, "-p", str(pids[0])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)  # py-spy needs a moment to attach; there is nothing to poll for
        return proc

    # -- the run --

    def run(self) -> Results:
        console.print(f"[bold]S3 server:[/] {self.backend}, starting")
        self.server = start_server(self.backend, self.workdir)
        self.results.server = {
            "software": self.server.version,
            "url": self.server.url,
            "bring_up_s": round(self.server.bring_up, 1),
        }
        console.print(f"  up in {self.server.bring_up:.1f} s at {self.server.url}")
        self.s3 = s3_client(self.server)
        listings_only = self.args.listings_only
        if not listings_only and not self.args.moves_only:
            self.local_disk()
            self.passthrough()
        self.seed()
        phases: dict[str, Callable[[], None]] = {
            "boto3": self.boto3_baseline,
            "fedfs": self.fedfs,
            "s3fs": self.s3fs,
            "rclone": self.rclone,
        }
        if listings_only:
            phases = {
                "boto3": self.boto3_listing,
                "fedfs": self.fedfs_listings,
                "s3fs": lambda: self._ls(S3fsMount(self, "c")),
                "rclone": lambda: self._ls(RcloneMount(self, "c")),
            }
        if self.args.moves_only:
            phases = {
                "fedfs": lambda: self._mv(FedfsMount(self, "a")),
                "s3fs": lambda: self._mv(S3fsMount(self, "a")),
                "rclone": lambda: self._mv(RcloneMount(self, "a")),
            }
        for tool in self.args.tools:  # in the order given
            phase = phases.get(tool)
            if phase is None:
                continue
            try:
                phase()
            except Exception as e:  # a tool that breaks leaves the others to measure
                console.print(f"[red]{tool}: stopped early:[/] {type(e).__name__}: {e}")
                self.results.notes.append(f"{tool}: {type(e).__name__}: {e}")
                for m in [m for m in self.mounts if m.tool == tool]:
                    m.kill()
                    self.mounts.remove(m)
        return self.results

    def _references(self, tool: str, where: Path) -> None:
        """Write, warm read and creates in `where`: the local disk, or the passthrough mount."""
        sz = self.sizes
        big = where / "big.bin"
        # The reference is the best of 3 tries: a page-cache write or read takes well
        # under a second, so other work on the machine (dirty-page writeback) shows.
        with self.measure(tool, "write", per=sz.big / MiB, rate=True) as m:
            m.wall = best_of(3, lambda: write_file(big, sz.big), before=os.sync)
            m.note = "best of 3, each after sync"
        # Measured as fedfs's: the first read after the write (the filesystem serves it;
        # the kernel drops a FUSE file's pages when it sees the mtime a write moved), then a
        # second one.
        with self.measure(tool, "warm_read", per=sz.big / MiB, rate=True):
            read_file(big)
        with self.measure(tool, "warm_read_again", per=sz.big / MiB, rate=True):
            read_file(big)
        (where / "small").mkdir()
        with self.measure(tool, "creates", per=sz.creates, rate=True):
            small_creates(where / "small", sz.creates)

    def local_disk(self) -> None:
        self.local.mkdir()
        console.print("[bold]local[/] (the local directory beside the cache dirs, page cache)")
        self._references("local", self.local)

    def passthrough(self) -> None:
        """The Python FUSE ceiling: tests/perf/passthrough.py, a bare pyfuse3 passthrough."""
        console.print("[bold]passthrough[/] (bare pyfuse3 passthrough over a local directory)")
        src, mnt = self.workdir / "passthrough-src", self.workdir / "passthrough-mnt"
        src.mkdir()
        mnt.mkdir()
        logf = open(self.workdir / "passthrough.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, str(PASSTHROUGH), str(src), str(mnt)], stdout=logf, stderr=logf
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"passthrough did not mount (see {logf.name})")
                time.sleep(0.05)
            self._references("passthrough", mnt)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()

    def seed(self) -> None:
        """Through boto3: the big object, the listed directory, one directory to move per tool."""
        sz, s3 = self.sizes, self.s3
        s3.create_bucket(Bucket=BUCKET)
        console.print("[bold]seeding[/] the bucket with boto3")
        markers = ["shared/", "shared/many/"]
        for tool in ("fedfs", "s3fs", "rclone"):
            markers += [f"{tool}/", f"{tool}/mvsrc/"]
        puts = [(k, b"") for k in markers]
        if not self.args.reads_only and not self.args.moves_only and "ls" not in self.args.skip:
            puts += [(f"shared/many/f{i:05d}", b"x" * 100) for i in range(sz.listing)]
        if not self.args.reads_only and not self.args.listings_only:
            small = os.urandom(SMALL_FILE)
            for tool in ("fedfs", "s3fs", "rclone"):
                puts += [(f"{tool}/mvsrc/f{i:05d}", small) for i in range(sz.moved)]

        def put(item: tuple[str, bytes]) -> None:
            key, body = item
            extra = {"ContentType": "application/x-directory"} if key.endswith("/") else {}
            s3.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)

        with (
            self.measure("boto3", "seed_puts", per=len(puts), rate=True),
            ThreadPoolExecutor(16) as pool,
        ):
            list(pool.map(put, puts))
        if self.args.listings_only or self.args.moves_only:
            return
        cfg = TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=8)
        with self.measure("boto3", "put_big", per=sz.big / MiB, rate=True):
            s3.upload_file(str(self.local / "big.bin"), BUCKET, "shared/big.bin", Config=cfg)
        if "cold" not in self.args.skip:
            for i in range(1, READERS):  # the other readers' files: same size, other content
                write_file(self.local / "other.bin", sz.big)
                s3.upload_file(str(self.local / "other.bin"), BUCKET, big_key(i), Config=cfg)
            (self.local / "other.bin").unlink()

    def boto3_baseline(self) -> None:
        sz, s3 = self.sizes, self.s3
        console.print("[bold]boto3[/] baseline")
        drop_caches()
        with self.measure("boto3", "cold_read", per=sz.big / MiB, rate=True):
            body = s3.get_object(Bucket=BUCKET, Key="shared/big.bin")["Body"]
            got = 0
            while chunk := body.read(8 * MiB):
                got += len(chunk)
            if got != sz.big:
                raise RuntimeError(f"GET returned {got} bytes, expected {sz.big}")
        self.boto3_listing()

    def boto3_listing(self) -> None:
        sz, s3 = self.sizes, self.s3
        if self.args.reads_only or "ls" in self.args.skip:
            return
        with self.measure("boto3", "ls_cold"):
            n = count_keys(s3, "shared/many/")
            if n != sz.listing + 1:  # + the directory marker
                raise RuntimeError(f"listed {n} keys, expected {sz.listing + 1}")

    def fedfs(self) -> None:
        sz = self.sizes
        console.print("[bold]fedfs[/]")
        if self.args.reads_only:
            self._cold_read(FedfsMount(self, "b"))
            return
        m = FedfsMount(self, "a").start()
        assert isinstance(m, FedfsMount)
        mine = m.root / "fedfs"
        big = mine / "big.bin"
        os.sync()
        with self.measure("fedfs", "write", m, per=sz.big / MiB, rate=True):
            write_file(big, sz.big)
        with self.measure("fedfs", "write_sync", m):
            m.sync(mine)
        with self.measure("fedfs", "warm_read", m, per=sz.big / MiB, rate=True):
            read_file(big)
        with self.measure("fedfs", "warm_read_again", m, per=sz.big / MiB, rate=True):
            read_file(big)
        with contextlib.suppress(Exception):
            check_content(big, sz.big)
        # A partial rewrite: one byte in the middle of the uploaded file, then `fedfs sync`
        # (compared with write_sync, the same file uploaded whole).
        middle = sz.big // 2 + 12345
        with self.measure("fedfs", "rewrite_close", m) as meas:
            meas.note = "open the uploaded file, write 1 byte in the middle, close"
            change_byte(big, middle)
        with self.measure("fedfs", "rewrite_sync", m):
            m.sync(mine)
        self._check_rewritten("fedfs/big.bin", middle)
        if "creates" not in self.args.skip:
            (mine / "small").mkdir()
            with self.measure("fedfs", "creates", m, per=sz.creates, rate=True):
                small_creates(mine / "small", sz.creates)
            with self.measure("fedfs", "creates_sync", m):
                m.sync(mine / "small")
            self._check_uploaded("fedfs", "fedfs/small/", sz.creates + 1)  # + mkdir's marker
        with self.measure("fedfs", "mv", m):
            run("mv", mine / "mvsrc", mine / "mvdst", timeout=3600)
        self._check_moved("fedfs")
        m.stop()
        self._cold_read(FedfsMount(self, "b"))
        self.fedfs_listings()

    def fedfs_listings(self) -> None:
        if "ls" in self.args.skip:
            return
        self._ls(FedfsMount(self, "c"))
        # Seen before: another mount with an empty cache (as another node, or after a
        # remount) lists the directory the one before listed; then with 60 s lifetimes.
        m = FedfsMount(self, "d").start()
        with self.measure("fedfs", "ls_remount", m):
            ls_l(m.root / "shared" / "many", self.sizes.listing)
        m.stop()
        if self.args.fedfs_ttl is None:
            m = FedfsMount(self, "e", ttl=60).start()
            ls_l(m.root / "shared" / "many", self.sizes.listing)
            with self.measure("fedfs", "ls_warm_60", m):
                ls_l(m.root / "shared" / "many", self.sizes.listing)
            m.stop()

    def _check_rewritten(self, key: str, offset: int) -> None:
        """Outside the timed part: the object holds the changed byte and the pattern around it."""
        around = self.s3.get_object(
            Bucket=BUCKET, Key=key, Range=f"bytes={offset - 1}-{offset + 1}"
        )
        got = around["Body"].read()
        block = _pattern()
        want = bytes([block[(offset - 1) % IO_BLOCK], CHANGED_BYTE, block[(offset + 1) % IO_BLOCK]])
        if got != want:
            raise RuntimeError(f"{key}: bytes {offset - 1}..{offset + 1} are {got!r}, not {want!r}")

    def s3fs(self) -> None:
        sz = self.sizes
        console.print("[bold]s3fs[/]")
        if self.args.reads_only:
            self._cold_read(S3fsMount(self, "b"))
            return
        m = S3fsMount(self, "a").start()
        mine = m.root / "s3fs"
        os.sync()
        with self.measure("s3fs", "write", m, per=sz.big / MiB, rate=True):
            write_file(mine / "big.bin", sz.big)  # s3fs uploads in close()
        (mine / "small").mkdir()
        with self.measure("s3fs", "creates", m, per=sz.creates, rate=True):
            small_creates(mine / "small", sz.creates)
        with self.measure("s3fs", "mv", m):
            run("mv", mine / "mvsrc", mine / "mvdst", timeout=3600)
        self._check_moved("s3fs")
        m.stop()
        self._cold_read(S3fsMount(self, "b"))
        self._ls(S3fsMount(self, "c"))

    def rclone(self) -> None:
        sz = self.sizes
        console.print("[bold]rclone[/] mount --vfs-cache-mode writes")
        m = RcloneMount(self, "a").start()
        mine = m.root / "rclone"
        os.sync()
        with self.measure("rclone", "write", m, per=sz.big / MiB, rate=True):
            write_file(mine / "big.bin", sz.big)
        with self.measure("rclone", "write_sync", m) as meas:
            meas.note = "until the object is in S3 (polled), from close()"
            wait_for(lambda: object_size(self.s3, "rclone/big.bin") == sz.big, "upload", 1800)
        if "creates" not in self.args.skip:
            (mine / "small").mkdir()
            with self.measure("rclone", "creates", m, per=sz.creates, rate=True):
                small_creates(mine / "small", sz.creates)
            with self.measure("rclone", "creates_sync", m) as meas:
                meas.note = "until all objects are in S3 (polled), from the last close()"
                wait_for(
                    lambda: count_keys(self.s3, "rclone/small/") >= sz.creates, "uploads", 1800
                )
        with self.measure("rclone", "mv", m):
            run("mv", mine / "mvsrc", mine / "mvdst", timeout=3600)
        self._check_moved("rclone")
        m.stop()
        self._ls(RcloneMount(self, "c"))

    def _cold_read(self, m: Mount) -> None:
        if "cold" in self.args.skip:
            return
        m.start()
        big = m.root / "shared" / "big.bin"
        drop_caches()
        with self.measure(m.tool, "cold_read", m, per=self.sizes.big / MiB, rate=True):
            got = read_file(big)
            if got != self.sizes.big:
                raise RuntimeError(f"read {got} bytes, expected {self.sizes.big}")
        m.stop()
        # READERS readers of as many files at once, on another fresh mount (empty cache).
        m = type(m)(self, "readers").start()
        paths = [m.root / big_key(i) for i in range(READERS)]
        drop_caches()
        per = READERS * self.sizes.big / MiB
        with (
            self.measure(m.tool, "cold_read_4", m, per=per, rate=True),
            ThreadPoolExecutor(READERS) as pool,
        ):
            got_all = list(pool.map(read_file, paths))
            if got_all != [self.sizes.big] * READERS:
                raise RuntimeError(f"read {got_all} bytes, expected {self.sizes.big} each")
        m.stop()

    def _ls(self, m: Mount) -> None:
        if "ls" in self.args.skip:
            return
        m.start()
        many = m.root / "shared" / "many"
        with self.measure(m.tool, "ls_cold", m):
            ls_l(many, self.sizes.listing)
        with self.measure(m.tool, "ls_warm", m):
            ls_l(many, self.sizes.listing)
        m.stop()

    def _mv(self, m: Mount) -> None:
        """Only the `mv` row (--moves-only): a fresh mount, the move, its check."""
        m.start()
        with self.measure(m.tool, "mv", m):
            run("mv", m.root / m.tool / "mvsrc", m.root / m.tool / "mvdst", timeout=3600)
        self._check_moved(m.tool)
        m.stop()

    def _check_uploaded(self, tool: str, prefix: str, n: int) -> None:
        got = count_keys(self.s3, prefix)
        if got != n:
            console.print(f"[red]{tool}: {got} objects under {prefix}, expected {n}[/]")

    def _check_moved(self, tool: str) -> None:
        """Every file arrived under the new name; notes what stayed under the old one."""
        src = count_keys(self.s3, f"{tool}/mvsrc/")
        dst = count_keys(self.s3, f"{tool}/mvdst/")
        if dst < self.sizes.moved or src:
            left = object_size(self.s3, f"{tool}/mvsrc/") is not None
            what = "only its directory marker" if src == 1 and left else f"{src} keys"
            console.print(
                f"[yellow]{tool} mv: {what} left under mvsrc/, {dst} keys under mvdst/[/]"
            )
            self.results.notes.append(f"{tool} mv left {what} under the old prefix")

    def cleanup(self) -> None:
        for m in list(self.mounts):
            m.kill()
        for m in list(self.mounts):

            def gone(mount: Mount = m) -> bool:
                return not mount.pids()

            with contextlib.suppress(Exception):
                wait_for(gone, f"{m.tool} to exit", 30)
        if getattr(self, "server", None) is not None:
            self.server.stop()


def machine_facts(workdir: Path) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fs = run("df", "--output=fstype,source", workdir).stdout.splitlines()[-1].split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024**3, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "local_fs": " on ".join(fs),
        "python": platform.python_version(),
        "s3fs": _first_line("s3fs", "--version"),
        "rclone": _first_line("rclone", "version"),
        "load_at_start": os.getloadavg()[0],
        "fedfs": _fedfs_revision(),
    }


def _fedfs_revision() -> str:
    """The commit measured, and whether fedfs/ had uncommitted changes (read-only git)."""
    try:
        commit = run("git", "-C", REPO, "rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("git", "-C", REPO, "status", "--porcelain", "--", "fedfs").stdout.strip()
    except (OSError, RuntimeError):
        return "unknown"
    return commit + (" with uncommitted changes in fedfs/" if dirty else "")


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _first_line(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "missing"


# -- the report ------------------------------------------------------------

# (metric, label, unit); the label's {} are filled from Sizes.
ROWS = [
    ("write", "seq. write {big}, until close()", "MiB/s"),
    ("write_sync", "  then until in S3 (sync)", "s"),
    ("warm_read", "warm seq. read {big}", "MiB/s"),
    ("warm_read_again", "  the same, second read", "MiB/s"),
    ("cold_read", "cold seq. read {big}", "MiB/s"),
    ("cold_read_4", "  4 readers of 4 files of {big} (aggregate)", "MiB/s"),
    ("rewrite_close", "change 1 byte of the {big} file, until close()", "s"),
    ("rewrite_sync", "  then until in S3 (sync)", "s"),
    ("creates", "{creates} creates of 4 KiB", "files/s"),
    ("creates_sync", "  then until in S3 (sync)", "s"),
    ("ls_cold", "ls -l of {listing} objects, cold", "s"),
    ("ls_warm", "  the same, second run (warm)", "s"),
    ("ls_remount", "  after a remount with an empty cache (seen before)", "s"),
    ("ls_warm_60", "  repeated, with 60 s lifetimes", "s"),
    ("mv", "mv of a directory of {moved} files", "s"),
    ("seed_puts", "seeding: parallel PUTs (16 threads)", "objects/s"),
    ("put_big", "seeding: multipart PUT {big}", "MiB/s"),
]


@dataclass(frozen=True)
class Target:
    name: str
    num: tuple[str, str]  # (tool, metric)
    den: tuple[str, str] | None  # None: an absolute limit on num
    op: str  # ">=", "<=", "<"
    limit: float

    def evaluate(self, r: Results) -> dict[str, Any]:
        a = r.value(*self.num)
        b = r.value(*self.den) if self.den else 1.0
        ratio = None if a is None or not b else a / b
        ok = None
        if ratio is not None:
            ok = {
                ">=": ratio >= self.limit,
                "<=": ratio <= self.limit,
                "<": ratio < self.limit,
            }[self.op]
        return {
            "target": self.name,
            "value": ratio,
            "limit": f"{self.op} {self.limit:g}",
            "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
        }


TARGETS = [
    Target(
        "fedfs warm read / passthrough warm read",
        ("fedfs", "warm_read"),
        ("passthrough", "warm_read"),
        ">=",
        0.9,
    ),
    Target(
        "fedfs write until close / passthrough write",
        ("fedfs", "write"),
        ("passthrough", "write"),
        ">=",
        0.9,
    ),
    Target(
        "fedfs creates/s / rclone creates/s", ("fedfs", "creates"), ("rclone", "creates"), ">=", 1
    ),
    Target(
        "fedfs cold read / boto3 single-stream GET",
        ("fedfs", "cold_read"),
        ("boto3", "cold_read"),
        ">=",
        0.9,
    ),
    Target(
        "fedfs cold read / s3fs cold read", ("fedfs", "cold_read"), ("s3fs", "cold_read"), ">=", 1.5
    ),
    Target(
        "fedfs 4 cold readers / s3fs 4 cold readers (aggregate)",
        ("fedfs", "cold_read_4"),
        ("s3fs", "cold_read_4"),
        ">=",
        2,
    ),
    Target(
        "fedfs 4 cold readers (aggregate) / fedfs single reader",
        ("fedfs", "cold_read_4"),
        ("fedfs", "cold_read"),
        ">=",
        1.5,
    ),
    Target(
        "fedfs ls -l never seen / s3fs ls -l (time)",
        ("fedfs", "ls_cold"),
        ("s3fs", "ls_cold"),
        "<=",
        1,
    ),
    Target(
        "fedfs ls -l after a remount, seen before / boto3 ListObjectsV2 (time)",
        ("fedfs", "ls_remount"),
        ("boto3", "ls_cold"),
        "<=",
        1.5,
    ),
    Target(
        "fedfs ls -l repeated / boto3 ListObjectsV2 (time)",
        ("fedfs", "ls_warm"),
        ("boto3", "ls_cold"),
        "<=",
        1.2,
    ),
    Target("fedfs ls -l repeated, 60 s lifetimes (s)", ("fedfs", "ls_warm_60"), None, "<", 0.2),
    Target(
        "fedfs sync after a 1-byte change / sync of the whole file (time)",
        ("fedfs", "rewrite_sync"),
        ("fedfs", "write_sync"),
        "<=",
        0.15,
    ),
    Target("fedfs mv / rclone mv (time)", ("fedfs", "mv"), ("rclone", "mv"), "<=", 0.5),
]


def report(r: Results) -> list[dict[str, Any]]:
    sz = r.sizes
    labels = {
        "big": f"{sz.big // MiB} MiB" if sz.big < 1024**3 else f"{sz.big // 1024**3} GiB",
        "creates": f"{sz.creates:,}",
        "listing": f"{sz.listing:,}",
        "moved": f"{sz.moved:,}",
    }
    t = Table(title=f"fedfs and peers on {r.server.get('software', r.backend)} (127.0.0.1)")
    t.add_column("measurement")
    t.add_column("unit")
    for tool in TOOLS:
        t.add_column(tool, justify="right")
    for metric, label, unit in ROWS:
        cells = []
        for tool in TOOLS:
            m = r.figures.get(tool, {}).get(metric)
            if m is None:
                cells.append("")
            elif m.value is None:
                cells.append("[red]error[/]")
            else:
                cells.append(f"{m.value:,.0f}" if m.value >= 100 else f"{m.value:,.2f}")
        if any(cells):
            t.add_row(label.format(**labels), unit, *cells)
    console.print(t)
    verdicts = [target.evaluate(r) for target in TARGETS]
    v = Table(title="targets")
    for col in ("target", "value", "limit", "result"):
        v.add_column(col, justify="right" if col != "target" else "left")
    for row in verdicts:
        colour = {"PASS": "green", "FAIL": "red"}.get(row["result"], "yellow")
        value = "" if row["value"] is None else f"{row['value']:.2f}"
        v.add_row(row["target"], value, row["limit"], f"[{colour}]{row['result']}[/]")
    console.print(v)
    c = Table(
        title="where the time went: CPU seconds and requests during each measurement",
        caption="S3 requests: as the server counted them (Ceph), or as fedfs did (*)",
    )
    columns = ("tool", "measurement", "wall s", "daemon CPU s", "server CPU s", "S3 requests")
    for col in (*columns, "HEADs", "FUSE requests", "load"):
        c.add_column(col, justify="left" if col in ("tool", "measurement") else "right")
    for tool, figures in r.figures.items():
        for metric, m in figures.items():
            c.add_row(
                tool,
                metric,
                _num(m.wall),
                _num(m.daemon_cpu),
                _num(m.server_cpu),
                _requests(m),
                "" if m.heads is None else f"{m.heads:,}",
                "" if m.fuse_requests is None else f"{m.fuse_requests:,}",
                _num(m.load),
            )
    console.print(c)
    errors = [(t, k, m.error) for t, f in r.figures.items() for k, m in f.items() if m.error]
    for tool, metric, err in errors:
        console.print(f"[red]{tool} {metric}:[/] {err}")
    for tool, figures in r.figures.items():
        for metric, m in figures.items():
            if m.note and tool == "fedfs":
                console.print(f"[dim]{tool} {metric}: {m.note}[/]", highlight=False)
    for err in r.notes:
        console.print(f"[red]{err}[/]")
    return verdicts


def _requests(m: Measurement) -> str:
    """Counted by the server (Ceph); else as fedfs counted them, marked with *."""
    if m.s3_requests is not None:
        return f"{m.s3_requests:,}"
    return "" if m.fedfs_s3_requests is None else f"{m.fedfs_s3_requests:,}*"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See docs/PERFORMANCE.md."
    )
    p.add_argument("--backend", choices=["ceph", "moto"], required=True, help="the S3 server")
    p.add_argument(
        "--quick", action="store_true", help="256 MiB, 200 creates, 2,000 objects: a smoke run"
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--profile", type=Path, help="write py-spy profiles (collapsed stacks) of fedfs here"
    )
    p.add_argument(
        "--tools",
        type=lambda s: s.split(","),
        default=list(TOOLS),
        help="comma-separated subset of "
        + ",".join(TOOLS)
        + " (local and passthrough always run; the others in the order given)",
    )
    p.add_argument(
        "--fedfs-ttl",
        type=float,
        metavar="SECONDS",
        help="mount fedfs with this [fs] attr/entry/negative/dir timeout (default: fedfs's, 1 s)",
    )
    p.add_argument(
        "--listings-only",
        action="store_true",
        help="only the ls -l rows (and the boto3 listing): no big file, creates or mv",
    )
    p.add_argument(
        "--fedfs-no-index",
        action="store_true",
        help="mount fedfs with [fs] metadata_index = false (every listing HEADs what it has not seen)",
    )
    p.add_argument(
        "--moves-only",
        action="store_true",
        help="only the mv rows of fedfs, s3fs and rclone (seeds only the directories moved)",
    )
    p.add_argument(
        "--fedfs-store",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra line for fedfs's [store] section, e.g. 'max_connections = 32' (repeatable)",
    )
    p.add_argument(
        "--reads-only",
        action="store_true",
        help="only the cold-read rows (one reader, 4 readers) of boto3, fedfs and s3fs",
    )
    p.add_argument(
        "--workdir", type=Path, help="parent of the scratch directory (default /var/tmp)"
    )
    p.add_argument(
        "--skip",
        type=lambda s: set(s.split(",")),
        default=set(),
        help="comma-separated measurements to leave out: cold (cold reads), ls (listings, and "
        "seeding their objects), creates",
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root: it mounts filesystems and drops the page cache")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on kill, too
    workdir = Path(tempfile.mkdtemp(prefix="fedfs-compare-", dir=args.workdir or "/var/tmp"))
    bench = Bench(args, workdir)
    began = time.monotonic()
    try:
        results = bench.run()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: unmounting and stopping the S3 server")
        return 130
    finally:
        bench.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    results.machine["load_at_end"] = os.getloadavg()[0]
    results.machine["run_minutes"] = round((time.monotonic() - began) / 60, 1)
    verdicts = report(results)
    if args.json:
        doc = asdict(results)
        doc["command"] = sys.argv
        doc["targets"] = verdicts
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
