"""Doctor's check of the running mount: if this config is mounted, what its daemon
says about itself over the control socket (uploads failing, identity down, grants
whose object is gone from the store).

Two control requests with a 10 s deadline each; runs in the doctor's only thread.
Calls the control client only.
"""

from __future__ import annotations

from fedfs.config import Config
from fedfs.control.client import ControlClient
from fedfs.errors import FedfsError
from fedfs.ops.doctor.finding import OK, SKIP, WARN, Finding


def check_daemon(cfg: Config) -> list[Finding]:
    """If this config is mounted, what its daemon says about itself."""
    sock = cfg.control.socket
    if not sock.exists():
        return [Finding("daemon", SKIP, f"not mounted (no {sock}); checked the config only")]
    try:
        with ControlClient(sock, timeout=10) as c:
            s = c.call("status")
            orphans = c.call("audit-orphans")
    except (FedfsError, OSError) as e:
        return [
            Finding(
                "daemon",
                WARN,
                f"{sock} exists but does not answer: {e}",
                f"if no fedfs process serves {cfg.path}, remove {sock}; fedfs mount makes a new one",
            )
        ]
    found = [
        Finding(
            "daemon",
            OK,
            f"mounted on {s['mountpoint']} for {s['uptime']:.0f} s; "
            f"{s['uploads']['queued']} uploads queued",
        )
    ]
    if s["uploads"]["failed"]:
        found.append(
            Finding(
                "uploads",
                WARN,
                f"{s['uploads']['failed']} file(s) failing to upload (retried; the data is kept "
                "in the cache)",
                f"fedfs sync {s['mountpoint']} names them and why",
            )
        )
    for u in s.get("unsealed") or []:
        found.append(
            Finding(
                f"sealed metadata {u['bucket']}",
                WARN,
                f"{'at least ' if u.get('at_least') else ''}{u['count']} object(s) seen in {u['bucket']} whose owner and mode fedfs did "
                "not seal (written before [object_acl] was on, or by someone else's keys): "
                "they show as the bucket owner's, private",
                f"`fedfs fsck --config {s['config']} --sign {u['bucket']} --plan FILE` lists "
                "them and what they would be adopted with; read the list, then apply it "
                "with the same command and --yes "
                '(docs/OBJECT_ACL.md, "Who owns an object")',
                tuple(u["examples"]),
            )
        )
    oa = s.get("object_acl")
    if oa and (oa["unmapped"] or oa["errors"]):
        found.append(
            Finding(
                "bucket policies",
                WARN,
                f"{len(oa['unmapped'])} statement(s) of the buckets' own policies or ACLs are "
                f"not mapped to POSIX (they give nothing through the mount), "
                f"{len(oa['errors'])} bucket(s) unreadable",
                "rewrite each statement as an Allow of s3:GetObject (and s3:PutObject, "
                "s3:DeleteObject) on arn:aws:s3:::BUCKET/PREFIX/* for principals that map to "
                "local users (docs/OBJECT_ACL.md, Import); give the daemon's credentials "
                "GetBucketPolicy and GetBucketAcl",
                tuple(f"{u['bucket']}: {u['sid']}: {u['reason']}" for u in oa["unmapped"])
                + tuple(f"{b}: {e}" for b, e in sorted(oa["errors"].items())),
            )
        )
    gone = [o for o in orphans if o["kind"] == "path"]
    if gone:
        found.append(
            Finding(
                "grants",
                WARN,
                f"{len(gone)} grant(s) on paths that no longer exist in the object store: "
                + "; ".join(f"{o['principal']} on {o['path']}" for o in gone[:10])
                + ("; ..." if len(gone) > 10 else ""),
                "; ".join(o["problem"].split("; ", 1)[-1] for o in gone[:10])
                + f"; `fedfs audit orphans --mount {s['mountpoint']}` lists them all",
            )
        )
    if not s["identity"]["ok"]:
        found.append(
            Finding(
                "daemon identity",
                WARN,
                f"the mount's identity source is down: {s['identity']['last_error']}",
                "see the identity check above",
            )
        )
    return found
