"""Starting and stopping mounts safely: one daemon per state, no mount left behind,
no directory hidden, a cache disk that is too small, commands run without the
rights they need, and logs only root can read.

Every test runs the real `fedfs` command (daemonizing, as an admin does) against
real mounts, real small disks (tmpfs) and real uids.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, MotoServer, Mount, UnixUser, wait_for, write_config


def fedfs(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def mount_cli(config: Path, mountpoint: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`fedfs mount` as an admin runs it: it daemonizes once the mount answers."""
    mountpoint.mkdir(exist_ok=True)
    return fedfs(
        "mount",
        "--config",
        config,
        "--log-file",
        config.with_suffix(".log"),
        *extra,
        mountpoint,
    )


def in_mount_table(mountpoint: Path) -> bool:
    """Whether the kernel still lists a mount there (os.path.ismount misses dead FUSE mounts)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mountpoint) for line in f)


def audit_verify(mountpoint: Path) -> subprocess.CompletedProcess[str]:
    return fedfs("audit", "verify", "--mount", mountpoint)


@pytest.fixture
def cleanup_mounts() -> Any:
    """Mount points a test mounts; unmounted at the end, also when it fails (daemons then exit)."""
    points: list[Path] = []
    yield points
    for p in points:
        if in_mount_table(p):
            fedfs("umount", "--wait", "60", p)
        if in_mount_table(p):
            subprocess.run(["fusermount3", "-uz", str(p)], check=False, capture_output=True)


def test_a_second_mount_of_a_config_in_use_is_refused(
    make_mount: Any, bucket: str, public_dir: Path, tmp_path: Path, cleanup_mounts: list[Path]
) -> None:
    first: Mount = make_mount([(bucket, "user:root")])
    (first.path(bucket) / "kept.txt").write_text("first mount's data\n")
    r = fedfs("share", first.path(bucket), "--with", "user:root", "--read")
    assert r.returncode == 0, r.stderr
    assert audit_verify(first.mountpoint).returncode == 0
    chain = tmp_path / "cache-m0-state" / "audit"
    before = {p: p.read_bytes() for p in chain.rglob("*") if p.is_file()}
    second = public_dir / f"{tmp_path.name}-second"
    cleanup_mounts.append(second)
    r = mount_cli(first.config, second)
    assert first.proc is not None
    state = tmp_path / "cache-m0-state"
    assert r.stderr == (
        f"fedfs: {state} is in use by fedfs process {first.proc.pid} (mounted on "
        f"{first.mountpoint}); unmount that first (fedfs umount {first.mountpoint}), or give "
        "this config its own [policy] state_dir and [cache] dir\n"
    )
    assert r.returncode == 1
    assert not in_mount_table(second)  # no dead mount left behind
    # the running mount's audit chain was not written by the refused process
    assert {p: p.read_bytes() for p in chain.rglob("*") if p.is_file()} == before
    v = audit_verify(first.mountpoint)
    assert v.returncode == 0, v.stdout + v.stderr
    assert (first.path(bucket) / "kept.txt").read_text() == "first mount's data\n"
    # and once the first is unmounted, the config mounts again
    assert first.stop() == 0
    r = mount_cli(first.config, second)
    assert r.returncode == 0, r.stderr
    assert (second / bucket / "kept.txt").read_text() == "first mount's data\n"
    assert audit_verify(second).returncode == 0


def test_a_start_that_fails_after_mounting_takes_its_mount_down(
    moto: MotoServer, bucket: str, public_dir: Path, tmp_path: Path, cleanup_mounts: list[Path]
) -> None:
    # The control socket path is taken by a plain file: found only once FUSE is up.
    blocker = tmp_path / "not-a-socket"
    blocker.write_text("somebody's file\n")
    cfg = write_config(tmp_path / "c.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache")
    cfg.write_text(cfg.read_text().replace("socket = ", f'socket = "{blocker}"\n#', 1))
    mp = public_dir / f"{tmp_path.name}-failing"
    cleanup_mounts.append(mp)
    r = mount_cli(cfg, mp)
    assert r.returncode == 1
    assert r.stderr == (
        f"fedfs: {blocker} exists and is not a socket; fedfs will not delete it. Move it away "
        "or choose another control socket path\n"
    )
    assert not in_mount_table(mp)
    assert blocker.read_text() == "somebody's file\n"


def test_umount_clears_a_dead_mount(
    moto: MotoServer, bucket: str, public_dir: Path, tmp_path: Path, cleanup_mounts: list[Path]
) -> None:
    cfg = write_config(tmp_path / "c.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache")
    m = Mount(cfg, public_dir / f"{tmp_path.name}-dead", tmp_path / "m.log")
    cleanup_mounts.append(m.mountpoint)
    m.start()
    assert m.proc is not None
    m.proc.kill()  # the daemon dies; the kernel keeps a mount nobody answers
    m.proc.wait()
    m.proc = None

    def dead() -> bool:  # once the kernel's cached attributes of the root expired
        try:
            os.lstat(m.mountpoint)
        except OSError as e:
            return e.errno == errno.ENOTCONN
        return False

    wait_for(dead, "stat of the dead mount to fail with ENOTCONN")
    r = fedfs("status", m.mountpoint)
    assert r.returncode == 1
    assert r.stderr == (
        f"fedfs: {m.mountpoint}: the fedfs daemon of this mount has stopped (transport "
        "endpoint is not connected); run `fedfs umount MOUNTPOINT` and mount it again: files "
        "closed before it stopped are uploaded then\n"
    ), r.stderr
    r = fedfs("umount", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"fedfs: {m.mountpoint} was a dead mount (its daemon had stopped); unmounted it\n"
    )
    assert not in_mount_table(m.mountpoint)
    # and the config mounts there again, with nothing lost
    r = mount_cli(cfg, m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert fedfs("umount", m.mountpoint).returncode == 0


def test_mount_over_a_non_empty_directory_is_refused(
    moto: MotoServer, bucket: str, public_dir: Path, tmp_path: Path, cleanup_mounts: list[Path]
) -> None:
    cfg = write_config(tmp_path / "c.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache")
    mp = public_dir / f"{tmp_path.name}-full"
    mp.mkdir()
    (mp / "results.csv").write_text("1,2,3\n")
    cleanup_mounts.append(mp)
    r = mount_cli(cfg, mp)
    assert r.returncode == 1
    assert r.stderr == (
        f"fedfs: {mp} is not empty (it holds results.csv); mounting there would hide it. "
        "Choose an empty directory, or pass --nonempty to mount over it anyway\n"
    )
    assert not in_mount_table(mp)
    assert (mp / "results.csv").read_text() == "1,2,3\n"
    assert "--nonempty" in fedfs("mount", "--help").stdout
    # the explicit option mounts over it; what was there is back after the unmount
    r = mount_cli(cfg, mp, "--nonempty")
    assert r.returncode == 0, r.stderr
    assert (mp / bucket).is_dir() and not (mp / "results.csv").exists()
    assert fedfs("umount", mp).returncode == 0
    assert (mp / "results.csv").read_text() == "1,2,3\n"


def _as(user: UnixUser, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real `fedfs` command run by another uid."""
    p = user.run(sys.executable, "-m", "fedfs.cli", *map(str, args))
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


def test_commands_without_the_rights_they_need_say_so_in_one_line(
    moto: MotoServer,
    bucket: str,
    public_dir: Path,
    tmp_path: Path,
    alice: UnixUser,
    cleanup_mounts: list[Path],
) -> None:
    # An admin's config any user can read (a world-readable /etc/fedfs file), whose
    # state and cache directories (root's, 0700) are what a user may not open.
    base = public_dir / f"{tmp_path.name}-rights"
    base.mkdir()
    cfg = write_config(base / "c.toml", moto.url, [(bucket, "user:root")], base / "cache")
    cfg.chmod(0o644)
    m = Mount(cfg, base / "mnt", tmp_path / "m.log")
    cleanup_mounts.append(m.mountpoint)
    m.start()
    state, cache = base / "cache-state", base / "cache"
    user = alice.name

    def root_only(d: Path) -> str:
        return f"{d} (owner root, group root, mode 0700)"

    for args in (["doctor", "--config", cfg], ["admin", "node-key", "--config", cfg]):
        r = _as(alice, *args)
        assert r.returncode == 1, r
        command = " ".join(map(str, args))
        # doctor reads the cache's journal (refused uploads) before the state directory
        first = cache if args[0] == "doctor" else state
        assert r.stderr == (
            f"fedfs: {user} may not read {root_only(first)}: run `fedfs {command}` as root\n"
        ), r.stderr
    # a config only root may read (it holds the store's credentials)
    private = base / "private.toml"
    private.write_text(cfg.read_text())
    private.chmod(0o600)
    r = _as(alice, "doctor", "--config", private)
    assert r.returncode == 1, r
    assert r.stderr == (
        f"fedfs: {user} may not read {private} (owner root, group root, mode 0600): "
        f"run `fedfs doctor --config {private}` as root\n"
    ), r.stderr
    # umount of root's mount by a user
    r = _as(alice, "umount", m.mountpoint)
    assert r.returncode == 1, r
    assert r.stderr == (
        f"fedfs: {m.mountpoint} was mounted by root; only root may unmount it: "
        f"run `fedfs umount {m.mountpoint}` as root\n"
    ), r.stderr
    assert os.path.ismount(m.mountpoint)
    # status answers any user; audit verify names who may
    assert _as(alice, "status", m.mountpoint).returncode == 0
    r = _as(alice, "audit", "verify", "--mount", m.mountpoint)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r
    assert "site admins and audit_readers" in r.stderr
    # fsck needs the stopped mount's state and cache
    assert m.stop() == 0
    r = _as(alice, "fsck", "--config", cfg)
    assert r.returncode == 2, r
    assert r.stderr in (
        f"fedfs: {user} may not read {root_only(d)}: run `fedfs fsck --config {cfg}` as root\n"
        for d in (state, cache)
    ), r.stderr
    # mount: the state directory is root's
    mp = base / "alices"
    mp.mkdir()
    os.chown(mp, alice.uid, alice.gid)
    logfile = f"/tmp/{tmp_path.name}-alice.log"
    r = _as(alice, "mount", "--config", cfg, "--log-file", logfile, mp)
    Path(logfile).unlink(missing_ok=True)
    assert r.returncode == 1, r
    assert r.stderr == (
        f"fedfs: {user} may not read {root_only(state)}: run `fedfs mount --config {cfg} "
        f"--log-file {logfile} {mp}` as root\n"
    ), r.stderr
    assert not in_mount_table(mp)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 32 MiB tmpfs for the cache directory: a disk far smaller than [cache] size."""
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(d)], check=True
    )
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_cache_on_a_disk_smaller_than_its_size(
    small_disk: Path,
    moto: MotoServer,
    bucket: str,
    public_dir: Path,
    tmp_path: Path,
    s3: Any,
    cleanup_mounts: list[Path],
) -> None:
    cache = small_disk / "cache"
    cfg = write_config(
        tmp_path / "c.toml",
        moto.url,
        [(bucket, "user:root")],
        cache,
        extra='size = "4GiB"\ndirty_wait = 2\nblock_size = "1MiB"',
    )
    mp = public_dir / f"{tmp_path.name}-small"
    cleanup_mounts.append(mp)
    r = mount_cli(cfg, mp)
    assert r.returncode == 0, r.stderr
    warning, mounted = r.stderr.splitlines()[0], r.stdout.strip()
    assert re.fullmatch(
        rf"fedfs: warning: the disk of cache {cache} has (3[01]\.\d) MiB free, less than "
        rf"\[cache\] size 4\.0 GiB: writes fail with ENOSPC once it is full; lower \[cache\] "
        rf"size to what the disk holds, or free space there \(df -h {cache}\)",
        warning,
    ), warning
    assert mounted.startswith(f"fedfs: mounted {cfg} on {mp}")
    root = mp / bucket
    chunk = os.urandom(1024 * 1024)
    # Files that together outgrow the disk, each uploaded before the next: clean
    # copies make room for new data.
    for i in range(5):
        (root / f"run-{i}.bin").write_bytes(chunk * 10)
        assert fedfs("sync", mp).returncode == 0
    for i in range(5):
        assert s3.get_object(Bucket=bucket, Key=f"run-{i}.bin")["Body"].read() == chunk * 10
    # One file larger than the whole disk cannot be cached: ENOSPC, and the log says why.
    with pytest.raises(OSError) as e:
        (root / "huge.bin").write_bytes(chunk * 40)
    assert e.value.errno == errno.ENOSPC
    log = cfg.with_suffix(".log").read_text()
    assert f"writers wait for room in the cache: the disk of cache {cache} is full" in log
    assert f"ENOSPC: the disk of cache {cache} is full" in log, log[-3000:]
    assert "full of data not yet uploaded" not in log
    (root / "huge.bin").unlink(missing_ok=True)
    (root / "after.txt").write_text("room again\n")
    assert fedfs("sync", mp).returncode == 0


def test_logs_are_readable_only_by_root(
    moto: MotoServer,
    bucket: str,
    public_dir: Path,
    tmp_path: Path,
    alice: UnixUser,
    cleanup_mounts: list[Path],
) -> None:
    base = public_dir / f"{tmp_path.name}-logs"
    base.mkdir()
    cfg = write_config(base / "c.toml", moto.url, [(bucket, "user:root")], base / "cache")
    logdir = base / "logs"  # a log directory the daemon creates itself
    logfile = logdir / "climate.log"
    mp = public_dir / f"{tmp_path.name}-logged"
    mp.mkdir()
    cleanup_mounts.append(mp)
    old_umask = os.umask(0o022)
    try:
        r = fedfs("mount", "--config", cfg, "--log-file", logfile, mp)
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(logdir.stat().st_mode) == 0o750
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    r2 = alice.run("cat", logfile)
    assert r2.returncode != 0 and b"Permission denied" in r2.stderr
    # rotation (logrotate moves the file away): the file the daemon starts is private too
    logfile.rename(logdir / "climate.log.1")
    assert fedfs("share", mp / bucket, "--with", f"user:{alice.name}", "--read").returncode == 0
    wait_for(logfile.exists, "a new log file after rotation")
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    assert stat.S_IMODE((logdir / "climate.log.1").stat().st_mode) == 0o600
    assert fedfs("umount", mp).returncode == 0
    # an existing log file others could read (an older version made it 0644) is closed
    logfile.chmod(0o644)
    r = fedfs("mount", "--config", cfg, "--log-file", logfile, mp)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600


def test_a_cache_dir_that_is_a_symlink_gets_no_lock_file_through_it(
    moto: MotoServer, bucket: str, public_dir: Path, tmp_path: Path, cleanup_mounts: list[Path]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").symlink_to(elsewhere)
    cfg = write_config(tmp_path / "c.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache")
    mp = public_dir / f"{tmp_path.name}-linked"
    cleanup_mounts.append(mp)
    r = mount_cli(cfg, mp)
    assert r.returncode == 1
    assert r.stderr == (
        f"fedfs: {tmp_path / 'cache'} is a symbolic link (to {elsewhere}); fedfs refuses it, "
        f"since a link can redirect its files: point {cfg} at the real directory\n"
    )
    assert list(elsewhere.iterdir()) == []
    assert not in_mount_table(mp)
