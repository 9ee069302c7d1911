"""Doctor's checks of FUSE: the device opens, fusermount3 is installed, and
user_allow_other is set where [fs] allow_other needs it.

Reads the system only; runs in the doctor's only thread. The device, the
config file, the uid and the tool lookup can be given, so each case can be
checked on any machine.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from fedfs.ops.doctor.finding import FAIL, OK, WARN, Finding


def check_fuse(
    allow_other: bool,
    dev: Path = Path("/dev/fuse"),
    conf: Path = Path("/etc/fuse.conf"),
    euid: int | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> list[Finding]:
    """The FUSE device, the fusermount3 helper, and user_allow_other where it is needed."""
    euid = os.geteuid() if euid is None else euid
    found = []
    try:
        st = dev.stat()
    except FileNotFoundError:
        found.append(
            Finding(
                "fuse device",
                FAIL,
                f"{dev} is missing",
                "load the module (modprobe fuse; list it in /etc/modules-load.d/fuse.conf); "
                "in a container, pass the device (--device /dev/fuse)",
            )
        )
    else:
        if not stat.S_ISCHR(st.st_mode):
            found.append(
                Finding(
                    "fuse device",
                    FAIL,
                    f"{dev} is not a character device",
                    f"remove it and load the module (rm {dev}; modprobe fuse)",
                )
            )
        else:
            try:
                os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
                found.append(Finding("fuse device", OK, f"{dev} opens"))
            except OSError as e:
                found.append(
                    Finding(
                        "fuse device",
                        FAIL,
                        f"{dev} exists but cannot be opened: {e.strerror}",
                        "in a container, allow the device (--device /dev/fuse, or the device "
                        "cgroup rule c 10:229 rwm); outside one, run fedfs as root",
                    )
                )
    tool = which("fusermount3")
    if tool:
        found.append(Finding("fusermount3", OK, tool))
    else:
        found.append(
            Finding(
                "fusermount3",
                WARN if euid == 0 else FAIL,
                "fusermount3 is not installed: fedfs umount falls back to umount, and only "
                "root can mount",
                "install FUSE 3 (apt-get install fuse3; dnf install fuse3)",
            )
        )
    if not allow_other:
        found.append(Finding("allow_other", OK, "[fs] allow_other = false: only root sees files"))
    elif euid == 0:
        found.append(Finding("allow_other", OK, "mounted by root: needs no user_allow_other"))
    else:
        try:
            lines = [ln.split("#")[0].strip() for ln in conf.read_text().splitlines()]
        except OSError:
            lines = []
        if "user_allow_other" in lines:
            found.append(Finding("allow_other", OK, f"{conf} has user_allow_other"))
        else:
            found.append(
                Finding(
                    "allow_other",
                    FAIL,
                    f"[fs] allow_other is on and fedfs does not run as root, but {conf} lacks "
                    "user_allow_other: the mount fails",
                    f"echo user_allow_other >> {conf}, or run fedfs as root",
                )
            )
    return found
