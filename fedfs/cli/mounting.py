"""`fedfs mount`, `fedfs umount` and `fedfs demo`: starting and stopping mounts.

mount runs the daemon in the foreground or forks it off and waits on a pipe
for its warnings and "ready", or the child's one-line error; umount first
waits for pending uploads (as `fedfs sync` does), then unmounts and waits for
the daemon to exit; a dead mount (its daemon gone) is simply unmounted.
Imports cli.common and cli.jobs, and the daemon and ops.demo when a command
runs.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fedfs.cli.common import command_line, denied, locate
from fedfs.cli.jobs import cmd_sync
from fedfs.errors import FedfsError


def cmd_mount(args: argparse.Namespace) -> int:
    from fedfs import config
    from fedfs.daemon import daemon, logs
    from fedfs.daemon.mountpoint import check_mountpoint

    cfg = config.load(args.config)
    mountpoint = Path(args.mountpoint).resolve()
    check_mountpoint(mountpoint, args.nonempty)
    if args.foreground:
        logs.setup_logging(args.log_level)
        return daemon.Daemon(cfg, mountpoint, args.nonempty).serve()
    return _daemonize(cfg, mountpoint, args)


def _daemonize(cfg: object, mountpoint: Path, args: argparse.Namespace) -> int:
    """Fork; the child mounts and reports its warnings, then 'ready' or its error, on a pipe."""
    from fedfs.daemon import daemon, logs

    logfile = Path(args.log_file) if args.log_file else default_logfile(mountpoint)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            answer = pipe.read().decode(errors="replace")
        *warnings, answer = answer.split("\n")
        for warning in warnings:
            print(f"fedfs: warning: {warning}", file=sys.stderr)
        if answer.startswith("ready"):
            print(f"fedfs: mounted {cfg.path} on {mountpoint} (log: {logfile})")  # type: ignore[attr-defined]
            return 0
        print(
            f"fedfs: {answer or 'the mount process ended without a word; see ' + str(logfile)}",
            file=sys.stderr,
        )
        return 1
    os.close(r)
    os.setsid()
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        logs.setup_logging(args.log_level, logfile)
        d = daemon.Daemon(cfg, mountpoint, args.nonempty)  # type: ignore[arg-type]

        def ready() -> None:
            said = "".join(line.replace("\n", " ") + "\n" for line in d.warnings)
            os.write(w, said.encode() + b"ready")
            os.close(w)

        code = d.serve(on_ready=ready)
    except FedfsError as e:
        _report(w, str(e))
    except PermissionError as e:
        _report(w, denied(e))
    except Exception as e:
        import logging

        logging.getLogger("fedfs").exception("mount failed")
        _report(w, f"mount failed unexpectedly: {e} (see {logfile})")
    os._exit(code)


def _report(w: int, message: str) -> None:
    try:
        os.write(w, message.encode())
        os.close(w)
    except OSError:
        pass


def default_logfile(mountpoint: Path) -> Path:
    from fedfs.daemon.logs import DEFAULT_LOG_DIR

    name = str(mountpoint).strip("/").replace("/", "-") or "root"
    return DEFAULT_LOG_DIR / f"{name}.log"


def cmd_umount(args: argparse.Namespace) -> int:
    from fedfs.daemon.mountpoint import is_dead, mount_entry

    mountpoint = str(Path(args.mountpoint).resolve())
    entry = mount_entry(mountpoint)
    if entry is None:
        raise FedfsError(f"{mountpoint} is not mounted")
    owner = entry.user_id
    if owner is not None and os.geteuid() not in (0, owner):
        try:
            who = pwd.getpwuid(owner).pw_name
        except KeyError:
            who = f"uid {owner}"
        raise FedfsError(
            f"{mountpoint} was mounted by {who}; only {who} may unmount it: "
            f"run `{command_line()}` as {who}"
        )
    dead = is_dead(mountpoint)
    if not args.lazy and not dead:
        # Upload what is queued while the mount still answers, with progress; what
        # cannot be uploaded stays in the cache and the journal for the next mount.
        try:
            locate(mountpoint)
        except FedfsError:
            pass
        else:
            sync_args = argparse.Namespace(
                path=mountpoint, timeout=args.wait, quiet=False, unmounting=True
            )
            if cmd_sync(sync_args) != 0:
                print(
                    "fedfs: unmounting anyway: the files above stay in the cache and are "
                    "uploaded when this config is mounted again",
                    file=sys.stderr,
                )
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    if args.lazy:
        cmd.insert(1, "-z")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise FedfsError(
            f"cannot unmount {mountpoint}: {r.stderr.strip()} "
            "(a process may still use it: see `fuser -vm " + mountpoint + "`)"
        )
    if dead:
        print(f"fedfs: {mountpoint} was a dead mount (its daemon had stopped); unmounted it")
        return 0
    # The daemon uploads what is still pending, then exits; wait for it.
    deadline = time.monotonic() + args.wait
    while _daemon_alive(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"fedfs: unmounted {mountpoint}")
    return 0


def _daemon_alive(mountpoint: str) -> bool:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"mount" in cmdline
            and any(a.rstrip(b"/") == mountpoint.encode() for a in cmdline)
            and any(b"fedfs" in a for a in cmdline[:3])
        ):
            return True
    return False


def cmd_demo(args: argparse.Namespace) -> int:
    from fedfs.ops import demo

    if args.stop:
        return demo.stop(Path(args.mountpoint), Path(args.state))
    return demo.start(Path(args.mountpoint), Path(args.state), args.port)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """mount, umount and demo, in --help order."""
    m = sub.add_parser(
        "mount",
        help="mount the buckets of a config file",
        description="Mount every [[buckets]] entry of CONFIG as a directory under "
        "MOUNTPOINT. Daemonizes once the mount answers, unless --foreground.",
    )
    m.add_argument("--config", "-c", required=True, help="TOML config file")
    m.add_argument("mountpoint", help="an existing, empty directory")
    m.add_argument(
        "--nonempty",
        action="store_true",
        help="mount even if MOUNTPOINT holds files (they are hidden until the unmount)",
    )
    m.add_argument(
        "--foreground",
        "-f",
        action="store_true",
        help="stay in the foreground and log to stderr (systemd, debugging)",
    )
    m.add_argument(
        "--log-file",
        help="log file when daemonized (default /var/log/fedfs/MOUNT.log); made 0600, "
        "readable by root only",
    )
    m.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser(
        "umount",
        help="unmount, after pending uploads finish",
        description="Unmount MOUNTPOINT; the daemon uploads what is pending, then exits.",
    )
    u.add_argument("mountpoint")
    u.add_argument("--lazy", "-z", action="store_true", help="detach now even if busy")
    u.add_argument(
        "--wait", type=float, default=600, help="seconds to wait for the daemon (default 600)"
    )
    u.set_defaults(func=cmd_umount)

    d = sub.add_parser(
        "demo",
        help="run fedfs against a local S3 server it starts itself",
        description="Start a local S3 endpoint (moto) on loopback, create a demo "
        "bucket and mount it. --stop unmounts and stops the server.",
    )
    d.add_argument("--mountpoint", default="/mnt/fedfs", help="where to mount (default /mnt/fedfs)")
    d.add_argument("--state", default="/var/lib/fedfs-demo", help="config, cache and server log")
    d.add_argument("--port", type=int, default=9000, help="S3 port on 127.0.0.1 (default 9000)")
    d.add_argument("--stop", action="store_true", help="unmount and stop the demo S3 server")
    d.set_defaults(func=cmd_demo)
