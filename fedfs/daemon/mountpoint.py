"""The mount point: whether a directory may be mounted on, and what the kernel has mounted.

`check_mountpoint` refuses what would surprise a user (a missing directory, a
mount already there, a dead mount, a directory whose files the mount would
hide). `mount_entry` reads the kernel's mount table, which still lists a FUSE
mount whose daemon died (stat on it fails with ENOTCONN, so os.path.ismount
says False); `fedfs umount` uses it to clear such mounts.

Plain functions on the filesystem, called from the command's or the daemon's
main thread; imports only errors.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from fedfs.errors import FedfsError


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    options: dict[str, str]

    @property
    def user_id(self) -> int | None:
        """For FUSE mounts, the uid that mounted it (the only non-root uid that may unmount)."""
        uid = self.options.get("user_id")
        return int(uid) if uid is not None and uid.isdigit() else None


def unescape(field: str) -> str:
    """A field of /proc/self/mounts or mountinfo as text: they escape space, tab,
    newline and backslash as \\ooo."""
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_entry(mountpoint: Path | str) -> MountEntry | None:
    """The kernel's newest mount at this path, or None (the path is given resolved)."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 3 or unescape(fields[4]) != str(mountpoint):
                continue
            options = {}
            for opt in rest[2].split(","):
                key, _, value = opt.partition("=")
                options[key] = value
            found = MountEntry(str(mountpoint), rest[0], options)
    return found


def is_dead(mountpoint: Path | str) -> bool:
    """True for a FUSE mount whose daemon is gone ("Transport endpoint is not connected")."""
    try:
        os.stat(mountpoint)  # the kernel may answer from cached attributes,
        os.statvfs(mountpoint)  # but statfs always asks the daemon
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def check_mountpoint(mountpoint: Path, nonempty: bool = False) -> None:
    """Refuse a mount point that is missing, mounted, dead, or (unless nonempty) not empty."""
    if is_dead(mountpoint):
        raise FedfsError(
            f"{mountpoint} is a dead mount (its daemon has stopped); clear it with "
            f"fedfs umount {mountpoint}, then mount again"
        )
    if not mountpoint.is_dir():
        raise FedfsError(f"mount point {mountpoint} is not a directory; create it with mkdir -p")
    if os.path.ismount(mountpoint):
        raise FedfsError(f"{mountpoint} is already a mount point; unmount it first (fedfs umount)")
    if not nonempty:
        with os.scandir(mountpoint) as it:
            names = sorted(e.name for e in it)
        if names:
            held = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise FedfsError(
                f"{mountpoint} is not empty (it holds {held}); mounting there would hide "
                f"{'it' if len(names) == 1 else 'them'}. Choose an empty directory, or pass "
                f"--nonempty to mount over {'it' if len(names) == 1 else 'them'} anyway"
            )
    if not os.path.exists("/dev/fuse"):
        raise FedfsError(
            "/dev/fuse is missing; load the fuse module (modprobe fuse) or install fuse3"
        )
