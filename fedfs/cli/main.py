"""The `fedfs` command: its --help is the manual.

Each subcommand parses its arguments, calls one module, and prints a result
or one line of error for people (exit status 1); tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedfs import __version__
from fedfs.errors import FedfsError

EPILOG = """\
Configuration: a TOML file with [store] (endpoint, region, access_key, secret_key),
[cache] (dir, size) and one [[buckets]] table per bucket (name, owner).
See README.md and docs/SEMANTICS.md."""


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

    table = Table(title=title or None)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    # Piped output keeps whole cells (rich would fold them to 80 columns).
    Console(width=None if sys.stdout.isatty() else 250).print(table)


def cmd_share(args: argparse.Namespace) -> int:
    _, fpath, socket = locate(args.path)
    expires = parse_expiry(args.expires) if args.expires else None
    with client(socket) as c:
        r = c.call("share", path=fpath, principal=args.principal, level=args.level, expires=expires)
    change = f" (was {r['replaced']})" if r["replaced"] else ""
    until = f", until {when(r['expires'])}" if r["expires"] else ""
    print(f"shared {args.path} with {r['principal']}: {r['level']}{change}{until}")
    _note(r)
    return 0


def _note(answer: dict[str, Any]) -> None:
    """A change in force here that other nodes do not have yet (shared policy log)."""
    if answer.get("note"):
        print(f"fedfs: note: {answer['note']}", file=sys.stderr)


def cmd_unshare(args: argparse.Namespace) -> int:
    _, fpath, socket = locate(args.path)
    with client(socket) as c:
        r = c.call("unshare", path=fpath, principal=args.principal)
    print(f"removed {r['level']} for {r['principal']} on {args.path}")
    _note(r)
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    _, fpath, socket = locate(args.path)
    with client(socket) as c:
        rows = c.call("grants", path=fpath)
    for r in rows:
        r["from"] = "this path" if not r["inherited"] else r["path"]
        r["until"] = when(r["expires"])
        r["since"] = when(r["granted_at"])
    output(
        args,
        rows,
        ["principal", "level", "from", "granted_by", "since", "until"],
        f"grants on {args.path}",
    )
    return 0


def _team_socket(args: argparse.Namespace) -> str:
    return locate(args.mount)[2]


def cmd_team(args: argparse.Namespace) -> int:
    with client(_team_socket(args)) as c:
        if args.team_command == "create":
            t = c.call("team-create", name=args.name, group=args.group)
            print(f"team {t['name']} created with gid {t['gid']}; owner: {', '.join(t['owners'])}")
            _note(t)
        elif args.team_command == "add":
            t = c.call("team-add", name=args.name, users=args.users, owner=args.owner)
            print(f"team {t['name']}: {len(t['members'])} members")
            _note(t)
        elif args.team_command == "remove":
            t = c.call("team-remove", name=args.name, users=args.users)
            print(f"team {t['name']}: {len(t['members'])} members")
            _note(t)
        elif args.team_command == "show":
            t = c.call("team-show", name=args.name)
            rows = [{"member": m, "owner": "yes" if m in t["owners"] else ""} for m in t["members"]]
            if args.json:
                print(json.dumps(t, indent=2))
            else:
                output(args, rows, ["member", "owner"], f"team {t['name']} (gid {t['gid']})")
        else:
            teams = c.call("team-list")
            for t in teams:
                t["members"] = len(t["members"])
                t["owners"] = ", ".join(t["owners"])
            output(args, teams, ["name", "gid", "members", "owners", "group"], "teams")
    return 0


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
            while state["files"]:
                if (
                    state["failed"] and len(state["failed"]) == state["files"]
                ) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
                state = c.call("pending", path=fpath)
                bar.update(task, completed=total - state["bytes"], files=state["files"])
    if state["files"]:
        print(
            f"fedfs: {state['files']} files under {args.path} are not uploaded yet:",
            file=sys.stderr,
        )
        for f in state["failed"]:
            print(
                f"  {f['path']}: {f['error']} (kept in {f['kept_in']}; retried automatically)",
                file=sys.stderr,
            )
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


def cmd_audit(args: argparse.Namespace) -> int:
    """Admins' questions, answered from the policy in force and the signed audit log."""
    from fedfs.policy.site import parse_duration

    what = args.audit_command
    if what == "who":
        _, fpath, socket = locate(args.path)
    else:
        _, _, socket = locate(args.mount)
    with client(socket, timeout=300) as c:
        if what == "verify":
            r = c.call("audit-verify")
            if args.json:
                print(json.dumps(r, indent=2))
            else:
                print(f"{r['log']}: {r['summary']}")
                if "nodes" in r:
                    print(f"shared policy log {r['shared_log']}:")
                    for node, nr in r["nodes"].items():
                        print(f"  {node}: {nr['summary']}")
            return 0 if r["ok"] else 1
        if what == "who":
            rows = c.call("audit-who", path=fpath)
            cols, title = ["principal", "level", "via", "until"], f"who can access {args.path}"
        elif what == "user":
            rows = c.call("audit-user", name=args.name)
            cols, title = ["path", "level", "via", "until"], f"what {args.name} can access"
        elif what == "expiring":
            rows = c.call("audit-expiring", within=parse_duration(args.within))
            cols, title = (
                ["path", "principal", "level", "until", "granted_by"],
                f"grants expiring within {args.within}",
            )
        elif what == "orphans":
            rows = c.call("audit-orphans")
            cols, title = (
                ["kind", "path", "principal", "problem"],
                "grants and data whose owner is gone",
            )
        else:
            since = parse_expiry_past(args.since) if args.since else None
            rows = c.call(
                "audit-log",
                since=since,
                path=locate(args.path)[1] if args.path else None,
                actor=args.actor,
            )
            for r in rows:
                r["when"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
            cols, title = (
                [
                    "when",
                    "node",
                    "actor",
                    "action",
                    "principal",
                    "path",
                    "level",
                    "before",
                    "after",
                ],
                "audit log",
            )
    for r in rows:
        if "until" in r:
            r["until"] = when(r["until"]) if not (args.json or args.csv) else r["until"]
    output(args, rows, cols, title)
    return 0


def parse_expiry_past(text: str) -> float:
    """--since: a date, or a duration back from now (7d = the last seven days)."""
    from fedfs.policy.site import parse_duration

    try:
        return datetime.datetime.fromisoformat(text).astimezone().timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except FedfsError:
        raise FedfsError(
            f"--since {text!r}: use a date (2026-11-01) or a duration back from now (7d, 12h)"
        ) from None


def cmd_status(args: argparse.Namespace) -> int:
    from fedfs.config import format_size

    _, _, socket = locate(args.path)
    with client(socket) as c:
        s = c.call("status")
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    cache, up, pol, ident = s["cache"], s["uploads"], s["policy"], s["identity"]
    lines = [
        f"mount      {s['mountpoint']}  ({s['config']}, fedfs {s['version']}, up {s['uptime']:.0f}s)",
        f"store      {s['endpoint']}  buckets: {', '.join(s['buckets'])}",
        f"           {s['s3']['requests']} requests, {s['s3']['errors']} errors, latency p50 "
        f"{s['s3']['latency_p50_ms']} ms, p99 {s['s3']['latency_p99_ms']} ms (latest requests)",
        f"cache      {cache['dir']}: {format_size(cache['clean_bytes'] + cache['dirty_bytes'])} of "
        f"{format_size(cache['size'])} used ({format_size(cache['dirty_bytes'])} dirty), "
        f"{format_size(cache['free_disk'])} free on disk; {cache['hits']} hits, {cache['misses']} misses",
        f"uploads    {up['queued']} queued ({format_size(up['queued_bytes'])}), {up['failed']} failing, "
        f"{up['done']} done, {up['conflicts']} conflicts",
        f"policy     version {pol['version']}: {pol['grants']} grants, {pol['teams']} teams, "
        f"lag {pol['lag']:.1f}s",
        f"identity   {ident['source']}: {'ok' if ident['ok'] else 'DOWN: ' + str(ident['last_error'])}",
    ]
    if pol.get("log"):
        lg = pol["log"]
        lines[-1:-1] = [
            f"policy log {lg['log']} as node {lg['node']}: {lg['enrolment']}",
            f"           {lg['applied']} applied, {lg['published']} published, "
            f"{lg['unpublished']} not yet published, {lg['waiting']} waiting, "
            f"{lg['rejected']} rejected"
            + (f" (last: {lg['last_rejected']})" if lg["last_rejected"] else "")
            + (f"; ERROR {lg['error']}" if lg["error"] else ""),
        ]
    print("\n".join(lines))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from fedfs.ops import doctor

    return doctor.report(Path(args.config), as_json=args.json, max_keys=args.max_keys)


def cmd_fsck(args: argparse.Namespace) -> int:
    from fedfs.ops import fsck

    both = not (args.journal or args.policy)
    try:
        return fsck.main(
            Path(args.config), journal=both or args.journal, policy=both or args.policy
        )
    except FedfsError as e:  # nothing was repaired: exit status 2, not 1 ("repaired")
        print(f"fedfs: {e}", file=sys.stderr)
        return fsck.FAILED


def cmd_admin(args: argparse.Namespace) -> int:
    """Admin key, node keys and their enrolment in the shared policy log."""
    from fedfs import config
    from fedfs.ops import admin

    what = args.admin_command
    if what == "keygen":
        private, public = admin.keygen(Path(args.out))
        print(f"admin key {private} (keep it private, off the nodes); public key {public}:")
        print(f'  list it in every node\'s config: [policy] admin_keys = ["{public}"]')
        return 0
    cfg = config.load(args.config)
    if what == "node-key":
        from fedfs.daemon.daemon import node_key

        cfg.policy.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = node_key(cfg)
        print(key.public_pem().decode(), end="")
        return 0
    if what == "enroll-node":
        e = admin.enroll(cfg, Path(args.admin_key), args.node, Path(args.public_key))
        print(f"enrolled key {e.key_id} for node {e.node}")
        return 0
    if what == "revoke-node":
        for e in admin.revoke(cfg, Path(args.admin_key), args.which):
            print(f"revoked key {e.key_id} of node {e.node}")
        return 0
    output(args, admin.enrollments(cfg), ["node", "key_id", "enrolled", "state"], "enrolled nodes")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedfs.ops import demo

    if args.stop:
        return demo.stop(Path(args.mountpoint), Path(args.state))
    return demo.start(Path(args.mountpoint), Path(args.state), args.port)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(parser(), shell=args.shell), end="")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"fedfs {__version__}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedfs",
        description="Team-controlled S3 buckets as POSIX trees, with kernel-enforced share grants.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fedfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

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

    def table_flags(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--json", action="store_true", help="print JSON for tools")
        g.add_argument("--csv", action="store_true", help="print CSV for tools")

    sh = sub.add_parser(
        "share",
        help="give a user, group or team access to a path",
        description="Grant PRINCIPAL a level of access to PATH and everything below it, "
        "existing and new. Needs manage at PATH (the bucket owner, a manage grant, "
        "or a site admin). Levels: read (r + X), write (rw + X), manage (write, and "
        "may share below PATH).",
    )
    sh.add_argument("path", help="a file or directory on a fedfs mount")
    sh.add_argument(
        "--with",
        dest="principal",
        required=True,
        metavar="PRINCIPAL",
        help="user:NAME, group:NAME or team:NAME",
    )
    sh.add_argument(
        "--level", default="read", choices=["read", "write", "manage"], help="default: read"
    )
    sh.add_argument(
        "--read", dest="level", action="store_const", const="read", help="same as --level read"
    )
    sh.add_argument(
        "--write", dest="level", action="store_const", const="write", help="same as --level write"
    )
    sh.add_argument(
        "--manage",
        dest="level",
        action="store_const",
        const="manage",
        help="same as --level manage",
    )
    sh.add_argument("--expires", metavar="WHEN", help="a date (2026-12-31) or a duration (7d, 12h)")
    sh.set_defaults(func=cmd_share)

    un = sub.add_parser(
        "unshare",
        help="remove a grant",
        description="Remove the grant for PRINCIPAL "
        "made on PATH itself (grants on parent paths are removed there). Needs "
        "manage, except to give up a grant naming yourself.",
    )
    un.add_argument("path")
    un.add_argument("--with", dest="principal", required=True, metavar="PRINCIPAL")
    un.set_defaults(func=cmd_unshare)

    gr = sub.add_parser("grants", help="what grants apply to a path, and where they come from")
    gr.add_argument("path")
    table_flags(gr)
    gr.set_defaults(func=cmd_grants)

    tm = sub.add_parser(
        "team",
        help="create and change teams (scientist-managed groups)",
        description="Teams are groups that scientists manage: the creator is the first "
        "owner; owners add and remove members. A team gets a fixed gid from the "
        "site's range. Commands act on the mount holding --mount (default: the "
        "current directory).",
    )
    tsub = tm.add_subparsers(dest="team_command", metavar="ACTION", required=True)
    for action, helptext in (
        ("create", "create a team; you become its owner"),
        ("add", "add members (--owner: as owners)"),
        ("remove", "remove members or owners (anyone may leave)"),
        ("show", "list a team's members and owners"),
        ("list", "list all teams"),
    ):
        t = tsub.add_parser(action, help=helptext)
        t.add_argument("--mount", default=".", help="a path on the fedfs mount (default: .)")
        if action != "list":
            t.add_argument("name", help="the team's name")
        if action in ("add", "remove"):
            t.add_argument("users", nargs="+", help="user names")
        if action == "add":
            t.add_argument("--owner", action="store_true", help="add them as owners too")
        if action == "create":
            t.add_argument(
                "--group", help="an NSS/LDAP group that backs the team (you must be in it)"
            )
        if action in ("show", "list"):
            table_flags(t)
        t.set_defaults(func=cmd_team)

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

    au = sub.add_parser(
        "audit",
        help="who can access what, what changed, and is the log intact",
        description="Questions admins ask, answered from the policy in force and the "
        "signed audit log. Site admins and audit_readers see everything; others see "
        "what concerns paths they manage.",
    )
    asub = au.add_subparsers(dest="audit_command", metavar="QUESTION", required=True)
    questions: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = [
        ("verify", "check the audit chain: signatures, order, gaps, truncation", []),
        (
            "who",
            "every principal with access to PATH, through which grant, until when",
            [("path", {})],
        ),
        ("user", "everything user NAME can access (direct, groups, teams)", [("name", {})]),
        (
            "expiring",
            "grants that expire soon",
            [("--within", {"default": "7d", "help": "a duration (default 7d)"})],
        ),
        (
            "orphans",
            "grants naming users or groups that no longer exist, data whose owner is gone",
            [],
        ),
        (
            "log",
            "the history of policy changes",
            [
                ("--since", {"help": "a date or a duration back from now (7d)"}),
                ("--path", {"help": "only changes at, above or below this path"}),
                ("--actor", {"help": "only changes made by this user"}),
            ],
        ),
    ]
    for question, helptext, arguments in questions:
        a = asub.add_parser(question, help=helptext)
        for flag, options in arguments:
            a.add_argument(flag, **options)
        if question != "who":  # who takes a path on the mount itself
            a.add_argument("--mount", default=".", help="a path on the fedfs mount (default: .)")
        if question == "verify":
            a.add_argument("--json", action="store_true")
        else:
            table_flags(a)
        a.set_defaults(func=cmd_audit)

    ss = sub.add_parser("status", help="one screen about a mount: cache, uploads, policy, identity")
    ss.add_argument("path", nargs="?", default=".", help="a path on the mount (default: .)")
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(func=cmd_status)

    dr = sub.add_parser(
        "doctor",
        help="check a config against the world and say how to fix each problem",
        description="Check CONFIG without mounting it: the file, the endpoint, the "
        "credentials, the clock, each bucket and the keys fedfs cannot show, the "
        "identity source and bucket owners, the cache directory and its disk, FUSE, "
        "the site policy, the policy database and the audit chain, the metrics outputs, "
        "and the running mount if its control socket answers. Each check prints OK, "
        "WARN or FAIL with the fix; exit status 1 if any check failed. Changes nothing.",
    )
    dr.add_argument("--config", "-c", required=True, help="TOML config file")
    dr.add_argument("--json", action="store_true", help="print JSON for tools")
    dr.add_argument(
        "--max-keys",
        type=int,
        default=100_000,
        metavar="N",
        help="list at most N keys per bucket looking for hidden names (default 100000)",
    )
    dr.set_defaults(func=cmd_doctor)

    fk = sub.add_parser(
        "fsck",
        help="repair a damaged write-back journal or policy database (mount stopped)",
        description="Check the write-back journal (CACHE/journal.db) and the policy database "
        "(STATE/policy.db) of CONFIG, whose mount must be stopped, and repair what is damaged: "
        "the damaged file is kept beside the original as NAME.damaged-TIME, every row that "
        "can still be read is recovered into a fresh journal, and staging files that no "
        "recovered row names are moved to CACHE/lost+found/ and listed (they may hold data "
        "not in the object store); the policy database is rebuilt by replaying this node's "
        "audit chain. Exit status 0: nothing was wrong; 1: repaired (what was lost is "
        "listed); 2: could not repair.",
    )
    fk.add_argument("--config", "-c", required=True, help="TOML config file")
    fk.add_argument("--journal", action="store_true", help="check only the write-back journal")
    fk.add_argument("--policy", action="store_true", help="check only the policy database")
    fk.set_defaults(func=cmd_fsck)

    ad = sub.add_parser(
        "admin",
        help="the admin key and the node keys a shared policy log trusts",
        description="Several nodes share policy through a log in the object store "
        "([policy] log_bucket); each node signs its changes with its own key, and an admin "
        "key enrolls node keys. These commands use CONFIG's credentials directly; no mount "
        "needs to run.",
    )
    adsub = ad.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    kg = adsub.add_parser("keygen", help="make an admin key pair: OUT and OUT.pub")
    kg.add_argument("out", help="where to write the private key (OUT.pub gets the public key)")
    nk = adsub.add_parser("node-key", help="print this node's public key (made if missing)")
    en = adsub.add_parser("enroll-node", help="trust a node's public key for its changes")
    en.add_argument("--node", required=True, help="the node's name ([policy] node)")
    en.add_argument("public_key", help="the node's public key file (from `fedfs admin node-key`)")
    rv = adsub.add_parser("revoke-node", help="stop trusting a node key (or all keys of a node)")
    rv.add_argument("which", help="a key id or a node name")
    ls = adsub.add_parser("nodes", help="the enrolled node keys and whether nodes trust them")
    table_flags(ls)
    for sp in (nk, en, rv, ls):
        sp.add_argument("--config", "-c", required=True, help="TOML config file")
    for sp in (en, rv):
        sp.add_argument("--admin-key", required=True, help="the admin private key file")
    for sp in (kg, nk, en, rv, ls):
        sp.set_defaults(func=cmd_admin)

    co = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script for SHELL, e.g. "
        "fedfs completion bash > /etc/bash_completion.d/fedfs (the RPM installs it).",
    )
    co.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    co.set_defaults(func=cmd_completion)

    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=cmd_version)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return int(args.func(args))
    except FedfsError as e:
        print(f"fedfs: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
