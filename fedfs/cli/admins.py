"""Admins' commands for one mount or config: `fedfs status`, `doctor`, `fsck`,
`admin` (node keys), and the command's own `completion` and `version`.

status asks a running mount over its control socket; doctor, fsck and admin
work from a config file with no mount (ops.doctor, ops.fsck, ops.admin and the
daemon's node key, imported when the command runs). Runs in the command's
only thread.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from fedfs import __version__
from fedfs.cli.common import (
    client,
    denied,
    fedfs_mounts,
    locate_mount,
    output,
    printable,
    table_flags,
)
from fedfs.errors import FedfsError


def cmd_status(args: argparse.Namespace) -> int:
    from fedfs.config import format_size

    mounts = fedfs_mounts()
    example = shlex.quote(mounts[0]) if mounts else "MOUNTPOINT"
    _, _, socket = locate_mount(args.path, "status", f"its path (`fedfs status {example}`)")
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
    for e in s.get("object_acl_export") or []:
        state = (
            f"ERROR {e['error']}"
            if e["error"]
            else "not yet synced"
            if e["synced_ago"] is None
            else f"in line {e['synced_ago']:.0f}s ago"
        )
        size = f"; {e['bytes']} of {e['max_bytes']} bytes" if e.get("bytes") is not None else ""
        lines.append(
            f"export     bucket policy of {e['bucket']}: {state}; {e['writes']} writes, "
            f"{e['repairs']} repairs{size}"
        )
        if e.get("not_exported_count"):
            lines.append(
                f"           FULL: {e['not_exported_count']} grant(s) in force through the mount "
                f"are NOT in the bucket policy (all of them would take {e['needed_bytes']} "
                "bytes); remove grants with `fedfs unshare` or raise [object_acl] max_policy_bytes"
            )
        for g in e.get("not_exported") or []:
            lines.append(
                f"           not exported: {printable(g['path'])} {g['principal']} "
                f"{g['level']} (by {printable(g['granted_by'])})"
            )
    if "descriptors" in s:
        fds = s["descriptors"]
        lines.append(f"files      {fds['open']} descriptors open of {fds['limit']}")
    for u in s.get("users", []):  # root sees every user, others their own
        lines.append(
            f"user       {u['user'] or 'uid ' + str(u['uid'])}: {u['open_for_writing']} open for"
            f" writing, {u['queued']} queued ({format_size(u['queued_bytes'])}),"
            f" {u['failing']} failing"
        )
    if up.get("refused"):
        lines.insert(
            5,
            f"refused    {up['refused']} file(s) the object store refuses for good, kept aside "
            f"in {cache['dir']}/lost+found (see `fedfs fsck`)",
        )
        for f in up.get("refused_files", []):
            lines.insert(
                6,
                f"           {printable(f['path'])} (owner {printable(f['owner'])}): "
                f"{printable(f['error'])}; kept in {printable(f['kept_in'])}",
            )
    if pol.get("log"):
        lg = pol["log"]
        lines[-1:-1] = [
            f"policy log {lg['log']} as node {lg['node']}: {lg['enrolment']}",
            f"           {lg['applied']} applied, {lg['published']} published, "
            f"{lg['unpublished']} not yet published, {lg['waiting']} waiting, "
            f"{lg['rejected']} rejected"
            + (f" (last: {lg['last_rejected']})" if lg["last_rejected"] else "")
            + (f"; ERROR {lg['error']}" if lg["error"] else ""),
            f"           {lg.get('marker_reads', 0)} change-marker reads, {lg.get('lists', 0)} "
            "LISTs of the log since start"
            + ("; a watcher node ([object_acl] watcher)" if lg.get("watcher") else ""),
        ]
    lines += _object_acl_lines(s.get("object_acl"))
    lines += unsealed_lines(s.get("unsealed") or [], str(s["config"]))
    print("\n".join(lines))
    return 0


def unsealed_lines(rows: list[dict[str, Any]], config: str) -> list[str]:
    """Buckets with objects whose ownership metadata fedfs did not seal ([object_acl])."""
    lines = []
    for r in rows:
        some = ", ".join(printable(k) for k in r["examples"])
        lines.append(
            f"unsealed   {r['bucket']}: {'at least ' if r.get('at_least') else ''}"
            f"{r['count']} object(s) seen whose owner and mode fedfs "
            "did not seal: shown as the bucket owner's, private"
            + (f" (e.g. {some})" if some else "")
            + f"; review with `fedfs fsck --config {config} --sign {r['bucket']} --plan FILE`, "
            "then adopt what you checked with the same and --yes"
        )
    return lines


def _object_acl_lines(oa: dict[str, Any] | None) -> list[str]:
    """The import of bucket policies and ACLs: polling, read errors, statements not mapped."""
    if not oa:
        return []
    imported = ", ".join(f"{b}: {n}" for b, n in sorted(oa["imported"].items())) or "none"
    polling = (
        f"polled every {oa['poll_interval']:g}s, {oa['polls']} polls, {oa['changes']} changes"
        if oa["watcher"]
        else "not a watcher (observations come from the policy log)"
    )
    lines = [f"object acl {polling}; imported rights and denials per bucket: {imported}"]
    for bucket, error in sorted(oa["errors"].items()):
        lines.append(f"           {bucket}: cannot read its policy or ACL: {printable(error)}")
    for u in oa["unmapped"]:
        lines.append(
            f"           {u['bucket']}: statement {printable(u['sid'])} not mapped: "
            f"{printable(u['reason'])}"
        )
    if oa.get("unmapped_hidden"):
        lines.append(
            f"           {oa['unmapped_hidden']} statement(s) of buckets you do not own are "
            "not mapped (their owners and admins see which)"
        )
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    from fedfs.ops import doctor

    return doctor.report(Path(args.config), as_json=args.json, max_keys=args.max_keys)


def cmd_fsck(args: argparse.Namespace) -> int:
    from fedfs.ops import fsck

    if args.sign is not None:
        return sign_metadata(args)
    both = not (args.journal or args.policy)
    try:
        return fsck.main(
            Path(args.config), journal=both or args.journal, policy=both or args.policy
        )
    except FedfsError as e:  # nothing was repaired: exit status 2, not 1 ("repaired")
        print(f"fedfs: {printable(e)}", file=sys.stderr)
        return fsck.FAILED
    except PermissionError as e:
        print(f"fedfs: {denied(e)}", file=sys.stderr)
        return fsck.FAILED


def sign_metadata(args: argparse.Namespace) -> int:
    """`fedfs fsck --sign BUCKET[/PREFIX] [--plan FILE [--yes]]`: list metadata fedfs would
    ignore, record the list as a plan, or seal exactly what a plan names."""
    from fedfs import config
    from fedfs.ops import adopt

    plan = Path(args.plan) if args.plan else None
    try:
        found = adopt.sign(config.load(args.config), args.sign, plan, args.yes)
    except FedfsError as e:
        print(f"fedfs: {printable(e)}", file=sys.stderr)
        return 2
    if args.yes:
        print(f"fsck: sealed {found.sealed} of {found.planned} reviewed objects")
        if found.skipped:
            print(
                f"fsck: {len(found.skipped)} changed or went away since the review and were "
                f"NOT sealed; review them again: fedfs fsck --config {args.config} "
                f"--sign {args.sign} --plan NEWFILE"
            )
            return 1
    elif found.unsealed:
        then = (
            f"then seal exactly these with: fedfs fsck --config {args.config} --sign "
            f"{args.sign} --plan {args.plan} --yes"
            if plan is not None
            else "then run again with --plan FILE to record this list, and with "
            "--plan FILE --yes to seal exactly it"
        )
        print(
            f"fsck: {found.unsealed} of {found.seen} objects with metadata carry no valid "
            "seal and show as the bucket owner's, 0600/0700. Check the owners and modes "
            f"above (anyone who may write there could have set them), {then}"
        )
    else:
        print(f"fsck: all {found.seen} objects with metadata are sealed")
    return 0


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


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(args.fedfs_parser, shell=args.shell), end="")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"fedfs {__version__}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> None:
    """status, doctor, fsck, admin, completion and version, in --help order.

    root is the whole `fedfs` parser, which `fedfs completion` describes.
    """
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
        "listed); 2: could not repair. With --sign BUCKET[/PREFIX] it does none of this "
        "and instead lists the objects there whose owner, group and mode metadata carry "
        "no valid fedfs seal, which a mount with [object_acl] ignores; --plan FILE records "
        "that list, and --plan FILE --yes seals exactly the objects it names that are "
        "unchanged since (exit status 1 if some were skipped; a mount may run meanwhile).",
    )
    fk.add_argument("--config", "-c", required=True, help="TOML config file")
    fk.add_argument("--journal", action="store_true", help="check only the write-back journal")
    fk.add_argument("--policy", action="store_true", help="check only the policy database")
    fk.add_argument(
        "--sign",
        metavar="BUCKET[/PREFIX]",
        help="instead: list the objects there whose owner, group and mode metadata "
        "carry no valid fedfs seal ([object_acl] ignores it), to adopt them with --yes",
    )
    fk.add_argument(
        "--plan",
        metavar="FILE",
        help="with --sign: write the list reviewed to FILE; with --yes: seal only what FILE "
        "names, each only if unchanged since the review",
    )
    fk.add_argument(
        "--yes",
        action="store_true",
        help="with --sign and --plan FILE: seal the objects the plan names",
    )
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
    co.set_defaults(func=cmd_completion, fedfs_parser=root)

    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=cmd_version)
