"""`fedfs share`, `unshare`, `grants` and `team`: scientists deciding who reaches their data.

Each command asks the daemon of the mount holding its path, over the control
socket; the daemon decides and answers, and the command prints one line (or a
table). Runs in the command's only thread; imports go to cli.common only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fedfs.cli.common import (
    client,
    locate,
    locate_mount,
    output,
    parse_expiry,
    printable,
    table_flags,
    when,
)


def cmd_share(args: argparse.Namespace) -> int:
    _, fpath, socket = locate(args.path)
    expires = parse_expiry(args.expires) if args.expires else None
    with client(socket) as c:
        r = c.call("share", path=fpath, principal=args.principal, level=args.level, expires=expires)
    change = f" (was {r['replaced']})" if r["replaced"] else ""
    until = f", until {when(r['expires'])}" if r["expires"] else ""
    print(f"shared {printable(args.path)} with {r['principal']}: {r['level']}{change}{until}")
    _note(r)
    _export(r)
    if r.get("denied"):
        print(f"fedfs: warning: {printable(r['denied'])}", file=sys.stderr)
    return 0


def _note(answer: dict[str, Any]) -> None:
    """A change in force here that other nodes do not have yet (shared policy log)."""
    if answer.get("note"):
        print(f"fedfs: note: {printable(answer['note'])}", file=sys.stderr)


def _export(answer: dict[str, Any]) -> None:
    """Where the bucket policy stands ([object_acl] export): said when it is in line, a
    warning when it does not (yet) hold the change."""
    e = answer.get("export")
    if not e:
        return
    if e.get("note"):
        print(f"fedfs: warning: {printable(e['note'])}", file=sys.stderr)
    elif e.get("removed"):
        print(f"removed from the bucket policy of {printable(', '.join(e['buckets']))} too")
    elif e.get("exported") and e.get("bucket"):
        print(f"exported to the bucket policy of {printable(e['bucket'])}")


def cmd_unshare(args: argparse.Namespace) -> int:
    # A revocation never waits on the store: a path the mount cannot look up (gone,
    # the store refusing or down) is named as written, and the daemon removes the
    # grant recorded for exactly that path, by the policy's authority alone.
    unresolved = _unresolved(args.path)
    _, fpath, socket = locate(args.path, gone_ok=True)
    with client(socket) as c:
        r = c.call("unshare", path=fpath, principal=args.principal)
    print(f"removed {r['level']} for {r['principal']} on {printable(args.path)}")
    if unresolved:
        print(
            f"fedfs: note: {printable(args.path)} could not be looked up through the mount "
            f"({unresolved}); the grant recorded for exactly that path was removed",
            file=sys.stderr,
        )
    _note(r)
    _export(r)
    return 0


# What an imported right of a bucket policy covers (policy/model.py Shape), as a reader
# of `fedfs grants` needs it: a listing right is not a read of the files.
_SHAPE_WORDS = {
    "below": "under it",
    "prefix": "it and under it",
    "list": "list",
    "list-one": "list",
}


def _one_row_each(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows: an imported right says what it covers next to its level, and
    rows that read the same (a statement's `P/` and `P/*` listing) are shown once."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in rows:
        words = _SHAPE_WORDS.get(str(r.get("shape") or "tree"))
        if words == "list":
            r = {**r, "level": "list"}
        elif words:
            r = {**r, "level": f"{r['level']} ({words})"}
        key = (r["principal"], r["level"], r["path"], r["granted_by"], r["effective"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _unresolved(path: str) -> str | None:
    """Why the mount cannot look path up now (gone, the store refusing...), or None."""
    try:
        os.lstat(path)
    except OSError as e:
        return e.strerror or str(e)
    return None


def cmd_grants(args: argparse.Namespace) -> int:
    _, fpath, socket = locate(args.path)
    with client(socket) as c:
        rows = c.call("grants", path=fpath)
    if not rows and not (args.json or args.csv):
        print(
            f"no grants apply to {printable(args.path)}: "
            "its owner and mode bits alone decide who may access it"
        )
        return 0
    columns = ["principal", "level", "effective", "from", "granted_by", "since", "until"]
    if not (args.json or args.csv):
        rows = _one_row_each(rows)
    for r in rows:
        r["from"] = "this path" if not r["inherited"] else r["path"]
        r["until"] = when(r["expires"])
        r["since"] = when(r["granted_at"])
        r["in force"] = "yes" if not r.get("suspended") else f"no: {r['suspended']}"
    if any(r.get("shape") == "object" for r in rows):  # a grant made on a file
        columns.append("covers")
        for r in rows:
            r["covers"] = _COVERS.get(r.get("shape", "tree"), r.get("shape", ""))
    if any(r.get("suspended") for r in rows):
        columns.append("in force")  # a stricter site policy left some grants out
    if any(r.get("exported") for r in rows):  # [object_acl] export on this node
        columns.append("exported")
        for r in rows:
            r["exported"] = r.get("exported") or ""
    output(args, rows, columns, f"grants on {args.path}")  # output escapes it
    if not (args.json or args.csv):
        for line in limit_lines(rows, printable(args.path)) + denied_lines(rows):
            print(line)
    return 0


_COVERS = {"object": "this file only", "tree": "it and all below"}


def limit_lines(rows: list[dict[str, Any]], shown: str) -> list[str]:
    """A line for each grant the owner's limit (the ACL mask of the object) narrows here;
    one that leaves the grant nothing says plainly that it denies and overrides it."""
    lines = []
    for r in rows:
        if not r.get("limited_by") or r["level"] == "none":
            continue
        if r["effective"] == "---":
            by = r.get("mask_by")
            limit = f"the owner's limit (set by {by})" if by else "the owner's limit"
            lines.append(
                f"{_who(r['principal'])}: denied here by {limit}, the ACL mask of {shown} "
                f"being --- - overrides the {r['level']} grant above; {_lifts(r)} lifts the limit"
            )
        else:
            lines.append(
                f"note: the ACL mask of {shown} is {r['mask']} "
                f"({_set_by(r.get('mask_by'))}), so {r['principal']} {r['level']} works "
                f"as {r['effective']} here; {_lifts(r)} lifts the limit"
            )
    return lines


def denied_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One plain line per Deny of a bucket policy at this path (rows of level "none"):
    whom it denies, which statement, and that it overrides the grants listed above."""
    lines = []
    for d in rows:
        if d["level"] != "none":
            continue
        source = str(d["granted_by"])
        sid = source.removeprefix("bucket-policy:")
        what = (
            f"bucket policy statement {sid}"
            if sid.startswith("#")
            else f"bucket policy statement {printable(repr(sid))}"
        )
        if not source.startswith("bucket-policy:"):
            what = printable(source)
        where = "" if not d["inherited"] else f" (the Deny is on {printable(d['path'])})"
        if d["principal"] == "other":
            held = [r for r in rows if r["level"] != "none" and r["principal"] == "other"]
            tail = (
                "overrides the public access above"
                if held
                else "everyone without a grant of their own is refused"
            )
            lines.append(f"everyone else (other): denied here by {what}{where} - {tail}")
            continue
        held = [r for r in rows if r["level"] != "none" and r["principal"] == d["principal"]]
        tail = (
            "overrides the grants above"
            if held
            else "no grant, mode bit or group gives them access here"
        )
        lines.append(f"{_who(d['principal'])}: denied here by {what}{where} - {tail}")
    return lines


def _who(principal: str) -> str:
    return printable(principal.removeprefix("user:"))


def _set_by(by: str | None) -> str:
    """What set an object's limit on grants, as stored with it (older objects: not known)."""
    return f"set by {by}" if by in ("chmod", "setfacl") else "the owner's limit"


def _lifts(row: dict[str, Any]) -> str:
    if row.get("mask_by") == "setfacl":
        return "setfacl -m m::rwx"
    return f"chmod g+{row['limited_by']}"


def cmd_team(args: argparse.Namespace) -> int:
    with client(locate_mount(args.mount, "team")[2]) as c:
        if args.team_command == "create":
            t = c.call("team-create", name=args.name, group=args.group)
            print(f"team {t['name']} created with gid {t['gid']}; owner: {', '.join(t['owners'])}")
            _note(t)
        elif args.team_command == "add":
            t = c.call("team-add", name=args.name, users=args.users, owner=args.owner)
            print(f"team {t['name']}: {len(t['members'])} members")
            _note(t)
            _export(t)
        elif args.team_command == "remove":
            t = c.call("team-remove", name=args.name, users=args.users)
            print(f"team {t['name']}: {len(t['members'])} members")
            _note(t)
            _export(t)
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """share, unshare, grants and team, in --help order."""
    sh = sub.add_parser(
        "share",
        help="give a user, group or team access to a path",
        description="Grant PRINCIPAL a level of access to PATH and everything below it, "
        "existing and new. Needs manage at PATH (the bucket owner, a manage grant, "
        "or a site admin). Levels: read (r + X), write (rw + X), manage (write, and "
        "may share below PATH). With [object_acl] in the config, the grant is also "
        "written into the bucket's bucket policy, so the grantee's own S3 keys get the "
        "same access; the answer says whether it was.",
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
        "manage, except to give up a grant naming yourself. PATH may be gone: a grant "
        "whose object was removed outside the mount (`fedfs audit orphans` lists them).",
    )
    un.add_argument("path")
    un.add_argument("--with", dest="principal", required=True, metavar="PRINCIPAL")
    un.set_defaults(func=cmd_unshare)

    gr = sub.add_parser(
        "grants",
        help="what grants apply to a path, and where they come from",
        description="The grants that apply at PATH: fedfs grants made there or on a "
        "directory above it, and what the bucket's own policy gives or denies (source "
        "bucket-policy:SID or bucket-acl). `effective` is what each gives this object "
        "after the owner's limit (the ACL mask) and any Deny; `exported` (with "
        "[object_acl]) whether the bucket policy holds it.",
    )
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
        ("add", "add members (--owner: as owners, site admins only)"),
        ("remove", "remove members or owners (anyone may leave)"),
        ("show", "list a team's members and owners"),
        ("list", "list the teams you are in or own (admins: all)"),
    ):
        t = tsub.add_parser(action, help=helptext)
        t.add_argument("--mount", default=".", help="a path on the fedfs mount (default: .)")
        if action != "list":
            t.add_argument("name", help="the team's name")
        if action in ("add", "remove"):
            t.add_argument("users", nargs="+", help="user names")
        if action == "add":
            t.add_argument(
                "--owner", action="store_true", help="add them as owners too (site admins only)"
            )
        if action == "create":
            t.add_argument(
                "--group", help="an NSS/LDAP group that backs the team (you must be in it)"
            )
        if action in ("show", "list"):
            table_flags(t)
        t.set_defaults(func=cmd_team)
