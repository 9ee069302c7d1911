"""`fedfs sync` and `fedfs stage`: what batch jobs run around their work on a mount.

sync waits until the uploads queued under a path are in the object store;
stage prefetches files into the cache before a job reads them. Both poll the
daemon over the control socket from the command's only thread, with a
progress bar on a terminal; imports go to cli.common only.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import stat
import sys
import time

from fedfs.cli.common import client, locate, printable

LOG_EVERY = 1.0  # seconds between progress lines in a job's log


def _count(n: int, what: str) -> str:
    """'1 file', '2 files': counts as people write them."""
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def cmd_sync(args: argparse.Namespace) -> int:
    """Wait until every upload queued under PATH is in the object store, with progress.

    Progress counts the bytes the store has received (multipart parts as they go), in
    the units of `fedfs status`: a bar on a terminal, a line a second at most in a job's
    log (stderr not a terminal), nothing with --quiet.
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from fedfs.config import format_size

    _, fpath, socket = locate(args.path)
    deadline = time.monotonic() + args.timeout
    with client(socket) as c:
        first = c.call("sync", path=fpath)
        total = first["bytes"]
        tty = sys.stderr.isatty()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), disable=not tty or args.quiet
        ) as bar:
            task = bar.add_task("", total=max(total, 1))
            state = first
            floor, printed, printed_at = 0, -1, -math.inf
            # Unmounting: give up once no upload finished for the daemon's drain_timeout
            # (an upload stuck in the network must not hold the unmount).
            stall = first.get("drain_timeout", 30.0) if getattr(args, "unmounting", False) else None
            moved, seen = time.monotonic(), (state["files"], state["bytes"], state.get("sent", 0))
            while state["files"]:
                left = state["bytes"] - state.get("sent", 0)
                total = max(total, left)
                # never backwards: between its last part and leaving the queue a file's
                # sent bytes are no longer counted (and a retry starts its parts again)
                done = floor = max(total - left, floor)
                line = (
                    f"uploading {_count(state['files'], 'file')}: "
                    f"{format_size(done)} of {format_size(total)}"
                )
                bar.update(task, description=line, completed=done, total=max(total, 1))
                now = time.monotonic()
                if not tty and not args.quiet and done != printed and now - printed_at >= LOG_EVERY:
                    print(line, file=sys.stderr, flush=True)
                    printed, printed_at = done, now
                if (
                    (state["failed"] and len(state["failed"]) == state["files"])
                    or now > deadline
                    or (stall is not None and now - moved > stall)
                ):
                    break
                time.sleep(0.2)
                state = c.call("pending", path=fpath)
                progress = (state["files"], state["bytes"], state.get("sent", 0))
                if progress != seen:
                    moved, seen = time.monotonic(), progress
    refused = state.get("refused", [])
    for f in refused:
        print(
            f"fedfs: {printable(f['path'])}: the object store refuses it for good "
            f"({printable(f['error'])}); not uploaded, not retried; its data is kept in "
            f"{printable(f['kept_in'])}. Write it again under a name the store accepts; an "
            "admin finds it with `fedfs fsck`",
            file=sys.stderr,
        )
    if state["files"]:
        print(
            f"fedfs: {_count(state['files'], 'file')} under {printable(args.path)} "
            f"{'is' if state['files'] == 1 else 'are'} not uploaded yet:",
            file=sys.stderr,
        )
        for f in state["failed"]:
            print(
                f"  {printable(f['path'])}: {printable(f['error'])} "
                f"(kept in {printable(f['kept_in'])}; retried automatically)",
                file=sys.stderr,
            )
        return 1
    if refused:
        return 1
    if state["open"]:
        n = len(state["open"])
        print(
            f"note: {_count(n, 'file')} {'is' if n == 1 else 'are'} still open for writing "
            f"and upload{'s' if n == 1 else ''} after {'it closes' if n == 1 else 'they close'}"
        )
    if not args.quiet:
        print(
            f"synced {printable(args.path)}: {_count(first['files'], 'file')} uploaded "
            f"({format_size(first['bytes'])})"
        )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    """Prefetch files (or whole trees) into the cache before a job reads them.

    What cannot be staged (a directory the caller may not list, a file it may not
    read) is named on stderr with the reason, and the exit status is 1.
    """
    from rich.progress import Progress

    from fedfs.config import format_size

    problems: list[str] = []

    def unreadable(e: OSError) -> None:
        why = (e.strerror or str(e)).lower()
        if e.errno in (errno.EACCES, errno.EPERM):
            why = "permission denied (you may not list this directory)"
        problems.append(f"{e.filename}: {why}")

    targets: list[tuple[str, str, int]] = []
    for path in args.paths:
        _, _, socket = locate(path)
        for root, _, files in (
            os.walk(path, onerror=unreadable)
            if os.path.isdir(path)
            else [(os.path.dirname(path), [], [os.path.basename(path)])]
        ):
            for f in files:
                full = os.path.join(root, f)
                try:
                    st = os.lstat(full)
                except OSError as e:
                    problems.append(f"{full}: {(e.strerror or str(e)).lower()}")
                    continue
                if stat.S_ISREG(st.st_mode):
                    targets.append((full, socket, st.st_size))
    done, nbytes, refused = 0, 0, []
    with Progress(disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("staging", total=sum(t[2] for t in targets) or 1)
        for i in range(0, len(targets), 64):
            batch = targets[i : i + 64]
            by_socket: dict[str, list[str]] = {}
            for full, socket, _ in batch:
                by_socket.setdefault(socket, []).append(locate(full)[1])
            for socket, fpaths in by_socket.items():
                with client(socket, timeout=3600) as c:
                    r = c.call("stage", paths=fpaths)
                done += r["files"]
                nbytes += r["bytes"]
                refused += r["refused"]
            bar.update(task, advance=sum(t[2] for t in batch))
    for line in problems + refused:
        print(f"fedfs: not staged: {printable(line)}", file=sys.stderr)
    print(f"staged {_count(done, 'file')} ({format_size(nbytes)}) into the cache")
    return 1 if refused or problems else 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """sync and stage, in --help order."""
    sy = sub.add_parser(
        "sync", help="wait until pending uploads under PATH are in the object store"
    )
    sy.add_argument("path", nargs="?", default=".", help="default: the current directory")
    sy.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    sy.add_argument("--quiet", "-q", action="store_true")
    sy.set_defaults(func=cmd_sync)

    st = sub.add_parser(
        "stage",
        help="prefetch files or trees into the cache before a job (stage-in)",
        description="Read whole files into the cache before a job starts, so its first reads "
        "come at cache speed. Only files the caller may read are staged; each path that "
        "could not be staged is named on stderr and the exit status is then 1.",
    )
    st.add_argument(
        "paths", nargs="+", metavar="PATH", help="files or directories on a fedfs mount"
    )
    st.set_defaults(func=cmd_stage)
