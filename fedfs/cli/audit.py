"""`fedfs audit`: the questions admins ask about access, answered by the mount.

Who can access a path, what a user can access, what expires soon, grants
whose principal is gone, the history of policy changes, and whether the
signed audit chain is intact. The daemon answers over the control socket
(and decides who may ask what); this module turns the command line into
requests and the answers into tables. Runs in the command's only thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

from fedfs.cli.common import client, locate, locate_mount, output, table_flags, when
from fedfs.errors import FedfsError


def cmd_audit(args: argparse.Namespace) -> int:
    """Admins' questions, answered from the policy in force and the signed audit log."""
    from fedfs.policy.site import parse_duration

    what = args.audit_command
    if what == "who":
        _, fpath, socket = locate(args.path)
    else:
        _, fpath, socket = locate_mount(args.mount, f"audit {what}")
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
            cols, title = ["principal", "access", "via", "until"], f"who can access {args.path}"
        elif what == "user":
            rows = c.call("audit-user", name=args.name, path=fpath)
            cols, title = ["path", "access", "via", "until"], f"what {args.name} can access"
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
                "grants and data whose owner or object is gone",
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
                detail = r.get("detail") or {}
                # why a grant ended without an unshare; what set an owner's limit
                r["reason"] = detail.get("reason") or (
                    f"by {detail['via']}" if r["action"] == "limit" and "via" in detail else None
                )
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
                    "reason",
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """audit and its questions."""
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
            "who the kernel lets at PATH (owner, mode bits, grants, pass-through), "
            "from where, until when",
            [("path", {})],
        ),
        (
            "user",
            "every path under --mount that user NAME can reach, with what rights and why",
            [("name", {})],
        ),
        (
            "expiring",
            "grants that expire soon",
            [("--within", {"default": "7d", "help": "a duration (default 7d)"})],
        ),
        (
            "orphans",
            "grants naming users or groups that no longer exist or paths gone from the "
            "object store, data whose owner is gone",
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
            a.add_argument(
                "--mount",
                default=".",
                help="a path on the fedfs mount (default: .)"
                + ("; only what is under it is reported" if question == "user" else ""),
            )
        if question == "verify":
            a.add_argument("--json", action="store_true")
        else:
            table_flags(a)
        a.set_defaults(func=cmd_audit)
