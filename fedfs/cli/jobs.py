"""`fedfs sync` and `fedfs stage`: what batch jobs run around their work on a mount.

sync waits until the uploads queued under a path are in the object store;
stage prefetches files into the cache before a job reads them. Both poll the
daemon over the control socket from the command's only thread, with a
progress bar on a terminal; imports go to cli.common only.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from fedfs.cli.common import client, locate, shown


def cmd_sync(args: argparse.Namespace) -> int:
    """Wait until every upload queued under PATH is in the object store, with progress."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    _, fpath, socket = locate(args.path)
    deadline = time.monotonic() + args.timeout
    with client(socket) as c:
        first = c.call("sync", path=fpath)
        total = max(first["bytes"], 1)
        with Progress(
            TextColumn("uploading {task.fields[files]} files"),
            BarColumn(),
            DownloadColumn(),
            disable=not sys.stderr.isatty() or args.quiet,
        ) as bar:
            task = bar.add_task("sync", total=total, files=first["files"])
            state = first
            # Unmounting: give up once no upload finished for the daemon's drain_timeout
            # (an upload stuck in the network must not hold the unmount).
            stall = first.get("drain_timeout", 30.0) if getattr(args, "unmounting", False) else None
            moved, seen = time.monotonic(), (state["files"], state["bytes"])
            while state["files"]:
                if (
                    (state["failed"] and len(state["failed"]) == state["files"])
                    or time.monotonic() > deadline
                    or (stall is not None and time.monotonic() - moved > stall)
                ):
                    break
                time.sleep(0.2)
                state = c.call("pending", path=fpath)
                if (state["files"], state["bytes"]) != seen:
                    moved, seen = time.monotonic(), (state["files"], state["bytes"])
                bar.update(task, completed=total - state["bytes"], files=state["files"])
    refused = state.get("refused", [])
    for f in refused:
        print(
            f"fedfs: {shown(f['path'])}: the object store refuses it for good "
            f"({shown(f['error'])}); not uploaded, not retried; its data is kept in "
            f"{f['kept_in']}. Write it again under a name the store accepts; an admin "
            "finds it with `fedfs fsck`",
            file=sys.stderr,
        )
    if state["files"]:
        print(
            f"fedfs: {state['files']} files under {args.path} are not uploaded yet:",
            file=sys.stderr,
        )
        for f in state["failed"]:
            print(
                f"  {shown(f['path'])}: {shown(f['error'])} (kept in {f['kept_in']}; "
                "retried automatically)",
                file=sys.stderr,
            )
        return 1
    if refused:
        return 1
    if state["open"]:
        print(
            f"note: {len(state['open'])} files are still open for writing and upload after they close"
        )
    if not args.quiet:
        print(f"synced {args.path}: {first['files']} files uploaded")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    """Prefetch files (or whole trees) into the cache before a job reads them."""
    from rich.progress import Progress

    targets: list[tuple[str, str, int]] = []
    for path in args.paths:
        _, _, socket = locate(path)
        for root, _, files in (
            os.walk(path)
            if os.path.isdir(path)
            else [(os.path.dirname(path), [], [os.path.basename(path)])]
        ):
            for f in files:
                full = os.path.join(root, f)
                st = os.lstat(full)
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
    for line in refused:
        print(f"fedfs: not staged: {line}", file=sys.stderr)
    print(f"staged {done} files ({nbytes} bytes) into the cache")
    return 1 if refused else 0


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
        "stage", help="prefetch files or trees into the cache before a job (stage-in)"
    )
    st.add_argument("paths", nargs="+")
    st.set_defaults(func=cmd_stage)
