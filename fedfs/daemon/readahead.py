"""The read-ahead of the mount's kernel device: how large the kernel's FUSE reads are.

The kernel sizes a FUSE mount's read requests from the read-ahead of the
mount's backing device (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`, 128 KiB
unless raised): with 1024 a sequential reader's 1 MiB `read()` reaches the
daemon as one request instead of eight. `set_read_ahead` writes `[fs]
read_ahead_kb` there once the mount answers its first request: the kernel
lowers the read-ahead to what the daemon offered when the FUSE connection
starts, so a value written before that is lost. The device exists only while the
mount does, so the setting goes away with the unmount and nothing is left to
undo. Where it cannot be written (no sysfs, no root), the mount works with the
kernel's default and the log says so once.

The device number comes from /proc/self/mountinfo, not from stat() of the
mount point, which the daemon's own trio thread must not wait for. Plain
functions, called from the trio thread (small sysfs and procfs reads); imports
only events and the standard library.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedfs.daemon.mountpoint import unescape
from fedfs.events import event

log = logging.getLogger(__name__)

BDI = Path("/sys/class/bdi")


def mount_device(mountpoint: Path | str, mountinfo: Path = Path("/proc/self/mountinfo")) -> str:
    """MAJOR:MINOR of the newest mount at this path, '' if it is not mounted."""
    found = ""
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" - ", 1)[0].split()
            if len(fields) >= 5 and unescape(fields[4]) == str(mountpoint):
                found = fields[2]
    return found


def bdi_path(device: str) -> Path:
    return BDI / device / "read_ahead_kb"


def set_read_ahead(mountpoint: Path, kib: int) -> int | None:
    """Set the mount's read-ahead to kib KiB; the value now in force, None if unknown.

    kib 0 leaves the kernel's default. Never raises: a mount whose read-ahead
    cannot be set only reads in smaller requests.
    """
    if kib <= 0:
        return None
    try:
        device = mount_device(mountpoint)
        if not device:
            raise OSError(f"{mountpoint} is not in /proc/self/mountinfo")
        path = bdi_path(device)
        path.write_text(f"{kib}\n")
        now = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as e:
        event(
            log,
            "read-ahead-not-set",
            severity=logging.WARNING,
            mountpoint=mountpoint,
            read_ahead_kb=kib,
            msg=(
                f"could not set the mount's read-ahead to {kib} KiB ({e}); reads reach fedfs "
                "in the kernel's default size (128 KiB), which costs daemon CPU on large "
                "sequential reads. fedfs must run as root with /sys mounted; "
                "[fs] read_ahead_kb = 0 leaves the default without this warning"
            ),
        )
        return None
    log.info("read-ahead of %s (bdi %s) is %d KiB", mountpoint, device, now)
    return now
