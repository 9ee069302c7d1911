"""What every `fedfs` subcommand shares: finding the mount of a path, its control
client, times and expiry dates as people write them, and tables or JSON/CSV output.

Runs in the command's only thread. Imports only the standard library at module
level (the man pages are built from the parser without fedfs's dependencies);
the control client and rich are imported when a command runs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fedfs.errors import FedfsError
from fedfs.events import printable


def locate(path: str) -> tuple[Path, str, str]:
    """A path on a fedfs mount -> (mount point, fedfs path "/bucket/key", control socket)."""
    p = Path(os.path.abspath(path))
    if not os.path.lexists(p):
        raise FedfsError(f"{path}: no such file or directory")
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
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


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
