"""One daemon per state and cache directory: an exclusive lock taken before anything is written.

A daemon holds `flock(LOCK_EX)` on `fedfs.lock` in its [policy] state_dir and
its [cache] dir for its whole life (the kernel drops the locks when the
process ends, even after kill -9). The lock file names the holder (pid and
mount point), so a second start of the same config is refused with one line
saying who holds it, before it writes the policy database, the audit chain or
the journal. The shared clean directory is never locked: several nodes use it.

Runs in the daemon's main thread before trio starts; imports only errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from fedfs.errors import FedfsError

LOCK_NAME = "fedfs.lock"


def _holder(fd: int) -> tuple[str, str]:
    """(pid, mount point) written by the process holding the lock, as far as it wrote them."""
    with contextlib.suppress(OSError):
        words = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")
        if words and words[0].strip().isdigit():
            return words[0].strip(), words[1].strip() if len(words) > 1 else ""
    return "", ""


def lock_dir(directory: Path, mountpoint: Path, config: Path, follow: bool = True) -> int:
    """Create `directory` (0700) if needed and hold its lock; the open descriptor.

    With follow=False a directory that is a symbolic link is refused (the cache
    directory: a planted link must not make root create files elsewhere).
    Raises a FedfsError that names the process holding the directory.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not follow and directory.is_symlink():
        raise FedfsError(
            f"{directory} is a symbolic link (to {os.readlink(directory)}); fedfs refuses it, "
            f"since a link can redirect its files: point {config} at the real directory"
        )
    fd = os.open(
        directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        pid, where = _holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            who = f"fedfs process {pid}" if pid else "another fedfs process"
            if where:
                raise FedfsError(
                    f"{directory} is in use by {who} (mounted on {where}); unmount that first "
                    f"(fedfs umount {where}), or give this config its own [policy] state_dir "
                    "and [cache] dir"
                ) from None
            raise FedfsError(
                f"{directory} is in use by {who}; stop it first, or give {config} its own "
                "[policy] state_dir and [cache] dir"
            ) from None
        raise FedfsError(
            f"cannot lock {directory}: {e.strerror}; its filesystem must support flock "
            "(on Lustre, mount it with -o flock or -o localflock), or use a local directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{mountpoint}\n".encode(), 0)
    return fd


class DirLocks:
    """The locks of one daemon, on each distinct directory it writes; released by `release`."""

    def __init__(
        self, directories: list[tuple[Path, bool]], mountpoint: Path, config: Path
    ) -> None:
        """directories: (path, follow) pairs, as for lock_dir."""
        self.fds: list[int] = []
        seen: set[Path] = set()
        try:
            for d, follow in directories:
                if d in seen:
                    continue
                seen.add(d)
                self.fds.append(lock_dir(d, mountpoint, config, follow))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
