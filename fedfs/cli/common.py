"""What every `fedfs` subcommand shares: finding the mount of a path, its control
client, times and expiry dates as people write them, tables or JSON/CSV output,
and the one line said when the command lacks the rights it needs.

Runs in the command's only thread. Imports only the standard library at module
level (the man pages are built from the parser without fedfs's dependencies);
the control client and rich are imported when a command runs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import errno
import grp
import json
import os
import pwd
import re
import shlex
import stat
import sys
import time
from pathlib import Path
from typing import Any

from fedfs.errors import FedfsError
from fedfs.events import printable


def locate(path: str, gone_ok: bool = False) -> tuple[Path, str, str]:
    """A path on a fedfs mount -> (mount point, fedfs path "/bucket/key", control socket).

    gone_ok: the path itself need not resolve (`fedfs unshare` of a grant whose object
    was removed, or while the store refuses or does not answer, so the mount cannot
    look it up): its nearest directory that does tells the mount, and the path is
    taken as written (no symlinks followed). Only a stopped daemon still fails.
    """
    p = Path(os.path.abspath(path))
    try:
        os.lstat(p)
    except OSError as e:
        if gone_ok and e.errno != errno.ENOTCONN and p.parent != p:
            mount, fpath, socket = locate(str(p.parent), gone_ok=True)
            return mount, fpath.rstrip("/") + "/" + p.name, socket
        if e.errno == errno.ENOTCONN:
            raise FedfsError(
                f"{path}: the fedfs daemon of this mount has stopped (transport endpoint is "
                "not connected); run `fedfs umount MOUNTPOINT` and mount it again: files "
                "closed before it stopped are uploaded then"
            ) from None
        raise FedfsError(f"{path}: no such file or directory") from None
    mount = p
    while not os.path.ismount(mount):
        if mount.parent == mount:
            raise FedfsError(f"{path} is not on a mounted filesystem")
        mount = mount.parent
    try:
        socket = os.getxattr(mount, "user.fedfs.socket").decode()
    except OSError:
        raise FedfsError(
            f"{path} is not on a fedfs mount ({mount} is another filesystem)"
        ) from None
    rel = p.relative_to(mount).as_posix()
    return mount, "/" + ("" if rel == "." else rel), socket


def locate_mount(path: str, command: str, how: str = "--mount PATH") -> tuple[Path, str, str]:
    """locate() for commands that act on a whole mount (--mount, default: the current directory).

    how: the way to name a mount on the command line (`fedfs status` takes it as its argument).
    """
    try:
        return locate(path)
    except FedfsError:
        if path != ".":
            raise
        raise FedfsError(
            f"{os.getcwd()} is not on a fedfs mount: `fedfs {command}` acts on the mount "
            f"holding the current directory; cd into the mount, or pass {how}"
        ) from None


def fedfs_mounts() -> list[str]:
    """The fedfs mount points of this machine (from /proc/mounts), to name in messages."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "fuse.fedfs":
            # /proc/mounts writes space, tab, newline and backslash as octal escapes
            found.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
    return found


def command_line() -> str:
    """The command as the user typed it, to show how to run it again (as root)."""
    return shlex.join(["fedfs", *sys.argv[1:]])


def _owner_group(st: os.stat_result) -> tuple[str, str]:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def denied(e: PermissionError) -> str:
    """One line for a command run without the rights it needs: what stopped it, and what to do.

    Names the nearest of the path and its parents that this user cannot pass (a
    directory it may not enter, or the file itself), its owner, group and mode,
    and suggests the group when the group's bits would be enough.
    """
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    if not e.filename:
        return f"{user} may not do this ({e.strerror}): run `{command_line()}` as root"
    blocker = Path(os.path.abspath(os.fsdecode(e.filename)))
    while True:
        try:
            st = blocker.stat()
            break
        except OSError:
            if blocker.parent == blocker:
                return f"{user} may not use {e.filename}: run `{command_line()}` as root"
            blocker = blocker.parent
    is_dir = stat.S_ISDIR(st.st_mode)
    wanted = os.R_OK | os.X_OK if is_dir else os.R_OK
    verb = "read" if not os.access(blocker, wanted) else "write to" if is_dir else "write"
    group_bits = (0o050 if is_dir else 0o040) if verb == "read" else (0o030 if is_dir else 0o020)
    owner, group = _owner_group(st)
    mode = stat.S_IMODE(st.st_mode)
    via_group = (
        f", or as a member of group {group}"
        if mode & group_bits == group_bits and group != "root"
        else ""
    )
    return (
        f"{user} may not {verb} {blocker} (owner {owner}, group {group}, mode {mode:04o}): "
        f"run `{command_line()}` as root{via_group}"
    )


def client(socket: str, timeout: float = 30.0) -> Any:
    from fedfs.control.client import ControlClient

    return ControlClient(socket, timeout=timeout)


def parse_expiry(text: str) -> float:
    """--expires: a date (2026-12-31, 2026-12-31T18:00) or a duration from now (7d, 12h)."""
    from fedfs.policy.site import parse_duration

    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.datetime.strptime(text, fmt).astimezone().timestamp()
        except ValueError:
            pass
    try:
        return time.time() + parse_duration(text)
    except FedfsError:
        raise FedfsError(
            f"--expires {text!r}: use a date (2026-12-31 or 2026-12-31T18:00) or a duration (7d, 12h, 30m)"
        ) from None


def when(t: float | None) -> str:
    """A time for people, local, to the second (an expiry shown as 03:58 that ends at
    03:58:26 would look like a grant outliving its end)."""
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def table_flags(sp: argparse.ArgumentParser) -> None:
    """--json and --csv, for the commands that print a table."""
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON for tools")
    g.add_argument("--csv", action="store_true", help="print CSV for tools")


def output(
    args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str], title: str = ""
) -> None:
    """A table for people, or --json / --csv for tools."""
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, default=str))
        return
    if getattr(args, "csv", False):
        w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Text, not str: rich would read "[bold]" in a file name as markup.
    table = Table(title=Text(printable(title)) if title else None)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(Text("" if r.get(c) is None else printable(r.get(c))) for c in columns))
    # Piped output keeps whole cells (rich would fold them to 80 columns).
    Console(width=None if sys.stdout.isatty() else 250).print(table)
