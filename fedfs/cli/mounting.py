"""`fedfs mount`, `fedfs umount` and `fedfs demo`: starting and stopping mounts.

mount runs the daemon in the foreground or forks it off and waits on a pipe
for "ready" or the child's one-line error; umount first waits for pending
uploads (as `fedfs sync` does), then unmounts and waits for the daemon to
exit. Imports cli.common and cli.jobs, and the daemon and ops.demo when a
command runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fedfs.cli.common import locate
from fedfs.cli.jobs import cmd_sync
from fedfs.errors import FedfsError


def cmd_mount(args: argparse.Namespace) -> int:
    from fedfs import config
    from fedfs.daemon import daemon

    cfg = config.load(args.config)
    mountpoint = Path(args.mountpoint).resolve()
    daemon.check_mountpoint(mountpoint)
    if args.foreground:
        daemon.setup_logging(args.log_level)
        return daemon.Daemon(cfg, mountpoint).serve()
    return _daemonize(cfg, mountpoint, args)


def _daemonize(cfg: object, mountpoint: Path, args: argparse.Namespace) -> int:
    """Fork; the child mounts and reports 'ready' or its error through a pipe."""
    from fedfs.daemon import daemon

    logfile = Path(args.log_file) if args.log_file else default_logfile(mountpoint)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as pipe:
            answer = pipe.read().decode(errors="replace")
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
        daemon.setup_logging(args.log_level, logfile)
        d = daemon.Daemon(cfg, mountpoint)  # type: ignore[arg-type]

        def ready() -> None:
            os.write(w, b"ready")
            os.close(w)

        code = d.serve(on_ready=ready)
    except FedfsError as e:
        _report(w, str(e))
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
    name = str(mountpoint).strip("/").replace("/", "-") or "root"
    return Path("/var/log/fedfs") / f"{name}.log"


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint = str(Path(args.mountpoint).resolve())
    if not os.path.ismount(mountpoint):
        raise FedfsError(f"{mountpoint} is not mounted")
    if not args.lazy:
        # Upload what is queued while the mount still answers, with progress; what
        # cannot be uploaded stays in the cache and the journal for the next mount.
        try:
            locate(mountpoint)
        except FedfsError:
            pass
        else:
            sync_args = argparse.Namespace(path=mountpoint, timeout=args.wait, quiet=False)
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
        "--foreground",
        "-f",
        action="store_true",
        help="stay in the foreground and log to stderr (systemd, debugging)",
    )
    m.add_argument("--log-file", help="log file when daemonized (default /var/log/fedfs/MOUNT.log)")
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
